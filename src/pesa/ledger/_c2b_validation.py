"""C2B validation requests and the merchant's verdicts, as pure values (no I/O).

Daraja asks the merchant whether to accept a C2B payment before it completes (only when
external validation is enabled for the shortcode). The gateway (:mod:`pesa.gateway._c2b`)
and the Django app (:mod:`pesa.django.views`) ask the merchant's rule the same question and
answer Daraja with the same codes (``C2B00011``..``C2B00016``, REFERENCE §7.3): the question,
the verdict and what a rule's answer means live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from pesa._exceptions import ValidationError
from pesa.daraja import C2B_REJECT_CODES, c2b_validation_reply
from pesa.ledger._receipts import Confirmation

__all__ = [
    "INVALID_ACCOUNT",
    "INVALID_SHORTCODE",
    "OTHER_ERROR",
    "C2BValidation",
    "ValidationVerdict",
    "fallback_verdict",
    "verdict_of",
]

OTHER_ERROR: Final = "C2B00016"
INVALID_ACCOUNT: Final = "C2B00012"
INVALID_SHORTCODE: Final = "C2B00015"


@dataclass(frozen=True, slots=True)
class C2BValidation:
    """A C2B payment Daraja asks the merchant to accept or reject (the validation request).

    Attributes:
        account: the configured account the shortcode belongs to (``None``: none).
        account_reference: ``BillRefNumber``, the account number the customer typed.
        msisdn: the payer as Daraja sends it (masked, or a SHA-256 hash in C2B v1).
    """

    account: str | None
    shortcode: str
    trans_id: str
    amount: Decimal
    account_reference: str | None
    msisdn: str | None
    payer_name: str | None
    transaction_type: str | None
    trans_time: datetime | None

    @classmethod
    def of(cls, confirmation: Confirmation, account: str | None) -> C2BValidation:
        """The validation request of a parsed C2B body."""
        return cls(
            account=account,
            shortcode=confirmation.shortcode,
            trans_id=confirmation.trans_id,
            amount=confirmation.amount,
            account_reference=confirmation.account_reference,
            msisdn=confirmation.msisdn,
            payer_name=confirmation.payer_name,
            transaction_type=confirmation.transaction_type,
            trans_time=confirmation.trans_time,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the ``http`` rule POSTs to ``PESA_C2B_VALIDATION_URL``."""
        amount = self.amount
        return {
            "type": "c2b.validation",
            "account": self.account,
            "shortcode": self.shortcode,
            "trans_id": self.trans_id,
            "amount": int(amount) if amount == amount.to_integral_value() else str(amount),
            "account_reference": self.account_reference,
            "msisdn": self.msisdn,
            "payer_name": self.payer_name,
            "transaction_type": self.transaction_type,
            "trans_time": None if self.trans_time is None else self.trans_time.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ValidationVerdict:
    """A merchant's answer to a C2B validation request.

    Example:
        >>> ValidationVerdict.reject("C2B00013", "amount below the invoice").result_code
        'C2B00013'
    """

    accept: bool
    result_code: str = "0"
    third_party_trans_id: str | None = None
    reason: str = ""

    @classmethod
    def accepted(cls, third_party_trans_id: str | None = None) -> ValidationVerdict:
        """Accept; ``third_party_trans_id`` is echoed in the confirmation."""
        return cls(True, "0", third_party_trans_id)

    @classmethod
    def reject(cls, result_code: str = INVALID_ACCOUNT, reason: str = "") -> ValidationVerdict:
        """Reject with one of Daraja's C2B codes (``C2B00011`` to ``C2B00016``).

        Raises:
            ValidationError: not one of those codes.
        """
        if result_code not in C2B_REJECT_CODES:
            raise ValidationError("result_code", "must be one of C2B00011 to C2B00016", result_code)
        return cls(False, result_code, None, reason or C2B_REJECT_CODES[result_code])

    def reply(self) -> dict[str, str]:
        """The body Daraja reads (REFERENCE §7.3)."""
        if self.accept:
            third = (self.third_party_trans_id or "")[:64] or None
            return c2b_validation_reply(third_party_trans_id=third)
        return c2b_validation_reply(self.result_code)  # type: ignore[arg-type]  # checked in reject()


def verdict_of(answer: Any) -> ValidationVerdict:
    """What a merchant's rule answered: a verdict, or ``True``/``False``.

    Raises:
        TypeError: anything else (the caller answers with its fallback).
    """
    if isinstance(answer, ValidationVerdict):
        return answer
    if isinstance(answer, bool):
        return ValidationVerdict.accepted() if answer else ValidationVerdict.reject(OTHER_ERROR)
    raise TypeError(f"a C2B validator returns a ValidationVerdict or a bool, not {answer!r}")


def fallback_verdict(fallback: str, why: str) -> ValidationVerdict:
    """The answer ``PESA_C2B_VALIDATION_FALLBACK`` (``accept`` or ``reject``) gives when the
    merchant's rule does not answer in time, fails, or answers nonsense."""
    if fallback == "accept":
        return ValidationVerdict(True, "0", None, why)
    return ValidationVerdict(False, OTHER_ERROR, None, why)
