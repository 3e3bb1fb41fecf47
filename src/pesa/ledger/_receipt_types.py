"""The values the ledger returns about C2B receipts: immutable snapshots, never live rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from pesa.ledger._receipts import ExpectedStatus, ReceiptStatus

__all__ = [
    "ExpectedPayment",
    "LookupOutcome",
    "Receipt",
    "ReceiptAccount",
    "ReceiptOutcome",
    "ReceiptOutcomeStatus",
    "ReceiptQuery",
    "ReceiptQueryOutcome",
]

ReceiptOutcomeStatus: TypeAlias = Literal[
    "applied", "duplicate", "flagged", "ignored", "invalid", "unknown_query"
]
ReceiptQueryOutcome: TypeAlias = Literal[
    "sent", "error", "rate_limited", "confirmed", "refuted", "not_found", "failed", "timeout"
]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _number(value: Decimal | None) -> int | str | None:
    # Money never becomes a float: whole shillings as int, anything else as an exact string.
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else str(value)


@dataclass(frozen=True, slots=True)
class ReceiptAccount:
    """What the ledger needs to know of the account a C2B payment went to.

    Attributes:
        name: the account's name (``None``: no configured account has the shortcode).
        verifiable: Transaction Status can be asked for it (the account has an initiator).
    """

    name: str | None
    verifiable: bool


@dataclass(frozen=True, slots=True)
class Receipt:
    """A C2B payment recorded by the ledger (an immutable snapshot).

    ``status`` says how far it is known to be true: ``received`` (a confirmation, awaiting
    Daraja's Transaction Status), ``confirmed`` (Daraja confirmed it, or a lookup found it),
    ``unverified`` (a confirmation Daraja cannot be asked about) or ``refuted`` (Daraja says
    it does not exist, or differs). ``msisdn`` is the payer as Daraja sent it: masked (C2B
    v2) or a SHA-256 hash (v1); ``phone`` is the full number, when a lookup learnt it.
    """

    id: str
    trans_id: str
    status: ReceiptStatus
    source: str
    account: str | None
    shortcode: str
    amount: Decimal
    account_reference: str | None
    transaction_type: str | None
    invoice_number: str | None
    third_party_trans_id: str | None
    msisdn: str | None
    phone: str | None
    payer_name: str | None
    trans_time: datetime | None
    org_account_balance: Decimal | None
    expected_payment_id: str | None
    flagged: bool
    flag_reason: str | None
    created_at: datetime
    updated_at: datetime
    verify_at: datetime | None = None
    verify_since: datetime | None = None
    check_count: int = 0
    version: int = 1

    @property
    def counts(self) -> bool:
        """Whether the receipt counts as money received (confirmed or unverified)."""
        return self.status in (ReceiptStatus.CONFIRMED, ReceiptStatus.UNVERIFIED)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and in webhook events."""
        return {
            "id": self.id,
            "trans_id": self.trans_id,
            "status": str(self.status),
            "verified": self.status is ReceiptStatus.CONFIRMED,
            "source": self.source,
            "account": self.account,
            "shortcode": self.shortcode,
            "amount": _number(self.amount),
            "account_reference": self.account_reference,
            "transaction_type": self.transaction_type,
            "invoice_number": self.invoice_number,
            "third_party_trans_id": self.third_party_trans_id,
            "msisdn": self.msisdn,
            "phone": self.phone,
            "payer_name": self.payer_name,
            "trans_time": _iso(self.trans_time),
            "org_account_balance": _number(self.org_account_balance),
            "expected_payment_id": self.expected_payment_id,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class ExpectedPayment:
    """What a merchant expects for an account number (an invoice, an order), and what its
    receipts add up to.

    ``paid_amount`` is money received (confirmed and unverified receipts); ``pending_amount``
    is money announced by confirmations still awaiting Daraja's confirmation.
    """

    id: str
    status: ExpectedStatus
    account: str
    account_reference: str
    amount: int
    description: str | None
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    paid_amount: Decimal
    pending_amount: Decimal
    flagged: bool
    flag_reason: str | None
    created_at: datetime
    updated_at: datetime
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and in webhook events."""
        outstanding = max(Decimal(self.amount) - self.paid_amount, Decimal(0))
        overpaid = max(self.paid_amount - Decimal(self.amount), Decimal(0))
        return {
            "id": self.id,
            "status": str(self.status),
            "account": self.account,
            "account_reference": self.account_reference,
            "amount": self.amount,
            "paid_amount": _number(self.paid_amount),
            "pending_amount": _number(self.pending_amount),
            "outstanding_amount": _number(outstanding),
            "overpaid_amount": _number(overpaid),
            "description": self.description,
            "metadata": self.metadata,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class ReceiptQuery:
    """One Transaction Status query about a receipt, and what Daraja answered.

    Attributes:
        purpose: ``verify`` (a confirmation is checked) or ``lookup`` (someone gave a
            receipt number: ``POST /v1/receipts/lookup``).
        outcome: ``sent`` (acknowledged; the answer comes by callback), ``error`` /
            ``rate_limited`` (not acknowledged), ``confirmed``, ``refuted`` (Daraja's answer
            contradicts the confirmation), ``not_found`` (no such receipt), ``failed``
            (Daraja could not answer: initiator locked, ...) or ``timeout`` (queue timeout).
    """

    id: str
    purpose: str
    trans_id: str
    account: str
    shortcode: str
    receipt_id: str | None
    account_reference: str | None
    outcome: ReceiptQueryOutcome
    conversation_id: str | None
    originator_conversation_id: str | None
    result_code: str | None
    result_desc: str | None
    detail: str | None
    asked_at: datetime
    answered_at: datetime | None

    @property
    def answered(self) -> bool:
        """Whether Daraja's answer (or an error in place of one) is recorded."""
        return self.outcome != "sent"

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API (never the ResultURL's secret)."""
        return {
            "id": self.id,
            "purpose": self.purpose,
            "trans_id": self.trans_id,
            "account": self.account,
            "shortcode": self.shortcode,
            "receipt_id": self.receipt_id,
            "account_reference": self.account_reference,
            "outcome": self.outcome,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "detail": self.detail,
            "asked_at": _iso(self.asked_at),
            "answered_at": _iso(self.answered_at),
        }


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What ingesting a C2B confirmation or a Transaction Status result did.

    Attributes:
        callback_id: the stored raw callback (``cb_...``).
        status: ``applied`` (a receipt was recorded or changed), ``duplicate`` (already
            recorded, nothing done), ``flagged`` (a repeat that disagrees: flagged, not
            applied), ``ignored`` (fits nothing: an answer to a query already answered),
            ``invalid`` (not Daraja's shape) or ``unknown_query`` (a result for no query).
        receipt: the receipt after it, if any.
        expected_payment: the expected payment it settles, if any.
        detail: a short explanation.
    """

    callback_id: str | None
    status: ReceiptOutcomeStatus
    receipt: Receipt | None
    expected_payment: ExpectedPayment | None
    detail: str


@dataclass(frozen=True, slots=True)
class LookupOutcome:
    """What ``POST /v1/receipts/lookup`` started: the query, or the receipt already known."""

    query: ReceiptQuery | None
    receipt: Receipt | None
