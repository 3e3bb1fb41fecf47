"""Creating a payment: validate, commit the intent, send the STK push, record what Daraja said.

The order is what makes a payment impossible to lose or to send twice:

1. validate everything before anything is stored (a 422 names the field and the rule);
2. commit the intent, keyed by the caller's idempotency key: a retried request finds the
   same row and returns it instead of pushing again (the same key with other parameters is
   an :class:`~pesa.ledger.IdempotencyConflictError`, a 409);
3. send the STK push once; the client never re-sends a money-moving request unless it
   provably never left;
4. record the answer: accepted → ``pending`` with the CheckoutRequestID; a refusal →
   ``rejected`` with Daraja's code; no answer (:class:`~pesa.OutcomeUnknownError`) →
   ``unknown``, which the reconciler settles.

If the process dies between 2 and 4 the row stays ``created``; the reconciler's
``recover_stale_created`` turns such rows into ``unknown`` so that they are settled too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from pesa._exceptions import PesaError
from pesa._logging import get_logger, mask_phone
from pesa.client import AsyncDaraja
from pesa.ledger import (
    InvalidTransitionError,
    Ledger,
    OutcomeUnknown,
    Payment,
    PaymentRequest,
    push_failure,
    validate_idempotency_key,
)
from pesa.ledger._requests import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, check_metadata

if TYPE_CHECKING:
    from pesa.gateway._accounts import AccountClients

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "PaymentCreator",
    "PaymentRequest",
    "check_metadata",
    "classify_push_error",
    "validate_idempotency_key",
]

log = get_logger("pesa.gateway")


def classify_push_error(err: Exception) -> tuple[str, str, str] | None:
    """Decide whether an STK push error proves that nothing was processed.

    The rule is the ledger's (:func:`pesa.ledger.push_failure`), shared with the Django app.

    Returns:
        ``("rejected", code, message)`` when Daraja refused the push or the request never
        left; ``None`` when the push may have been processed (the payment becomes
        ``unknown`` and is settled by query).
    """
    outcome = push_failure(err)
    if isinstance(outcome, OutcomeUnknown):
        return None
    return ("rejected", outcome.error_code or "", outcome.error_message)


class PaymentCreator:
    """Runs the create flow of ``POST /v1/payments`` against a ledger and a Daraja client.

    Args:
        ledger: where intents and outcomes are recorded.
        client: the Daraja client that sends the STK push (of the default account).
        callback_url: the CallBackURL Daraja posts the result to.
        clients: one client per named account: a request naming an account is pushed by
            that account's client.

    Example:
        >>> creator = PaymentCreator(ledger, client, callback_url=url)  # doctest: +SKIP
        >>> payment, created = await creator.create(request, idempotency_key="order-42")
    """

    def __init__(
        self,
        ledger: Ledger,
        client: AsyncDaraja,
        *,
        callback_url: str,
        clients: AccountClients | None = None,
    ) -> None:
        self._ledger = ledger
        self._client = client
        self._callback_url = callback_url
        self._clients = clients

    def _client_for(self, account: str | None) -> AsyncDaraja:
        if self._clients is None:
            return self._client
        return self._clients.for_account(account)

    @property
    def callback_url(self) -> str:
        """The CallBackURL sent with every STK push."""
        return self._callback_url

    async def create(
        self, request: PaymentRequest, *, idempotency_key: str | None
    ) -> tuple[Payment, bool]:
        """Create a payment and send its STK push, or return the one with this key.

        Returns:
            ``(payment, created)``: ``created`` is ``False`` for a retry with a known key,
            in which case no second STK push is sent.

        Raises:
            IdempotencyConflictError: the key is known with different parameters.
        """
        payment, created = await self._ledger.create_payment(
            idempotency_key,
            request.phone,
            request.amount,
            request.account_reference,
            request.description,
            request.metadata,
            account=request.account,
        )
        if not created:
            log.info("payment %s: idempotent retry, no new STK push", payment.id)
            return payment, False
        # Shielded: once the push is on its way, a cancelled HTTP request or a shutdown
        # must not prevent us from recording Daraja's answer.
        with anyio.CancelScope(shield=True):
            try:
                payment = await self._push(payment)
            except Exception:
                # The push may have left: whatever failed while recording its answer (the
                # database went away, ...), the caller gets the payment, never an error
                # that invites a new payment. The reconciler settles it.
                log.exception("payment %s: could not record the STK push's answer", payment.id)
                payment = await self._reread(payment)
        return payment, True

    async def _reread(self, payment: Payment) -> Payment:
        try:
            current = await self._ledger.get_payment(payment.id)
        except Exception:
            log.exception("payment %s: could not read it back either", payment.id)
            return payment
        return current if current is not None else payment

    async def _push(self, payment: Payment) -> Payment:
        try:
            return await self._push_and_record(payment)
        except InvalidTransitionError as err:
            # The payment moved on while the push was in flight (the reconciler recovered it
            # and Daraja's answer no longer fits): the ledger's state wins.
            log.info("payment %s: push answer arrived after %s; kept", payment.id, err.status)
            current = await self._ledger.get_payment(payment.id)
            if current is None:  # pragma: no cover - payments are never deleted
                raise
            return current

    async def _push_and_record(self, payment: Payment) -> Payment:
        try:
            response = await self._client_for(payment.account).stk_push(
                payment.phone,
                payment.amount,
                payment.account_reference,
                payment.description,
                callback_url=self._callback_url,
            )
        except Exception as err:
            # Which errors prove that nothing was processed is the ledger's rule; anything
            # else (no answer, a bug, an unparseable 200) is settled by query.
            outcome = push_failure(err)
            if isinstance(outcome, OutcomeUnknown):
                if not isinstance(err, PesaError):
                    log.exception("payment %s: unexpected error around the STK push", payment.id)
                log.warning(
                    "payment %s: STK push outcome unknown (%s), to be settled by query",
                    payment.id,
                    type(err).__name__,
                )
                return await self._ledger.mark_unknown(payment.id, outcome.reason)
            code, message = outcome.error_code or "", outcome.error_message
            log.info("payment %s: STK push rejected [%s] %s", payment.id, code, message)
            return await self._ledger.mark_rejected(payment.id, code, message)
        log.info(
            "payment %s: STK push accepted for %s (%s)",
            payment.id,
            mask_phone(payment.phone),
            response.checkout_request_id,
        )
        return await self._ledger.mark_accepted(
            payment.id, response.checkout_request_id, response.merchant_request_id
        )
