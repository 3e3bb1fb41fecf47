"""The values the ledger returns: immutable snapshots, never live database rows."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from pesa.ledger._states import MismatchPolicy, PaymentStatus, StkResult

__all__ = [
    "CallbackOutcome",
    "CallbackStatus",
    "Delivery",
    "DeliveryRecord",
    "DeliveryStatus",
    "Event",
    "LedgerStats",
    "MismatchPolicy",
    "Page",
    "ParsedStkCallback",
    "Payment",
    "StkCallbackParser",
    "StkQueryOutcome",
    "StkQueryRecord",
    "StoredCallback",
    "row_to_delivery_record",
]

T = TypeVar("T")

CallbackStatus: TypeAlias = Literal[
    "applied", "unverified", "duplicate", "ignored", "unknown_payment", "invalid"
]
DeliveryStatus: TypeAlias = Literal["pending", "delivered", "failed"]
StkQueryOutcome: TypeAlias = Literal[
    "succeeded", "failed", "pending", "error", "rate_limited", "refused"
]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _number(value: Decimal | None) -> int | str | None:
    # Money never becomes a float: whole shillings as int, anything else as an exact string.
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else str(value)


@dataclass(frozen=True, slots=True)
class Payment:
    """An STK payment as stored in the ledger (an immutable snapshot).

    ``amount`` is what was requested, in whole shillings. ``paid_amount`` and ``paid_phone``
    are what Daraja reported on success; when they differ from the request the payment is
    ``flagged`` with a ``flag_reason``.

    ``account`` is the named Daraja account the payment was asked on (``None`` for payments
    made before accounts existed: the default account then).

    ``checkout_request_id_verified`` is ``False`` while the id was learnt from a callback (the
    push's answer was lost) and no STK query by it has confirmed it. ``evidence_callback_id``
    names a stored success callback that could not be cross-checked and waits for Daraja's
    query; ``verify_at`` is when that query is due.
    """

    id: str
    status: PaymentStatus
    phone: str
    amount: int
    account_reference: str
    description: str
    metadata: dict[str, Any] | None
    idempotency_key: str | None
    checkout_request_id: str | None
    merchant_request_id: str | None
    result_code: str | None
    result_desc: str | None
    receipt: str | None
    paid_amount: Decimal | None
    paid_phone: str | None
    transaction_date: datetime | None
    failure_reason: str | None
    flagged: bool
    flag_reason: str | None
    created_at: datetime
    updated_at: datetime
    next_check_at: datetime | None = None
    check_count: int = 0
    version: int = 1
    checkout_request_id_verified: bool = True
    evidence_callback_id: str | None = None
    verify_at: datetime | None = None
    verify_since: datetime | None = None
    account: str | None = None

    @property
    def is_terminal(self) -> bool:
        """``True`` once the payment is succeeded, failed or rejected."""
        return self.status in (
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.REJECTED,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and in webhook events."""
        return {
            "id": self.id,
            "status": str(self.status),
            "account": self.account,
            "phone": self.phone,
            "amount": self.amount,
            "account_reference": self.account_reference,
            "description": self.description,
            "metadata": self.metadata,
            "checkout_request_id": self.checkout_request_id,
            "checkout_request_id_verified": self.checkout_request_id_verified,
            "merchant_request_id": self.merchant_request_id,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "receipt": self.receipt,
            "paid_amount": _number(self.paid_amount),
            "paid_phone": self.paid_phone,
            "transaction_date": _iso(self.transaction_date),
            "failure_reason": self.failure_reason,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "evidence_callback_id": self.evidence_callback_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One outbox event (``payment.succeeded``, ``receipt.received``, ...), written with its
    transition.

    Attributes:
        seq: the integer position in the outbox (unique, increasing per insert).
        id: the stable public id (``evt_...``), the same on every redelivery.
        payment_id: the payment of a payment event (``None`` for other kinds).
        payload: the exact JSON bytes to deliver (and to sign): ``{"id", "type",
            "created_at", "data": {"payment": {...}}}`` (``"receipt"``, ... for other kinds).
        subject_id: the id of what the event is about (``pay_...``, ``rcp_...``, ...).
    """

    seq: int
    id: str
    type: str
    payment_id: str | None
    created_at: datetime
    payload: bytes
    txid: int = 0
    subject_id: str | None = None

    @property
    def cursor(self) -> str:
        """The ``list_events`` cursor that resumes right after this event."""
        return f"{self.txid}:{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON object (the decoded ``payload``)."""
        data: dict[str, Any] = json.loads(self.payload)
        return data


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed webhook delivery: an event for one endpoint, to be sent now."""

    id: str
    endpoint: str
    attempts: int
    event: Event


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A webhook delivery as stored: one event for one endpoint, and how its attempts went.

    Attributes:
        status: ``pending`` (scheduled, or in flight), ``delivered`` or ``failed`` (gave up).
        attempts: attempts made so far (counted when the dispatcher claims it).
        next_attempt_at: when it is due next (pending only).
        last_error: the last failed attempt's error (redacted), if any.
        last_status_code: the receiver's last HTTP status, if it answered.
        event_type: the event's type (when read with its event).
        payment_id: the event's payment (when read with its event).
        subject_id: what the event is about, of any kind (a payment, receipt, payout or
            refund id; when read with its event).
    """

    id: str
    event_id: str
    endpoint: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    last_status_code: int | None
    created_at: datetime
    updated_at: datetime
    event_type: str | None = None
    payment_id: str | None = None
    subject_id: str | None = None


def row_to_delivery_record(row: Any) -> DeliveryRecord:
    """A :class:`DeliveryRecord` from a ``webhook_deliveries`` row (optionally joined with
    ``payment_events.type`` as ``event_type`` and ``payment_id``)."""
    m: Mapping[str, Any] = row._mapping
    return DeliveryRecord(
        id=m["id"],
        event_id=m["event_id"],
        endpoint=m["endpoint"],
        status=m["status"],
        attempts=int(m["attempts"]),
        next_attempt_at=m["next_attempt_at"],
        last_error=m["last_error"],
        last_status_code=m["last_status_code"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        event_type=m.get("event_type"),
        payment_id=m.get("payment_id"),
        subject_id=m.get("subject_id"),
    )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of results.

    ``next_cursor`` is the value to pass back to get the next page. For payments it is
    ``None`` on the last page; for events it is always the position to resume from (poll
    with it later), and ``has_more`` says whether more are available right now.
    """

    items: list[T]
    next_cursor: str | None
    has_more: bool = False


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    """What ingesting a callback (or applying a query result) did.

    Attributes:
        callback_id: the stored raw callback's id (``cb_...``); ``None`` for query results.
        status: ``applied`` (the payment changed), ``unverified`` (a success that could not
            be cross-checked: kept as the payment's evidence, an STK query settles it),
            ``duplicate`` (already applied, nothing done), ``ignored`` (does not fit the
            payment's state; kept for audit), ``unknown_payment`` (no payment has this
            CheckoutRequestID) or ``invalid`` (not a Daraja STK callback, or a success that
            contradicts the request under the ``refuse`` policy). Only ``applied`` changes a
            payment's status.
        payment: the payment after the callback (``None`` if none matched).
        detail: a short explanation for logs and the audit trail.
    """

    callback_id: str | None
    status: CallbackStatus
    payment: Payment | None
    detail: str


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counts for ``/metrics``: payments by status, callbacks by outcome, deliveries."""

    payments: Mapping[str, int]
    callbacks: Mapping[str, int]
    deliveries: Mapping[str, int]
    flagged_payments: int = 0


@dataclass(frozen=True, slots=True)
class ParsedStkCallback:
    """An STK callback reduced to what the ledger needs."""

    checkout_request_id: str
    merchant_request_id: str | None
    result: StkResult
    extra: Mapping[str, Any] = field(default_factory=dict)


StkCallbackParser: TypeAlias = Callable[[bytes], ParsedStkCallback]
"""Parses a raw callback body; raises :class:`pesa.InvalidCallbackError` (or ValueError)."""


@dataclass(frozen=True, slots=True)
class StkQueryRecord:
    """One STK query the reconciler (or ``/refresh``) sent, and what Daraja answered.

    Attributes:
        outcome: ``succeeded`` / ``failed`` (a final result code), ``pending`` (still being
            processed, or a code not known to be final), ``error`` (no usable answer),
            ``rate_limited`` (spike arrest or quota) or ``refused`` (Daraja does not know
            the CheckoutRequestID).
        result_code: Daraja's ``ResultCode`` or error code, when it gave one.
        detail: what was done with the answer, or the error (redacted).
    """

    id: str
    payment_id: str
    checkout_request_id: str
    asked_at: datetime
    outcome: StkQueryOutcome
    result_code: str | None
    result_desc: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and the dashboard."""
        return {
            "id": self.id,
            "payment_id": self.payment_id,
            "checkout_request_id": self.checkout_request_id,
            "asked_at": _iso(self.asked_at),
            "outcome": self.outcome,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class StoredCallback:
    """A raw callback as stored by the ledger, with what was done with it.

    Attributes:
        kind: ``stk`` (other kinds are added by receipts and payouts).
        body: the body exactly as received (up to the gateway's cap).
        outcome: a :data:`CallbackStatus`, or ``error`` when applying it failed.
        detail: why (the cross-check, the flag, the refusal).
    """

    id: str
    kind: str
    body: bytes
    source_ip: str | None
    received_at: datetime
    outcome: str
    detail: str | None
    checkout_request_id: str | None
    payment_id: str | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the REST API and the dashboard (body as text)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "body": self.body.decode("utf-8", errors="replace"),
            "source_ip": self.source_ip,
            "received_at": _iso(self.received_at),
            "outcome": self.outcome,
            "detail": self.detail,
            "checkout_request_id": self.checkout_request_id,
            "payment_id": self.payment_id,
        }
