"""The payment state machine of DESIGN.md, as pure code: no I/O, no clock, no database.

Storage (:mod:`pesa.ledger._ledger`) reads the current state of a payment, asks
:func:`decide` what an input does to it, and writes the answer in one transaction guarded
by the state it read. Keeping the rules here means the gateway, the reconciler and any
other driver (a Django integration) apply exactly the same lifecycle::

    created ──accepted──> pending ──result 0──> succeeded
       │                    │  └──result ≠ 0──> failed
       │                    └──still pending──> pending
       ├──rejected──> rejected
       └──outcome unknown──> unknown ──result / accepted / expired──> ...
    failed ──late success with a receipt──> succeeded (+ payment.corrected)

A flag (a disagreement for a person to look at) is cleared only by a person:
:class:`FlagResolved` (who, and a note) clears it in any status and writes
``payment.flag_resolved``; the status never changes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "Accepted",
    "CodeInfo",
    "Decision",
    "DecisionKind",
    "EventType",
    "Expired",
    "FlagResolved",
    "LedgerInput",
    "OutcomeUnknown",
    "PaymentState",
    "PaymentStatus",
    "Rejected",
    "StillPending",
    "StkResult",
    "TERMINAL_STATUSES",
    "UNVERIFIED_EXPIRY",
    "CodeLookup",
    "decide",
    "mismatch_reasons",
    "phones_match",
]


class PaymentStatus(StrEnum):
    """Where a payment is in its lifecycle."""

    CREATED = "created"
    """The intent is committed; the STK push may or may not have been sent yet."""
    PENDING = "pending"
    """Daraja accepted the push (we hold its CheckoutRequestID); the customer has not answered."""
    SUCCEEDED = "succeeded"
    """The customer paid (result code 0)."""
    FAILED = "failed"
    """The payment ended without money moving (a non-zero result code, or expired)."""
    REJECTED = "rejected"
    """Daraja refused the push synchronously (an HTTP error with its own code)."""
    UNKNOWN = "unknown"
    """The push may have reached Daraja but no answer came back: to be settled by query."""


TERMINAL_STATUSES: frozenset[PaymentStatus] = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REJECTED}
)


class EventType(StrEnum):
    """The events a transition writes (the outbox for webhooks and handlers)."""

    PENDING = "payment.pending"
    REJECTED = "payment.rejected"
    UNKNOWN = "payment.unknown"
    SUCCEEDED = "payment.succeeded"
    FAILED = "payment.failed"
    CORRECTED = "payment.corrected"
    FLAGGED = "payment.flagged"
    FLAG_RESOLVED = "payment.flag_resolved"


class DecisionKind(StrEnum):
    """What :func:`decide` concluded about an input."""

    APPLIED = "applied"
    """The payment changes (status and/or flag); write ``changes`` and ``events``."""
    NOOP = "noop"
    """Nothing to record (a still-pending answer on a pending payment)."""
    DUPLICATE = "duplicate"
    """The input repeats one already applied; it must not be applied twice."""
    IGNORED = "ignored"
    """The input does not fit the payment's state (e.g. a result for a rejected payment)."""


# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """Daraja accepted the STK push and gave its ids."""

    checkout_request_id: str
    merchant_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Daraja refused the STK push synchronously (``400.002.02``, ``500.001.1001``, ...)."""

    error_code: str | None
    error_message: str


@dataclass(frozen=True, slots=True)
class OutcomeUnknown:
    """The push may have left but no answer came back (read timeout, 5xx after send)."""

    reason: str


@dataclass(frozen=True, slots=True)
class StkResult:
    """The customer's answer, from a callback (``stkCallback``) or an STK query.

    Attributes:
        result_code: Daraja's ``ResultCode`` as a string (``"0"`` means paid). Callbacks send
            an int, queries a string: always compare strings.
        result_desc: Daraja's ``ResultDesc`` (wording varies; never switched on).
        receipt: ``MpesaReceiptNumber`` (callbacks only; an STK query carries none).
        amount: the ``Amount`` item of the callback metadata, in shillings.
        phone: the ``PhoneNumber`` item (may be masked by Daraja).
        transaction_date: ``TransactionDate``, as an aware datetime.
        source: ``"callback"`` or ``"query"``.
    """

    result_code: str
    result_desc: str = ""
    receipt: str | None = None
    amount: int | Decimal | None = None
    phone: str | None = None
    transaction_date: datetime | None = None
    source: Literal["callback", "query"] = "callback"

    @property
    def is_success(self) -> bool:
        """``True`` when ``result_code`` is ``"0"`` (Daraja's only success code)."""
        return self.result_code.strip() == "0"


@dataclass(frozen=True, slots=True)
class StillPending:
    """An STK query answered "The transaction is being processed" (``500.001.1001``)."""


UNVERIFIED_EXPIRY = (
    "expired without any answer from Daraja: the customer may have paid; "
    "verify against the M-Pesa statement"
)


@dataclass(frozen=True, slots=True)
class Expired:
    """The reconciler's deadline passed with no final answer."""


@dataclass(frozen=True, slots=True)
class FlagResolved:
    """A person looked at a flagged payment and resolved the flag.

    Attributes:
        note: what they found or did (required: the audit trail must say why).
        by: who resolved it (an operator's name).
    """

    note: str
    by: str


LedgerInput: TypeAlias = (
    Accepted | Rejected | OutcomeUnknown | StkResult | StillPending | Expired | FlagResolved
)


@dataclass(frozen=True, slots=True)
class PaymentState:
    """The part of a payment the state machine needs to decide."""

    status: PaymentStatus
    amount: int
    phone: str
    checkout_request_id: str | None = None
    result_code: str | None = None
    receipt: str | None = None
    flagged: bool = False
    flag_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What an input does to a payment.

    Attributes:
        kind: applied, noop, duplicate or ignored.
        status: the status after the input (unchanged unless ``kind`` is applied).
        events: event types to write, in order, in the same transaction as ``changes``.
        changes: column values to write on the payment row.
        detail: a short human explanation (logged, stored with callbacks).
    """

    kind: DecisionKind
    status: PaymentStatus
    events: tuple[EventType, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def applied(self) -> bool:
        """``True`` when the payment row must be written."""
        return self.kind is DecisionKind.APPLIED


class CodeInfo(Protocol):
    """What the state machine needs from a result-code catalogue entry.

    :class:`pesa.daraja.ResultCode` (from :func:`pesa.daraja.lookup_code`) fits.
    """

    @property
    def meaning(self) -> str:
        """What the code means (becomes the payment's ``failure_reason``)."""
        ...

    @property
    def final(self) -> bool:
        """Whether the outcome can no longer change (unknown codes are not final)."""
        ...

    @property
    def known(self) -> bool:
        """Whether the catalogue knows the code."""
        ...


CodeLookup: TypeAlias = Callable[[str], CodeInfo]


# -- the rules --------------------------------------------------------------------------


def decide(
    state: PaymentState,
    event: LedgerInput,
    *,
    lookup: CodeLookup | None = None,
) -> Decision:
    """Decide what ``event`` does to a payment in ``state``.

    Args:
        state: the payment as currently stored.
        event: the input (accepted, rejected, unknown, a result, still pending, expired).
        lookup: the result-code catalogue (``"1032"`` → its meaning and finality). A known
            code's meaning becomes ``failure_reason``; otherwise Daraja's ``ResultDesc`` is
            used. A non-zero code the catalogue says is not final (an unknown code) does not
            fail the payment: the decision is ``NOOP`` and the reconciler verifies by query.
            Without a catalogue every non-zero code is final.

    Returns:
        A :class:`Decision`. It never raises for a valid input type: an input that does not
        fit the state is ``IGNORED`` with a detail, a repeat is ``DUPLICATE``.
    """
    status = state.status
    if isinstance(event, Accepted):
        return _on_accepted(state, event)
    if isinstance(event, Rejected):
        return _on_rejected(state, event)
    if isinstance(event, OutcomeUnknown):
        if status is PaymentStatus.CREATED:
            return Decision(
                DecisionKind.APPLIED,
                PaymentStatus.UNKNOWN,
                (EventType.UNKNOWN,),
                {"status": PaymentStatus.UNKNOWN, "failure_reason": event.reason},
                "outcome unknown: to be settled by query",
            )
        if status is PaymentStatus.UNKNOWN:
            return Decision(DecisionKind.DUPLICATE, status, detail="already unknown")
        return Decision(DecisionKind.IGNORED, status, detail=f"outcome unknown while {status}")
    if isinstance(event, StkResult):
        return _on_result(state, event, lookup)
    if isinstance(event, StillPending):
        if status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
            return Decision(DecisionKind.NOOP, status, detail="still being processed")
        return Decision(DecisionKind.IGNORED, status, detail=f"still-pending answer while {status}")
    if isinstance(event, Expired):
        if status is PaymentStatus.PENDING:
            return Decision(
                DecisionKind.APPLIED,
                PaymentStatus.FAILED,
                (EventType.FAILED,),
                {"status": PaymentStatus.FAILED, "failure_reason": "expired"},
                "no final answer before the deadline",
            )
        if status is PaymentStatus.UNKNOWN:
            # Daraja never confirmed this push, so nothing could ask it what the customer
            # did: the customer may have paid. Failed, but flagged for a human to verify
            # against the M-Pesa statement before anyone is told the payment did not happen.
            return Decision(
                DecisionKind.APPLIED,
                PaymentStatus.FAILED,
                (EventType.FAILED, EventType.FLAGGED),
                {
                    "status": PaymentStatus.FAILED,
                    "failure_reason": "expired",
                    "flagged": True,
                    "flag_reason": UNVERIFIED_EXPIRY,
                },
                "no answer from Daraja before the deadline; outcome unverified",
            )
        return Decision(DecisionKind.IGNORED, status, detail=f"cannot expire a {status} payment")
    if isinstance(event, FlagResolved):
        return _on_flag_resolved(state, event)
    raise TypeError(f"not a ledger input: {event!r}")  # pragma: no cover - typing forbids it


def _on_accepted(state: PaymentState, event: Accepted) -> Decision:
    status = state.status
    if status in (PaymentStatus.CREATED, PaymentStatus.UNKNOWN):
        # unknown → pending: the send's answer arrived after the intent was recovered as
        # unknown (a slow push racing recover_stale_created); now we hold the id to query.
        if state.checkout_request_id not in (None, event.checkout_request_id):
            return Decision(
                DecisionKind.IGNORED, status, detail="a different CheckoutRequestID is recorded"
            )
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.PENDING,
            (EventType.PENDING,),
            {
                "status": PaymentStatus.PENDING,
                "checkout_request_id": event.checkout_request_id,
                "merchant_request_id": event.merchant_request_id,
                "failure_reason": None,
            },
            "accepted by Daraja",
        )
    if state.checkout_request_id == event.checkout_request_id:
        return Decision(DecisionKind.DUPLICATE, status, detail="already accepted")
    return Decision(DecisionKind.IGNORED, status, detail=f"accepted while {status}")


def _on_rejected(state: PaymentState, event: Rejected) -> Decision:
    status = state.status
    if status in (PaymentStatus.CREATED, PaymentStatus.UNKNOWN) and (
        state.checkout_request_id is None
    ):
        code = event.error_code
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.REJECTED,
            (EventType.REJECTED,),
            {
                "status": PaymentStatus.REJECTED,
                "result_code": code,
                "result_desc": event.error_message,
                "failure_reason": event.error_message,
            },
            f"rejected by Daraja [{code}]" if code else "rejected by Daraja",
        )
    if status is PaymentStatus.REJECTED:
        return Decision(DecisionKind.DUPLICATE, status, detail="already rejected")
    return Decision(DecisionKind.IGNORED, status, detail=f"rejection while {status}")


def _on_result(state: PaymentState, result: StkResult, lookup: CodeLookup | None) -> Decision:
    status = state.status
    code = result.result_code.strip()
    if status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        if result.is_success:
            return _succeed(state, result, (EventType.SUCCEEDED,), "paid")
        info = None if lookup is None else lookup(code)
        if info is not None and not info.final:
            # "For unknown codes verify with Transaction Status before telling the customer
            # money was not taken" (REFERENCE §10.2): keep it open, let a query settle it.
            return Decision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} is not final ({info.meaning}); verify by query",
            )
        known = info.meaning if info is not None and info.known else None
        reason = known or result.result_desc or f"result code {code}"
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.FAILED,
            (EventType.FAILED,),
            {
                "status": PaymentStatus.FAILED,
                "result_code": code,
                "result_desc": result.result_desc,
                "failure_reason": reason,
            },
            f"failed: {reason}",
        )
    if status is PaymentStatus.FAILED:
        if result.is_success and result.receipt:
            return _succeed(
                state,
                result,
                (EventType.SUCCEEDED, EventType.CORRECTED),
                "late success corrects an earlier failure",
            )
        if result.is_success:
            # An STK query says "0" but carries no receipt: evidence, not proof. Keep the
            # failure, flag it for a Transaction Status check, never silently ignore it.
            return _flag(state, "success reported after failure without a receipt; verify")
        return Decision(DecisionKind.DUPLICATE, status, detail="already failed")
    if status is PaymentStatus.SUCCEEDED:
        if result.is_success and (result.receipt is None or result.receipt == state.receipt):
            return Decision(DecisionKind.DUPLICATE, status, detail="already succeeded")
        if result.is_success:
            return _flag(state, f"second success with a different receipt {result.receipt}")
        return _flag(state, f"result code {code} reported after success")
    return Decision(DecisionKind.IGNORED, status, detail=f"result for a {status} payment")


def _on_flag_resolved(state: PaymentState, event: FlagResolved) -> Decision:
    if not state.flagged:
        return Decision(DecisionKind.IGNORED, state.status, detail="the payment is not flagged")
    was = f" (flag was: {state.flag_reason})" if state.flag_reason else ""
    return Decision(
        DecisionKind.APPLIED,
        state.status,
        (EventType.FLAG_RESOLVED,),
        {"flagged": False, "flag_reason": None},
        f"flag resolved by {event.by}: {event.note}{was}",
    )


def _flag(state: PaymentState, reason: str) -> Decision:
    if state.flagged and state.flag_reason == reason:
        return Decision(DecisionKind.DUPLICATE, state.status, detail=reason)
    return Decision(
        DecisionKind.APPLIED,
        state.status,
        (EventType.FLAGGED,),
        {"flagged": True, "flag_reason": reason},
        reason,
    )


def _succeed(
    state: PaymentState, result: StkResult, events: tuple[EventType, ...], detail: str
) -> Decision:
    changes: dict[str, Any] = {
        "status": PaymentStatus.SUCCEEDED,
        "result_code": "0",
        "result_desc": result.result_desc,
        "failure_reason": None,
    }
    if result.receipt is not None:
        changes["receipt"] = result.receipt
    if result.amount is not None:
        changes["paid_amount"] = _as_decimal(result.amount)
    if result.phone is not None:
        changes["paid_phone"] = result.phone
    if result.transaction_date is not None:
        changes["transaction_date"] = result.transaction_date
    mismatches = mismatch_reasons(state, result)
    if mismatches:
        reason = "; ".join(mismatches)
        changes["flagged"] = True
        changes["flag_reason"] = reason
        events = (*events, EventType.FLAGGED)
        detail = f"{detail}; flagged: {reason}"
    return Decision(DecisionKind.APPLIED, PaymentStatus.SUCCEEDED, events, changes, detail)


def _as_decimal(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def mismatch_reasons(state: PaymentState, result: StkResult) -> list[str]:
    """Say how a success differs from what was requested (amount, phone), if at all."""
    reasons: list[str] = []
    if result.amount is not None:
        try:
            paid = _as_decimal(result.amount)
        except (InvalidOperation, TypeError):  # pragma: no cover - parser gives numbers
            paid = None
        if paid is None or paid != Decimal(state.amount):
            reasons.append(f"amount {result.amount} differs from requested {state.amount}")
    if result.phone is not None and not phones_match(state.phone, result.phone):
        reasons.append("phone differs from the one requested")
    return reasons


def _canonical_phone(phone: str) -> str:
    # Keep masking characters: Daraja may mask the callback's PhoneNumber (2547****149).
    cleaned = re.sub(r"[^\d*]", "", phone)
    if cleaned.startswith("0") and len(cleaned) == 10:
        return "254" + cleaned[1:]
    if len(cleaned) == 9 and cleaned[0] in "17":
        return "254" + cleaned
    return cleaned


def phones_match(requested: str, reported: str) -> bool:
    """Compare a requested phone with a reported one, tolerating Daraja's masking.

    Masked digits (``*``) match anything; visible digits must agree. A masked number of a
    different length cannot be compared and counts as a match only if its visible prefix and
    suffix agree (``2547****149`` against ``254708374149``).
    """
    want = _canonical_phone(requested)
    got = _canonical_phone(reported)
    if "*" not in got:
        return want == got
    if len(got) == len(want):
        return all(g == "*" or g == w for g, w in zip(got, want, strict=True))
    head, _, tail = got.partition("*")
    tail = tail.lstrip("*")
    tail = tail.rsplit("*", 1)[-1]
    return want.startswith(head) and want.endswith(tail)
