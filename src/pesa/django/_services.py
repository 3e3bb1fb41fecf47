"""The service functions of ``pesa.django``: request a payment, ask Daraja now, reconcile."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, Literal

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction

from pesa._exceptions import PesaError, ValidationError
from pesa._logging import get_logger, mask_phone
from pesa.client import Daraja
from pesa.django import conf
from pesa.django._payout_checks import PayoutChecker
from pesa.django._payouts import PayoutStore, spec_of
from pesa.django._receipts import ReceiptStore
from pesa.django._reconcile import Reconciler, ReconcileReport
from pesa.django._store import Store
from pesa.django.models import Payment, Payout
from pesa.ledger import (
    InvalidTransitionError,
    OutcomeUnknown,
    PaymentRequest,
    PayoutRequest,
    TransferNotFoundError,
    classify_send_error,
    push_failure,
    validate_idempotency_key,
)
from pesa.ledger._c2b_validation import (
    INVALID_ACCOUNT,
    OTHER_ERROR,
    C2BValidation,
    ValidationVerdict,
    fallback_verdict,
    verdict_of,
)

__all__ = [
    "OpenTransactionError",
    "arequest_payment",
    "ask_daraja",
    "ask_daraja_about_payout",
    "decide_validation",
    "payout_checker",
    "payout_store",
    "receipt_store",
    "send_payout",
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
    """A reconciler on the site's store, Daraja client and ``PESA_RECONCILE_*`` pacing;
    each round also asks Transaction Status about payouts whose Result is late or lost."""
    return Reconciler(store(), conf.daraja(), conf.pesa_settings(), payouts=payout_checker())


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


# -- receipts (C2B) ------------------------------------------------------------------------


def receipt_store() -> ReceiptStore:
    """The app's receipts, with the site's ``PESA_C2B_VERIFY`` policy."""
    return ReceiptStore(policy=conf.pesa_settings().c2b_verify)


def decide_validation(
    request: C2BValidation,
) -> tuple[ValidationVerdict, Literal["rule", "fallback", "off"]]:
    """The answer to one C2B validation request, as ``PESA_C2B_VALIDATION`` says.

    ``off`` accepts; ``handler`` asks ``PESA_C2B_VALIDATOR``; ``http`` POSTs the request to
    ``PESA_C2B_VALIDATION_URL`` (signed like webhooks when ``PESA_WEBHOOK_SECRET`` is set)
    and reads ``{"accept": bool, "result_code": "C2B000xx"}``. A rule that does not answer
    within ``PESA_C2B_VALIDATION_TIMEOUT``, fails or answers nonsense gets
    ``PESA_C2B_VALIDATION_FALLBACK``. (``expected`` needs the gateway's expected payments,
    which this app does not keep: it answers with the fallback.)
    """
    settings = conf.pesa_settings()
    mode = settings.c2b_validation
    if mode == "off":
        return ValidationVerdict.accepted(), "off"
    if mode == "expected":
        why = "PESA_C2B_VALIDATION=expected needs the gateway's expected payments"
        return fallback_verdict(settings.c2b_validation_fallback, why), "fallback"
    ask: Callable[[], ValidationVerdict]
    if mode == "handler":
        rule = conf.c2b_validator()
        if rule is None:
            why = "PESA_C2B_VALIDATION=handler but no PESA_C2B_VALIDATOR is set"
            log.error("C2B validation of %s: %s", request.trans_id, why)
            return fallback_verdict(settings.c2b_validation_fallback, why), "fallback"

        def ask() -> ValidationVerdict:
            return verdict_of(rule(request))

    else:

        def ask() -> ValidationVerdict:
            return _http_rule(request)

    def run() -> ValidationVerdict:
        try:
            return ask()
        finally:
            # The rule may have used the ORM in this pool thread: no connection left open.
            connections.close_all()

    future = _VALIDATORS.submit(run)
    try:
        return future.result(timeout=settings.c2b_validation_timeout), "rule"
    except concurrent.futures.TimeoutError:
        # The rule keeps its thread; the answer goes without it, within Daraja's budget.
        why = f"the {mode} rule did not answer within {settings.c2b_validation_timeout:g} s"
    except Exception as err:
        why = f"the {mode} rule failed: {type(err).__name__}"
    log.warning(
        "C2B validation of %s: %s (fallback: %s)",
        request.trans_id,
        why,
        settings.c2b_validation_fallback,
    )
    return fallback_verdict(settings.c2b_validation_fallback, why), "fallback"


_VALIDATORS = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="pesa-c2b-validation")


def _http_rule(request: C2BValidation) -> ValidationVerdict:
    import json

    import httpx

    from pesa._webhooks import sign_webhook

    settings = conf.pesa_settings()
    assert settings.c2b_validation_url is not None  # Settings requires it for "http"
    body = json.dumps(request.to_dict(), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if settings.webhook_secret is not None:
        headers["Pesa-Signature"] = sign_webhook(body, [settings.webhook_secret.get_secret_value()])
    response = httpx.post(
        settings.c2b_validation_url,
        content=body,
        headers=headers,
        timeout=settings.c2b_validation_timeout,
    )
    response.raise_for_status()
    data = response.json()
    if not isinstance(data, dict) or not isinstance(data.get("accept"), bool):
        raise ValidationError(
            "accept", "the merchant's answer must be a JSON object with a boolean"
        )
    if data["accept"]:
        third = data.get("third_party_trans_id")
        return ValidationVerdict.accepted(third if isinstance(third, str) else None)
    code = data.get("result_code", INVALID_ACCOUNT)
    return ValidationVerdict.reject(code if isinstance(code, str) else OTHER_ERROR)


# -- payouts (B2C) -------------------------------------------------------------------------


def payout_store() -> PayoutStore:
    """The app's payouts."""
    return PayoutStore()


def send_payout(
    *,
    phone: str | int,
    amount: Any,
    idempotency_key: str | None = None,
    remarks: str = "Payout",
    occasion: str | None = None,
    command: str = "BusinessPayment",
    metadata: dict[str, Any] | None = None,
) -> Payout:
    """Send money to a phone by B2C; return the payout.

    The payout is validated, then committed (``created``, its OriginatorConversationID is
    its own id), then sent once, then Daraja's answer is recorded: ``pending`` (accepted),
    ``rejected`` (refused: nothing was paid) or ``unknown`` (no answer: ``pesa_reconcile``
    asks Transaction Status). The outcome arrives later at the Result view; listen to the
    ``payout_*`` signals (:mod:`pesa.django.signals`).

    Args:
        phone: the recipient, in any Safaricom format.
        amount: whole shillings (``int``, or a ``Decimal``/``str`` without cents).
        idempotency_key: repeat a call with the same key and parameters and you get the
            same payout, with nothing sent again; the same key with other parameters raises.
        remarks: ``Remarks`` (2-100 characters).
        occasion: ``Occasion`` (optional, up to 100 characters).
        command: ``BusinessPayment``, ``SalaryPayment`` or ``PromotionPayment``.
        metadata: free JSON for you, kept on the payout.

    Raises:
        ValidationError: a parameter breaks Daraja's rules (nothing stored, nothing sent).
        IdempotencyConflictError: the key was used with different parameters.
        OpenTransactionError: called inside ``transaction.atomic()`` or ``ATOMIC_REQUESTS``.
        ImproperlyConfigured: the settings cannot send a payout (no shortcode or initiator).
    """
    request = PayoutRequest.validate(
        phone=str(phone),
        amount=amount,
        command=command,
        remarks=remarks,
        occasion=occasion,
        metadata=metadata,
    )
    key = validate_idempotency_key(idempotency_key)
    payouts = payout_store()
    if transaction.get_connection(payouts.db).in_atomic_block:
        raise OpenTransactionError(
            "send_payout() runs inside a database transaction (ATOMIC_REQUESTS or "
            "transaction.atomic()): the payout must be committed before the B2C request is "
            "sent. Decorate the view with @transaction.non_atomic_requests, or call it "
            "outside atomic()"
        )
    client = conf.daraja()
    shortcode = client.shortcode
    if shortcode is None or client.initiator_name is None:
        raise ImproperlyConfigured(
            "send_payout() needs PESA_SHORTCODE, PESA_INITIATOR_NAME and "
            "PESA_INITIATOR_PASSWORD (the B2C shortcode and its API operator)"
        )
    result_url = conf.site_url("b2c-result")
    timeout_url = conf.site_url("b2c-timeout")
    payout, created = payouts.create(spec_of(request, shortcode), key)
    if not created:
        log.info("payout %s: idempotent repeat, nothing sent", payout.id)
        return payout
    try:
        response = client.b2c_payment(
            payout.phone,
            payout.amount,
            payout.remarks,
            originator_conversation_id=payout.originator_conversation_id,
            command_id=payout.command_id,
            occasion=payout.occasion,
            shortcode=payout.shortcode,
            result_url=result_url,
            timeout_url=timeout_url,
        )
    except Exception as err:  # every failure is classified: none may lose the payout
        return _payout_error(payouts, payout, err)
    try:
        if not response.conversation_id:
            return payouts.mark_unknown(
                payout.id, "Daraja accepted the request without a ConversationID"
            )
        log.info(
            "payout %s: accepted for %s (%s)",
            payout.id,
            mask_phone(payout.phone),
            response.conversation_id,
        )
        return payouts.mark_accepted(
            payout.id, response.conversation_id, response.originator_conversation_id
        )
    except InvalidTransitionError:
        return payouts.get(payout.id) or payout


def _payout_error(payouts: PayoutStore, payout: Payout, err: Exception) -> Payout:
    verdict, code, message = classify_send_error(err)
    try:
        if verdict == "duplicate":
            log.warning("payout %s: Daraja holds an earlier send (%s)", payout.id, code)
            return payouts.mark_refused(payout.id, code, message, duplicate=True)
        if verdict in ("refused", "never_left"):
            # Nothing reached Daraja's processing: the only request sent was not carried out.
            log.info("payout %s: refused [%s] %s", payout.id, code, message)
            return payouts.mark_refused(payout.id, code, message)
        if not isinstance(err, PesaError):
            log.exception("payout %s: unexpected error around the B2C request", payout.id)
        log.warning(
            "payout %s: outcome unknown (%s), settled by Transaction Status",
            payout.id,
            type(err).__name__,
        )
        return payouts.mark_unknown(payout.id, message)
    except InvalidTransitionError:
        return payouts.get(payout.id) or payout


def ask_daraja_about_payout(payout: Payout | str) -> Payout:
    """Send a Transaction Status query about a payout now ("ask Daraja now").

    The answer arrives at the status Result view and is applied there; the payout as it
    stands is returned.

    Raises:
        TransferNotFoundError: no such payout.
        PesaError: Daraja did not take the query (the payout is unchanged).
    """
    payout_id = payout if isinstance(payout, str) else payout.id
    current = payout_store().get(payout_id)
    if current is None:
        raise TransferNotFoundError(payout_id)
    return payout_checker().ask(current)


def payout_checker() -> PayoutChecker:
    """The Transaction Status checker of payouts (run by ``pesa_reconcile``)."""
    return PayoutChecker(payout_store(), conf.daraja(), conf.pesa_settings())
