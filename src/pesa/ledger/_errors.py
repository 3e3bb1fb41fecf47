"""Errors specific to the ledger (all subclass :class:`pesa.PesaError`)."""

from __future__ import annotations

from pesa._exceptions import PesaError

__all__ = [
    "DeliveryNotFoundError",
    "ExpectedPaymentNotFoundError",
    "IdempotencyConflictError",
    "InvalidTransitionError",
    "LedgerConflictError",
    "LedgerError",
    "PaymentNotFoundError",
    "ReceiptNotFoundError",
    "RefundNotAllowedError",
    "TransferNotFoundError",
]


class LedgerError(PesaError):
    """The root of the ledger's own errors."""


class IdempotencyConflictError(LedgerError):
    """An idempotency key was reused with different parameters (an HTTP 409 for the API).

    Attributes:
        idempotency_key: the reused key.
        payment_id: the payment the key already belongs to.
    """

    def __init__(self, idempotency_key: str, payment_id: str) -> None:
        self.idempotency_key = idempotency_key
        self.payment_id = payment_id
        super().__init__(
            f"idempotency key {idempotency_key!r} was already used for payment {payment_id} "
            "with different parameters"
        )


class PaymentNotFoundError(LedgerError, LookupError):
    """No payment has the given id (or CheckoutRequestID)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no payment {key!r}")


class ReceiptNotFoundError(LedgerError, LookupError):
    """No receipt has the given id."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no receipt {key!r}")


class ExpectedPaymentNotFoundError(LedgerError, LookupError):
    """No expected payment has the given id."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no expected payment {key!r}")


class InvalidTransitionError(LedgerError):
    """An input does not fit the payment's current state (e.g. accepting a failed payment).

    Attributes:
        payment_id: the payment.
        status: its current status.
        detail: why the input was refused.
    """

    def __init__(self, payment_id: str, status: str, detail: str) -> None:
        self.payment_id = payment_id
        self.status = status
        self.detail = detail
        super().__init__(f"payment {payment_id} is {status}: {detail}")


class DeliveryNotFoundError(LedgerError, LookupError):
    """No webhook delivery has the given id."""

    def __init__(self, delivery_id: str) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"no webhook delivery {delivery_id!r}")


class LedgerConflictError(LedgerError):
    """A write kept losing races with concurrent writers (retried, then given up).

    Nothing was written; the caller may retry later.
    """


class TransferNotFoundError(LedgerError, LookupError):
    """No payout or refund has the given id."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no payout or refund {key!r}")


class RefundNotAllowedError(LedgerError):
    """A refund cannot be made (nothing paid, no receipt, more than remains, partial refused).

    Attributes:
        rule: the rule the request broke, in words.
        remaining: what may still be refunded, in shillings.
    """

    def __init__(self, rule: str, remaining: int = 0) -> None:
        self.rule = rule
        self.remaining = remaining
        super().__init__(rule)
