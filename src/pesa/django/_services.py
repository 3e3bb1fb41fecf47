"""The service functions of ``pesa.django``: request a payment, ask Daraja now, reconcile."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction

from pesa._exceptions import PesaError
from pesa._logging import get_logger, mask_phone
from pesa.client import Daraja
from pesa.django import conf
from pesa.django._reconcile import Reconciler, ReconcileReport
from pesa.django._store import Store
from pesa.django.models import Payment
from pesa.ledger import (
    InvalidTransitionError,
    OutcomeUnknown,
    PaymentRequest,
    push_failure,
    validate_idempotency_key,
)

__all__ = [
    "OpenTransactionError",
    "arequest_payment",
    "ask_daraja",
    "reconcile",
    "reconciler",
    "request_payment",
    "resolve_flag",
    "store",
]

log = get_logger("pesa.django")

DEFAULT_DESCRIPTION = "Payment"


class OpenTransactionError(PesaError):
    """``request_payment`` was called inside a database transaction.

    The payment intent must be committed before the STK push leaves: otherwise a rollback
    after the push (or a crash before the commit) would lose a payment the customer may
    make. ``ATOMIC_REQUESTS`` and ``transaction.atomic()`` both defer the commit.
    """


def store() -> Store:
    """The app's ledger storage, with the site's mismatch policy."""
    return Store(on_mismatch=conf.pesa_settings().callback_on_mismatch)


def reconciler() -> Reconciler:
    """A reconciler on the site's store, Daraja client and ``PESA_RECONCILE_*`` pacing."""
    return Reconciler(store(), conf.daraja(), conf.pesa_settings())


def request_payment(
    *,
    phone: str | int,
    amount: Any,
    account_reference: str,
    description: str = DEFAULT_DESCRIPTION,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Payment:
    """Ask the customer to pay by M-Pesa Express (STK push); return the payment.

    The intent is validated, then committed (``created``), then the push is sent once with
    the sync :class:`pesa.Daraja` client, then Daraja's answer is recorded: ``pending``
    (the prompt is on the phone), ``rejected`` (Daraja refused: nothing happened) or
    ``unknown`` (no answer: ``pesa_reconcile`` settles it). The outcome arrives later at the
    callback view (or by ``pesa_reconcile``); listen to :mod:`pesa.django.signals`.

    Example:
        >>> payment = request_payment(phone="0708374149", amount=10,  # doctest: +SKIP
        ...                           account_reference="ORDER42", idempotency_key="order-42")
        >>> payment.status                                              # doctest: +SKIP
        'pending'

    Args:
        phone: the customer's Safaricom number, in any usual format.
        amount: whole shillings (``int`` or a whole ``Decimal``; never a float).
        account_reference: shown to the customer (1-12 characters).
        description: ``TransactionDesc`` (1-13 characters).
        idempotency_key: repeat a request with the same key and parameters and you get the
            same payment, with no second push; the same key with other parameters raises.
        metadata: free JSON for you (an order id...), kept on the payment.

    Raises:
        ValidationError: a parameter breaks Daraja's rules (nothing stored, nothing sent).
        IdempotencyConflictError: the key was used with different parameters.
        OpenTransactionError: called inside ``transaction.atomic()`` or with
            ``ATOMIC_REQUESTS`` (decorate the view with ``@transaction.non_atomic_requests``).
        ImproperlyConfigured: the settings cannot send a push (see ``manage.py check``).
    """
    request = PaymentRequest.validate(
        phone=str(phone),
        amount=amount,
        account_reference=account_reference,
        description=description,
        metadata=metadata,
    )
    key = validate_idempotency_key(idempotency_key)
    ledger = store()
    if transaction.get_connection(ledger.db).in_atomic_block:
        raise OpenTransactionError(
            "request_payment() runs inside a database transaction (ATOMIC_REQUESTS or "
            "transaction.atomic()): the payment must be committed before the STK push is "
            "sent. Decorate the view with @transaction.non_atomic_requests, or call it "
            "outside atomic()"
        )
    callback_url = conf.callback_url()
    client = conf.daraja()
    payment, created = ledger.create_intent(request, key)
    if not created:
        log.info("payment %s: idempotent repeat, no new STK push", payment.id)
        return payment
    try:
        return _push_and_record(ledger, client, payment, callback_url)
    except Exception:
        # The push may have left: the payment exists either way, and pesa_reconcile settles
        # what could not be recorded (a stuck "created" becomes "unknown", then is queried).
        log.exception("payment %s: could not record the STK push's answer", payment.id)
        return ledger.get(payment.id) or payment


def _push_and_record(ledger: Store, client: Daraja, payment: Payment, callback_url: str) -> Payment:
    try:
        response = client.stk_push(
            payment.phone,
            payment.amount,
            payment.account_reference,
            payment.description,
            callback_url=callback_url,
        )
    except Exception as err:
        outcome = push_failure(err)
        try:
            if isinstance(outcome, OutcomeUnknown):
                if not isinstance(err, PesaError):
                    log.exception("payment %s: unexpected error around the STK push", payment.id)
                log.warning(
                    "payment %s: STK push outcome unknown (%s), to be settled by query",
                    payment.id,
                    type(err).__name__,
                )
                return ledger.mark_unknown(payment.id, outcome)
            log.info(
                "payment %s: STK push rejected [%s] %s",
                payment.id,
                outcome.error_code,
                outcome.error_message,
            )
            return ledger.mark_rejected(payment.id, outcome)
        except InvalidTransitionError:
            return ledger.get(payment.id) or payment
    log.info(
        "payment %s: STK push accepted for %s (%s)",
        payment.id,
        mask_phone(payment.phone),
        response.checkout_request_id,
    )
    try:
        return ledger.mark_accepted(
            payment.id, response.checkout_request_id, response.merchant_request_id
        )
    except InvalidTransitionError as err:
        # The payment moved on while the push was in flight (recovered as unknown and
        # settled): the ledger's state wins.
        log.info("payment %s: push answer arrived after %s; kept", payment.id, err.status)
        return ledger.get(payment.id) or payment


async def arequest_payment(
    *,
    phone: str | int,
    amount: Any,
    account_reference: str,
    description: str = DEFAULT_DESCRIPTION,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Payment:
    """:func:`request_payment` for async views (runs it in a worker thread).

    The ORM is synchronous, so the whole create / push / record sequence runs in the
    request's sync thread (``sync_to_async``, thread-sensitive as Django runs sync code under
    ASGI: its database connection is managed with the request's), never on the event loop.
    """
    return await sync_to_async(request_payment)(
        phone=phone,
        amount=amount,
        account_reference=account_reference,
        description=description,
        idempotency_key=idempotency_key,
        metadata=metadata,
    )


def ask_daraja(payment: Payment | str) -> Payment:
    """Query Daraja about a payment now and apply a final answer ("ask Daraja now").

    Raises:
        PaymentNotFoundError: no such payment.
        PesaError: Daraja gave no usable answer (the payment is unchanged).
    """
    from pesa.ledger import PaymentNotFoundError

    ledger = store()
    current = ledger.get(payment if isinstance(payment, str) else payment.id)
    if current is None:
        raise PaymentNotFoundError(payment if isinstance(payment, str) else payment.id)
    return reconciler().settle(current)


def resolve_flag(payment: Payment | str, *, by: str, note: str) -> Payment:
    """Clear a payment's flag once a person has looked at it (``payment_flag_resolved``).

    Args:
        payment: the payment or its id.
        by: who resolved it.
        note: what they found or did (required: the record must say why).

    Raises:
        ValidationError: no note, or no name.
        InvalidTransitionError: the payment is not flagged.
    """
    from pesa._exceptions import ValidationError

    if not note.strip():
        raise ValidationError("note", "must say what was found or done")
    if not by.strip():
        raise ValidationError("by", "must name who resolved the flag")
    return store().resolve_flag(
        payment if isinstance(payment, str) else payment.id, by=by.strip(), note=note.strip()
    )


def reconcile() -> ReconcileReport:
    """Run one reconciliation round (what ``manage.py pesa_reconcile`` does once)."""
    return reconciler().run_once()
