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

import json
import math
from dataclasses import dataclass
from typing import Any, Final

import anyio

from pesa._constants import DEFAULT_STK_MAX_AMOUNT, DEFAULT_STK_MIN_AMOUNT
from pesa._exceptions import (
    ConfigurationError,
    DarajaError,
    OutcomeUnknownError,
    TransportError,
    ValidationError,
)
from pesa._logging import get_logger, mask_phone
from pesa.client import AsyncDaraja
from pesa.daraja import (
    check_storable_text,
    normalize_msisdn,
    proves_not_processed,
    validate_account_reference,
    validate_amount,
    validate_transaction_desc,
)
from pesa.ledger import InvalidTransitionError, Ledger, Payment

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

_MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_BYTES: Final = 16_384
"""The largest ``metadata`` accepted, in bytes of compact UTF-8 JSON."""
MAX_METADATA_DEPTH: Final = 16
"""How deep ``metadata`` may nest objects and arrays (the object itself is level 1)."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A validated request to collect ``amount`` shillings from ``phone`` by STK push."""

    phone: str
    amount: int
    account_reference: str
    description: str
    metadata: dict[str, Any] | None = None

    @classmethod
    def validate(
        cls,
        *,
        phone: str,
        amount: Any,
        account_reference: str,
        description: str,
        metadata: dict[str, Any] | None = None,
        min_amount: int = DEFAULT_STK_MIN_AMOUNT,
        max_amount: int = DEFAULT_STK_MAX_AMOUNT,
    ) -> PaymentRequest:
        """Check every field with Daraja's rules before anything is stored or sent.

        Raises:
            ValidationError: naming the field and the rule it broke.
        """
        checked_amount = validate_amount(
            amount, field="amount", minimum=min_amount, maximum=max_amount
        )
        if metadata is not None:
            check_metadata(metadata)
        return cls(
            phone=normalize_msisdn(phone, field="phone"),
            amount=checked_amount,
            account_reference=validate_account_reference(account_reference),
            description=validate_transaction_desc(description, field="description"),
            metadata=metadata,
        )


def check_metadata(metadata: Any) -> None:
    """Metadata is stored, hashed, returned and sent in webhooks: check it can be, first."""
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", "must be a JSON object")
    _check_json_value(metadata, "metadata", 1)
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata", f"must be at most {MAX_METADATA_BYTES} bytes of JSON", f"{size} bytes"
        )


def _check_json_value(value: Any, where: str, depth: int) -> None:
    # Iterative in spirit, recursive in code: the depth bound keeps the recursion shallow.
    if isinstance(value, dict | list) and depth > MAX_METADATA_DEPTH:
        raise ValidationError(
            "metadata", f"must be nested at most {MAX_METADATA_DEPTH} levels deep", where
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    "metadata", "object keys must be strings", f"{where}: {type(key).__name__}"
                )
            check_storable_text(key, field=f"{where} key")
            _check_json_value(item, f"{where}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, str):
        check_storable_text(value, field=where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(where, "must be a finite number (not NaN or Infinity)")
    elif value is not None and not isinstance(value, bool | int):
        raise ValidationError(
            where, "must be JSON: an object, array, string, number, true, false or null"
        )


def validate_idempotency_key(key: str | None) -> str | None:
    """Accept a printable key of at most 255 characters (or no key at all)."""
    if key is None:
        return None
    key = key.strip()
    if not key:
        raise ValidationError("Idempotency-Key", "must not be empty when present")
    if len(key) > _MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(
            "Idempotency-Key", f"must be at most {_MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key


def classify_push_error(err: Exception) -> tuple[str, str, str] | None:
    """Decide whether an STK push error proves that nothing was processed.

    Returns:
        ``("rejected", code, message)`` when Daraja refused the push or the request never
        left; ``None`` when the push may have been processed (the payment becomes
        ``unknown`` and is settled by query).
    """
    if isinstance(err, OutcomeUnknownError):
        return None
    if isinstance(err, TransportError):
        # The client raises this for a money-moving call only when the request provably
        # never left (connection refused, pool timeout): nothing reached Daraja.
        return ("rejected", "connection_error", f"Daraja could not be reached: {err}")
    if isinstance(err, DarajaError) and proves_not_processed(err):
        # Which Daraja answers prove a refusal is wire knowledge: pesa.daraja decides.
        return ("rejected", err.error_code or f"HTTP {err.status_code}", err.error_message)
    return None


class PaymentCreator:
    """Runs the create flow of ``POST /v1/payments`` against a ledger and a Daraja client.

    Args:
        ledger: where intents and outcomes are recorded.
        client: the Daraja client that sends the STK push.
        callback_url: the CallBackURL Daraja posts the result to.

    Example:
        >>> creator = PaymentCreator(ledger, client, callback_url=url)  # doctest: +SKIP
        >>> payment, created = await creator.create(request, idempotency_key="order-42")
    """

    def __init__(self, ledger: Ledger, client: AsyncDaraja, *, callback_url: str) -> None:
        self._ledger = ledger
        self._client = client
        self._callback_url = callback_url

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
            response = await self._client.stk_push(
                payment.phone,
                payment.amount,
                payment.account_reference,
                payment.description,
                callback_url=self._callback_url,
            )
        except (ValidationError, ConfigurationError) as err:
            # Raised before anything is sent (a client-side rule, a missing credential):
            # the push provably never left.
            code = "validation_error" if isinstance(err, ValidationError) else "configuration_error"
            log.warning("payment %s: STK push not sent: %s", payment.id, err)
            return await self._ledger.mark_rejected(payment.id, code, str(err))
        except (DarajaError, TransportError, OutcomeUnknownError) as err:
            verdict = classify_push_error(err)
            if verdict is None:
                log.warning(
                    "payment %s: STK push outcome unknown (%s), to be settled by query",
                    payment.id,
                    type(err).__name__,
                )
                return await self._ledger.mark_unknown(payment.id, str(err))
            _, code, message = verdict
            log.info("payment %s: STK push rejected [%s] %s", payment.id, code, message)
            return await self._ledger.mark_rejected(payment.id, code, message)
        except Exception as err:
            # A bug or an unparseable 200: the push may have been processed, so the payment
            # is settled by query rather than left looking unsent.
            log.exception("payment %s: unexpected error around the STK push", payment.id)
            return await self._ledger.mark_unknown(payment.id, f"{type(err).__name__}: {err}")
        log.info(
            "payment %s: STK push accepted for %s (%s)",
            payment.id,
            mask_phone(payment.phone),
            response.checkout_request_id,
        )
        return await self._ledger.mark_accepted(
            payment.id, response.checkout_request_id, response.merchant_request_id
        )
