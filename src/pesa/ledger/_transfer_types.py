"""What the ledger returns for payouts, refunds, status queries and balances (snapshots)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, TypeAlias

from pesa.ledger._payout_states import TransferStatus

__all__ = [
    "BalanceRead",
    "BatchSummary",
    "Payout",
    "PayoutSpec",
    "Refund",
    "RefundRoom",
    "StatusQuery",
    "Transfer",
    "TransferOutcome",
    "payout_hash",
]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _number(value: Decimal | None) -> int | str | None:
    # Money never becomes a float: whole shillings as int, anything else as an exact string.
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else str(value)


@dataclass(frozen=True, slots=True)
class PayoutSpec:
    """One payout to create (a row of a batch), already validated by the caller."""

    phone: str
    amount: int
    command_id: str
    remarks: str
    occasion: str | None = None
    account: str = "default"
    shortcode: str = ""
    metadata: dict[str, Any] | None = None


def payout_hash(spec: PayoutSpec) -> str:
    """What "the same payout" means for an idempotency key: a digest of what is paid."""
    parts = [
        spec.phone,
        spec.amount,
        spec.command_id,
        spec.remarks,
        spec.occasion,
        spec.account,
        spec.metadata,
    ]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """What a payout and a refund share (an immutable snapshot of the row).

    ``attempts`` counts the requests sent (counted, and committed, before each send);
    ``first_sent_at`` is when the first was counted (``None`` while none was), from which
    ``PESA_PAYOUT_DEADLINE`` counts.
    ``ids_verified`` is ``False`` while the ConversationID was learnt from a Result rather
    than from Daraja's answer. ``evidence_callback_id`` names a stored Result awaiting
    Transaction Status; ``expired_at`` is set once the deadline passed without a final
    answer (the transfer is then flagged and no longer checked automatically).
    """

    id: str
    status: TransferStatus
    amount: int
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    originator_conversation_id: str | None
    conversation_id: str | None
    ids_verified: bool
    result_code: str | None
    result_desc: str | None
    receipt: str | None
    paid_amount: Decimal | None
    counterparty: str | None
    completed_at: datetime | None
    failure_reason: str | None
    flagged: bool
    flag_reason: str | None
    attempts: int
    first_sent_at: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime
    send_at: datetime | None
    next_check_at: datetime | None
    claimed_until: datetime | None
    check_count: int
    evidence_callback_id: str | None
    verify_at: datetime | None
    verify_since: datetime | None
    expired_at: datetime | None

    @property
    def is_terminal(self) -> bool:
        """``True`` once succeeded, failed or rejected."""
        return self.status in (
            TransferStatus.SUCCEEDED,
            TransferStatus.FAILED,
            TransferStatus.REJECTED,
        )

    def _common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": str(self.status),
            "amount": self.amount,
            "metadata": self.metadata,
            "originator_conversation_id": self.originator_conversation_id,
            "conversation_id": self.conversation_id,
            "conversation_id_verified": self.ids_verified,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "receipt": self.receipt,
            "paid_amount": _number(self.paid_amount),
            "completed_at": _iso(self.completed_at),
            "failure_reason": self.failure_reason,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "attempts": self.attempts,
            "first_sent_at": _iso(self.first_sent_at),
            "evidence_callback_id": self.evidence_callback_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Payout(Transfer):
    """A B2C payout (``POST /mpesa/b2c/v3/paymentrequest``) as the ledger records it.

    Its ``originator_conversation_id`` is its own id: stable, so a re-send is a duplicate
    to Daraja. ``counterparty`` is the recipient's registered name as Daraja reported it
    (``ReceiverPartyPublicName``, e.g. ``"254708374149 - JOHN DOE"``).
    """

    phone: str
    command_id: str
    remarks: str
    occasion: str | None
    account: str
    shortcode: str
    batch_id: str | None
    batch_row: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and in webhook events."""
        data = self._common()
        data.update(
            phone=self.phone,
            command_id=self.command_id,
            remarks=self.remarks,
            occasion=self.occasion,
            account=self.account,
            shortcode=self.shortcode,
            recipient_name=self.counterparty,
            batch_id=self.batch_id,
            batch_row=self.batch_row,
        )
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund(Transfer):
    """A reversal of a payment's M-Pesa receipt (``POST /mpesa/reversal/v1/request``).

    ``source_id`` is the payment (``pay_...``) or receipt refunded; ``original_receipt`` its
    M-Pesa receipt (the reversal's ``TransactionID``); ``receipt`` the reversal's own.
    """

    source_id: str
    original_receipt: str
    receiver_party: str
    phone: str | None
    remarks: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and in webhook events."""
        data = self._common()
        data.update(
            source_id=self.source_id,
            payment_id=self.source_id if self.source_id.startswith("pay_") else None,
            original_receipt=self.original_receipt,
            receiver_party=self.receiver_party,
            phone=self.phone,
            remarks=self.remarks,
            counterparty=self.counterparty,
        )
        return data


@dataclass(frozen=True, slots=True)
class RefundRoom:
    """What may still be refunded of a payment or a receipt (:meth:`RefundBook.room`).

    Attributes:
        paid: shillings paid (0 when it cannot be refunded at all).
        held: shillings its refunds hold (all but failed and rejected ones).
        remaining: what a new refund may give back.
        refusal: why no refund is possible (not succeeded, no receipt, refunded in full).
    """

    paid: int
    held: int
    remaining: int
    refusal: str | None = None


OutcomeStatus: TypeAlias = Literal[
    "applied", "unverified", "duplicate", "ignored", "unknown_payment", "invalid"
]


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """What storing and applying a Result (or a queue timeout) did.

    ``status`` reads as for STK callbacks: ``applied``, ``unverified`` (kept as evidence,
    Transaction Status settles it), ``duplicate``, ``ignored``, ``unknown_payment`` (no
    payout or refund has its ids) or ``invalid``.
    """

    callback_id: str | None
    status: OutcomeStatus
    subject: Payout | Refund | None
    detail: str


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """One Transaction Status query sent about a payout or refund, and its answer.

    ``outcome``: ``sent`` (its Result has not come), ``answered``, ``timed_out`` (a
    QueueTimeOutURL call), ``error`` (Daraja refused it) or ``rate_limited``.
    """

    id: str
    subject_id: str
    by_originator_id: str | None
    by_receipt: str | None
    conversation_id: str | None
    originator_conversation_id: str | None
    asked_at: datetime
    outcome: str
    result_code: str | None
    result_desc: str | None
    detail: str | None
    answered_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API."""
        return {
            "id": self.id,
            "subject_id": self.subject_id,
            "by_originator_id": self.by_originator_id,
            "by_receipt": self.by_receipt,
            "asked_at": _iso(self.asked_at),
            "outcome": self.outcome,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "detail": self.detail,
            "answered_at": _iso(self.answered_at),
        }


@dataclass(frozen=True, slots=True)
class BalanceRead:
    """One Account Balance request and what its Result reported.

    ``status``: ``sent`` (no Result yet), ``succeeded`` or ``failed``. ``accounts`` are the
    parsed accounts (``name``, ``currency``, ``available``, ``uncleared``, ``reserved`` as
    exact decimal strings); ``read_at`` is when M-Pesa read them (``BOCompletedTime``, else
    when the Result arrived).
    """

    id: str
    account: str
    shortcode: str
    asked_at: datetime
    status: str
    result_code: str | None = None
    result_desc: str | None = None
    accounts: list[dict[str, Any]] = field(default_factory=list)
    read_at: datetime | None = None
    answered_at: datetime | None = None
    conversation_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API."""
        return {
            "id": self.id,
            "account": self.account,
            "shortcode": self.shortcode,
            "status": self.status,
            "asked_at": _iso(self.asked_at),
            "read_at": _iso(self.read_at),
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "accounts": self.accounts,
        }


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A batch of payouts: its rows' count by status (and amount by status)."""

    batch_id: str
    total: int
    by_status: Mapping[str, int]
    amount_by_status: Mapping[str, int]
    created_at: datetime | None

    @property
    def settled(self) -> int:
        """Rows that are final (succeeded, failed or rejected)."""
        return sum(self.by_status.get(s, 0) for s in ("succeeded", "failed", "rejected"))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API."""
        return {
            "batch_id": self.batch_id,
            "total": self.total,
            "settled": self.settled,
            "by_status": dict(self.by_status),
            "amount_by_status": dict(self.amount_by_status),
            "created_at": _iso(self.created_at),
        }
