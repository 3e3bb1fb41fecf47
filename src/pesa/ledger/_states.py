"""The payment state machine of DESIGN.md, as pure code: no I/O, no clock, no database.

Storage (:mod:`pesa.ledger._ledger`, the Django app) reads the current state of a payment,
asks :func:`decide` what an input does to it, and writes the answer in one transaction
guarded by the state it read. Keeping the rules here means the gateway, the reconciler and
any other driver apply exactly the same lifecycle::

    created ──accepted──> pending ──confirmed success / query 0──> succeeded
       │                    │  └──final non-zero code──> failed
       │                    └──still pending──> pending
       ├──rejected──> rejected
       └──outcome unknown──> unknown ──accepted / query / expired──> ...
    failed ──success confirmed by an STK query──> succeeded (+ payment.corrected)

Who may say that money moved (DESIGN.md, "Trust"):

- Daraja's own answers are authoritative: the push answer (the CheckoutRequestID) and the
  STK query (the result code). A query carries no receipt.
- A callback is evidence. A success callback settles a payment on its own only when it can
  be cross-checked against the request: the id is one Daraja gave us, it carries a receipt,
  its ``Amount`` is the amount asked and its ``PhoneNumber`` is the full number asked.
  Anything less (no amount, no phone, a masked phone, a different amount or phone, an id
  learnt from a callback, a failed payment) is kept as *evidence* and an STK query settles
  the payment; the query's answer, never the callback's, decides the status.
- A second source that agrees with the first completes the record (a late callback fills in
  the receipt of a payment a query already settled); only a real disagreement is a flag.

A flag (a disagreement for a person to look at) is cleared only by a person:
:class:`FlagResolved` (who, and a note) clears it in any status and writes
``payment.flag_resolved``; the status never changes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "Accepted",
    "Assessment",
    "CodeInfo",
    "CodeLookup",
    "Decision",
    "DecisionKind",
    "EventType",
    "Expired",
    "FlagResolved",
    "IdFromCallback",
    "IdUnknownToDaraja",
    "LedgerInput",
    "MismatchPolicy",
    "OutcomeUnknown",
    "PaymentState",
    "PaymentStatus",
    "Rejected",
    "StillPending",
    "StkResult",
    "TERMINAL_STATUSES",
    "UNVERIFIED_EXPIRY",
    "Unverifiable",
    "assess_success",
    "decide",
    "evolve",
    "mismatch_reasons",
    "orphan_matches",
    "phones_match",
]


class PaymentStatus(StrEnum):
    """Where a payment is in its lifecycle."""

    CREATED = "created"
    """The intent is committed; the STK push may or may not have been sent yet."""
    PENDING = "pending"
    """Daraja accepted the push (we hold its CheckoutRequestID); the customer has not answered."""
    SUCCEEDED = "succeeded"
    """The customer paid (result code 0, from Daraja's query or a cross-checked callback)."""
    FAILED = "failed"
    """The payment ended without money moving (a non-zero result code, or expired)."""
    REJECTED = "rejected"
    """Daraja refused the push synchronously (an HTTP error with its own code)."""
    UNKNOWN = "unknown"
    """The push may have reached Daraja but no answer came back: to be settled by query."""


TERMINAL_STATUSES: frozenset[PaymentStatus] = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED, PaymentStatus.REJECTED}
)

MismatchPolicy: TypeAlias = Literal["flag", "refuse"]
"""What a success callback that contradicts the request is: ``flag`` keeps it as evidence
(its receipt and amounts recorded once a query confirms the payment, which is flagged),
``refuse`` stores it as ``invalid`` (linked from the flag, its values never copied)."""


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
    UPDATED = "payment.updated"
    """A succeeded payment's record was completed (a late callback's receipt and details)."""


class DecisionKind(StrEnum):
    """What :func:`decide` concluded about an input."""

    APPLIED = "applied"
    """The payment changes (status and/or flag); write ``changes`` and ``events``."""
    UNVERIFIED = "unverified"
    """A success callback that cannot be cross-checked: kept as evidence, a query settles it."""
    REFUSED = "refused"
    """A success callback that contradicts the request (``refuse`` policy): stored as invalid,
    kept as evidence, a query settles the payment."""
    NOOP = "noop"
    """Nothing to record (a still-pending answer on a pending payment)."""
    DUPLICATE = "duplicate"
    """The input repeats one already applied; it must not be applied twice."""
    IGNORED = "ignored"
    """The input does not fit the payment's state (e.g. a result for a rejected payment)."""


# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """Daraja accepted the STK push and gave its ids (the push's own answer)."""

    checkout_request_id: str
    merchant_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class IdFromCallback:
    """A success callback names an id we never recorded and matches this ``unknown`` payment.

    The push's answer was lost; the callback reveals the CheckoutRequestID it probably got.
    The id is unverified: it lets the reconciler ask Daraja, nothing more.
    """

    checkout_request_id: str
    merchant_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class IdUnknownToDaraja:
    """An STK query by an id learnt from a callback was refused: Daraja does not know it."""

    detail: str = ""


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
        source: ``"callback"`` (evidence) or ``"query"`` (Daraja's authoritative answer).
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


@dataclass(frozen=True, slots=True)
class Unverifiable:
    """The reconciler gave up asking Daraja about a payment's evidence (its window passed)."""


LedgerInput: TypeAlias = (
    Accepted
    | IdFromCallback
    | IdUnknownToDaraja
    | Rejected
    | OutcomeUnknown
    | StkResult
    | StillPending
    | Expired
    | Unverifiable
    | FlagResolved
)


@dataclass(frozen=True, slots=True)
class PaymentState:
    """The part of a payment the state machine needs to decide.

    Attributes:
        checkout_request_id_verified: ``False`` while the id was learnt from a callback and
            no STK query by it has confirmed it.
        evidence: a success callback kept as evidence, not yet settled by a query.
        evidence_id: the stored callback holding ``evidence`` (named in flags).
        evidence_refused: ``evidence`` was refused as contradicting the request.
        verifying: a query has been asked for (``verify_at`` is set).
    """

    status: PaymentStatus
    amount: int
    phone: str
    checkout_request_id: str | None = None
    result_code: str | None = None
    receipt: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    checkout_request_id_verified: bool = True
    evidence: StkResult | None = None
    evidence_id: str | None = None
    evidence_refused: bool = False
    verifying: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """What an input does to a payment.

    Attributes:
        kind: applied, unverified, refused, noop, duplicate or ignored.
        status: the status after the input (unchanged unless ``kind`` is applied).
        events: event types to write, in order, in the same transaction as ``changes``.
        changes: column values to write on the payment row.
        detail: a short human explanation (logged, stored with callbacks).
        verify: ask Daraja: the storage sets ``verify_at`` to now (and ``verify_since`` if
            it was not set), so the reconciler queries the payment whatever its status.
        keep_evidence: the input (a callback) becomes the payment's evidence: the storage
            records the stored callback's id as ``evidence_callback_id``.
    """

    kind: DecisionKind
    status: PaymentStatus
    events: tuple[EventType, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    verify: bool = False
    keep_evidence: bool = False

    @property
    def applied(self) -> bool:
        """``True`` when the input was applied (status, flag or record changed)."""
        return self.kind is DecisionKind.APPLIED

    @property
    def writes(self) -> bool:
        """``True`` when the payment row must be written (applied, or evidence kept)."""
        return self.kind in (DecisionKind.APPLIED, DecisionKind.UNVERIFIED, DecisionKind.REFUSED)


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


# -- cross-checks -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    """How far a success callback can be trusted on its own (see :func:`assess_success`).

    Attributes:
        verdict: ``confirmed`` (it may settle the payment), ``unverified`` (nothing
            contradicts it but something cannot be checked) or ``mismatch`` (it contradicts
            the request).
        unverifiable: what could not be checked (no amount, a masked phone, ...).
        mismatches: how it contradicts the request (amount, phone).
    """

    verdict: Literal["confirmed", "unverified", "mismatch"]
    unverifiable: tuple[str, ...] = ()
    mismatches: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """Every problem, for details and flags."""
        return "; ".join((*self.mismatches, *self.unverifiable))


def assess_success(state: PaymentState, result: StkResult) -> Assessment:
    """Cross-check a success callback against the request it claims to answer.

    Confirmed needs all of: the payment's id came from Daraja (or a query confirmed it), a
    receipt, an ``Amount`` equal to the amount asked, and a full ``PhoneNumber`` equal to the
    number asked. A masked phone whose visible digits agree is not a mismatch, but it cannot
    confirm anything either.
    """
    unverifiable: list[str] = []
    if not state.checkout_request_id_verified:
        unverifiable.append("its CheckoutRequestID was learnt from a callback, not from Daraja")
    if not result.receipt:
        unverifiable.append("no MpesaReceiptNumber")
    if result.amount is None:
        unverifiable.append("no Amount")
    if result.phone is None:
        unverifiable.append("no PhoneNumber")
    elif "*" in result.phone and (
        not _has_digits(result.phone) or phones_match(state.phone, result.phone)
    ):
        unverifiable.append("a masked PhoneNumber")
    mismatches = tuple(mismatch_reasons(state, result))
    if mismatches:
        return Assessment("mismatch", tuple(unverifiable), mismatches)
    if unverifiable:
        return Assessment("unverified", tuple(unverifiable))
    return Assessment("confirmed")


def orphan_matches(state: PaymentState, result: StkResult) -> bool:
    """Whether a success callback naming an unknown id may belong to this payment.

    Only an ``unknown`` payment without an id (its push answer was lost) can take an id from a
    callback, and only from a success that carries the amount asked and a phone that agrees
    (masked digits allowed): a payment whose push is still in flight is never adopted.
    """
    return (
        state.status is PaymentStatus.UNKNOWN
        and state.checkout_request_id is None
        and result.is_success
        and result.amount is not None
        and result.phone is not None
        and _same_amount(result.amount, state.amount)
        and phones_match(state.phone, result.phone)
    )


# -- the rules --------------------------------------------------------------------------


def decide(
    state: PaymentState,
    event: LedgerInput,
    *,
    lookup: CodeLookup | None = None,
    on_mismatch: MismatchPolicy = "flag",
) -> Decision:
    """Decide what ``event`` does to a payment in ``state``.

    Args:
        state: the payment as currently stored (with its unsettled evidence, if any).
        event: the input (accepted, rejected, unknown, a result, still pending, expired...).
        lookup: the result-code catalogue (``"1032"`` → its meaning and finality). A known
            code's meaning becomes ``failure_reason``; otherwise Daraja's ``ResultDesc`` is
            used. A non-zero code the catalogue says is not final (an unknown code) does not
            fail the payment: the decision is ``NOOP`` and the reconciler verifies by query.
            Without a catalogue every non-zero code is final.
        on_mismatch: what a success callback contradicting the request is (see
            :data:`MismatchPolicy`); either way only a query settles such a payment.

    Returns:
        A :class:`Decision`. It never raises for a valid input type: an input that does not
        fit the state is ``IGNORED`` with a detail, a repeat is ``DUPLICATE``.
    """
    status = state.status
    if isinstance(event, Accepted):
        return _on_accepted(state, event)
    if isinstance(event, IdFromCallback):
        return _on_id_from_callback(state, event)
    if isinstance(event, IdUnknownToDaraja):
        return _on_id_unknown(state, event)
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
        if event.source == "query":
            return _on_query(state, event, lookup)
        return _on_callback(state, event, lookup, on_mismatch)
    if isinstance(event, StillPending):
        if status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
            return Decision(DecisionKind.NOOP, status, detail="still being processed")
        return Decision(DecisionKind.IGNORED, status, detail=f"still-pending answer while {status}")
    if isinstance(event, Expired):
        return _on_expired(state)
    if isinstance(event, Unverifiable):
        return _on_unverifiable(state)
    if isinstance(event, FlagResolved):
        return _on_flag_resolved(state, event)
    raise TypeError(f"not a ledger input: {event!r}")  # pragma: no cover - typing forbids it


def evolve(state: PaymentState, decision: Decision) -> PaymentState:
    """The state after ``decision`` is written (for drivers that keep a state in memory).

    ``keep_evidence`` cannot be reflected (the evidence is the input, which the caller
    holds): pass it with :func:`dataclasses.replace` when needed.
    """
    if not decision.writes:
        return state
    changes = decision.changes
    updates: dict[str, Any] = {"status": decision.status}
    for name in (
        "checkout_request_id",
        "result_code",
        "receipt",
        "flagged",
        "flag_reason",
        "checkout_request_id_verified",
    ):
        if name in changes:
            updates[name] = changes[name]
    if changes.get("evidence_callback_id", "") is None:
        updates.update(evidence=None, evidence_id=None, evidence_refused=False)
    if decision.verify:
        updates["verifying"] = True
    if changes.get("verify_at", "") is None:
        updates["verifying"] = False
    return dataclasses.replace(state, **updates)


_SETTLED: dict[str, Any] = {"evidence_callback_id": None, "verify_at": None, "verify_since": None}
"""Changes that close every open question about a payment (evidence, verification)."""


def _on_accepted(state: PaymentState, event: Accepted) -> Decision:
    status = state.status
    if status in (PaymentStatus.CREATED, PaymentStatus.UNKNOWN):
        # unknown → pending: the send's answer arrived after the intent was recovered as
        # unknown (a slow push racing recover_stale_created); now we hold the id to query.
        # Daraja's answer always wins over an id learnt from a callback.
        recorded = state.checkout_request_id
        if recorded not in (None, event.checkout_request_id) and state.checkout_request_id_verified:
            return Decision(
                DecisionKind.IGNORED, status, detail="a different CheckoutRequestID is recorded"
            )
        changes: dict[str, Any] = {
            "status": PaymentStatus.PENDING,
            "checkout_request_id": event.checkout_request_id,
            "merchant_request_id": event.merchant_request_id,
            "checkout_request_id_verified": True,
            "failure_reason": None,
        }
        detail = "accepted by Daraja"
        if recorded is not None and recorded != event.checkout_request_id:
            # The id a callback gave was not Daraja's: its evidence is about another id.
            changes.update(_SETTLED)
            detail += "; the CheckoutRequestID learnt from a callback is replaced"
        return Decision(
            DecisionKind.APPLIED, PaymentStatus.PENDING, (EventType.PENDING,), changes, detail
        )
    if state.checkout_request_id == event.checkout_request_id:
        return Decision(DecisionKind.DUPLICATE, status, detail="already accepted")
    return Decision(DecisionKind.IGNORED, status, detail=f"accepted while {status}")


def _on_id_from_callback(state: PaymentState, event: IdFromCallback) -> Decision:
    status = state.status
    if status is PaymentStatus.UNKNOWN and state.checkout_request_id is None:
        return Decision(
            DecisionKind.APPLIED,
            status,
            (),
            {
                "checkout_request_id": event.checkout_request_id,
                "merchant_request_id": event.merchant_request_id,
                "checkout_request_id_verified": False,
            },
            "CheckoutRequestID learnt from a callback (unverified): an STK query settles it",
            verify=True,
            keep_evidence=True,
        )
    if state.checkout_request_id == event.checkout_request_id:
        return Decision(DecisionKind.DUPLICATE, status, detail="this id is already recorded")
    return Decision(
        DecisionKind.IGNORED, status, detail=f"a {status} payment cannot take an id from a callback"
    )


def _on_id_unknown(state: PaymentState, event: IdUnknownToDaraja) -> Decision:
    if (
        state.status is PaymentStatus.UNKNOWN
        and state.checkout_request_id is not None
        and not state.checkout_request_id_verified
    ):
        detail = "Daraja does not know the CheckoutRequestID learnt from a callback; dropped"
        if event.detail:
            detail += f" ({event.detail})"
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.UNKNOWN,
            (),
            {
                "checkout_request_id": None,
                "merchant_request_id": None,
                "checkout_request_id_verified": True,
                **_SETTLED,
            },
            detail,
        )
    return Decision(DecisionKind.IGNORED, state.status, detail="the id is not an unverified one")


def _on_rejected(state: PaymentState, event: Rejected) -> Decision:
    status = state.status
    unverified_id = state.checkout_request_id is not None and not state.checkout_request_id_verified
    if status in (PaymentStatus.CREATED, PaymentStatus.UNKNOWN) and (
        state.checkout_request_id is None or unverified_id
    ):
        code = event.error_code
        changes: dict[str, Any] = {
            "status": PaymentStatus.REJECTED,
            "result_code": code,
            "result_desc": event.error_message,
            "failure_reason": event.error_message,
        }
        if unverified_id:
            # Daraja's answer wins: the id a callback named was not this push's.
            changes.update(
                checkout_request_id=None,
                merchant_request_id=None,
                checkout_request_id_verified=True,
                **_SETTLED,
            )
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.REJECTED,
            (EventType.REJECTED,),
            changes,
            f"rejected by Daraja [{code}]" if code else "rejected by Daraja",
        )
    if status is PaymentStatus.REJECTED:
        return Decision(DecisionKind.DUPLICATE, status, detail="already rejected")
    return Decision(DecisionKind.IGNORED, status, detail=f"rejection while {status}")


def _failure_reason(result: StkResult, info: CodeInfo | None) -> str:
    known = info.meaning if info is not None and info.known else None
    return known or result.result_desc or f"result code {result.result_code.strip()}"


def _on_callback(
    state: PaymentState, result: StkResult, lookup: CodeLookup | None, policy: MismatchPolicy
) -> Decision:
    status = state.status
    code = result.result_code.strip()
    if state.checkout_request_id is None:
        # Results are matched by CheckoutRequestID: a payment without one cannot be named.
        return Decision(DecisionKind.IGNORED, status, detail="no CheckoutRequestID is recorded")
    if status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        if result.is_success:
            assessment = assess_success(state, result)
            if assessment.verdict == "confirmed":
                return _succeed(state, result, (EventType.SUCCEEDED,), "paid")
            return _keep_evidence(state, assessment, policy)
        if not state.checkout_request_id_verified or state.evidence is not None:
            # A failure naming an id a callback gave us, or contradicting a success we hold
            # as evidence: the query (already asked for) decides, not this callback.
            return Decision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} not applied: an STK query settles this payment",
            )
        info = None if lookup is None else lookup(code)
        if info is not None and not info.final:
            # "For unknown codes verify with Transaction Status before telling the customer
            # money was not taken" (REFERENCE §10.2): keep it open, let a query settle it.
            return Decision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} is not final ({info.meaning}); verify by query",
            )
        return _fail(state, result, info, ())
    if status is PaymentStatus.FAILED:
        if result.is_success:
            # Whoever holds the callback token could send this: only a query may turn a
            # failed payment into a paid one.
            assessment = assess_success(state, result)
            if assessment.verdict == "mismatch" and policy == "refuse":
                return _keep_evidence(state, assessment, policy)
            return Decision(
                DecisionKind.UNVERIFIED,
                status,
                detail="success reported for a failed payment: an STK query settles it",
                verify=True,
                keep_evidence=True,
            )
        return Decision(DecisionKind.DUPLICATE, status, detail="already failed")
    if status is PaymentStatus.SUCCEEDED:
        return _after_success(state, result, code)
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


def _keep_evidence(state: PaymentState, assessment: Assessment, policy: MismatchPolicy) -> Decision:
    if assessment.verdict == "mismatch" and policy == "refuse":
        return Decision(
            DecisionKind.REFUSED,
            state.status,
            detail="success does not match the request: "
            + assessment.reason
            + "; an STK query settles the payment",
            verify=True,
            keep_evidence=True,
        )
    return Decision(
        DecisionKind.UNVERIFIED,
        state.status,
        detail=f"success not confirmed ({assessment.reason}): an STK query settles it",
        verify=True,
        keep_evidence=True,
    )


def _after_success(state: PaymentState, result: StkResult, code: str) -> Decision:
    """A callback for a payment that already succeeded: complete the record, or flag."""
    if not result.is_success:
        return _flag(state, f"result code {code} reported after success")
    if result.receipt is not None and result.receipt == state.receipt:
        return Decision(DecisionKind.DUPLICATE, state.status, detail="already succeeded")
    if state.receipt is not None:
        if result.receipt is None:
            return Decision(DecisionKind.DUPLICATE, state.status, detail="already succeeded")
        return _flag(state, f"second success with a different receipt {result.receipt}")
    # A query settled it (no receipt): this callback completes the record if it agrees.
    changes = _details(result)
    if not changes:
        return Decision(DecisionKind.DUPLICATE, state.status, detail="already succeeded")
    mismatches = mismatch_reasons(state, result)
    events: tuple[EventType, ...] = (EventType.UPDATED,)
    detail = "receipt and details recorded from the callback"
    if mismatches:
        reason = "the callback disagrees with the request: " + "; ".join(mismatches)
        changes.update(flagged=True, flag_reason=_join_flag(state, reason))
        events = (EventType.UPDATED, EventType.FLAGGED)
        detail += f"; flagged: {reason}"
    return Decision(DecisionKind.APPLIED, state.status, events, changes, detail)


def _on_query(state: PaymentState, result: StkResult, lookup: CodeLookup | None) -> Decision:
    status = state.status
    code = result.result_code.strip()
    if state.checkout_request_id is None:
        return Decision(DecisionKind.IGNORED, status, detail="no CheckoutRequestID is recorded")
    if status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        if result.is_success:
            return _succeed_by_query(state, result, (EventType.SUCCEEDED,), "paid (STK query)")
        info = None if lookup is None else lookup(code)
        if info is not None and not info.final:
            return Decision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} is not final ({info.meaning}); verify by query",
            )
        reasons = []
        if not state.checkout_request_id_verified:
            reasons.append(
                "its CheckoutRequestID came from a success callback, "
                f"but Daraja's query answers result code {code}"
            )
        if state.evidence is not None:
            reasons.append(
                f"a callback{_named(state.evidence_id)} reported success, "
                f"but Daraja's query answers result code {code}"
            )
        return _fail(state, result, info, tuple(reasons))
    if status is PaymentStatus.FAILED:
        if result.is_success:
            return _succeed_by_query(
                state,
                result,
                (EventType.SUCCEEDED, EventType.CORRECTED),
                "Daraja's query says paid: corrects an earlier failure",
            )
        if state.evidence is not None:
            return _close(
                _flag(
                    state,
                    f"a callback{_named(state.evidence_id)} reported success for this failed "
                    f"payment, but Daraja's query answers result code {code}",
                ),
                state,
            )
        return _close(Decision(DecisionKind.DUPLICATE, status, detail="already failed"), state)
    if status is PaymentStatus.SUCCEEDED:
        if result.is_success:
            return _close(
                Decision(DecisionKind.DUPLICATE, status, detail="already succeeded"), state
            )
        return _close(
            _flag(state, f"Daraja's query answers result code {code} after success"), state
        )
    return Decision(DecisionKind.IGNORED, status, detail=f"result for a {status} payment")


def _close(decision: Decision, state: PaymentState) -> Decision:
    """A final query answer closes any open question (evidence, verification) it settles."""
    if decision.kind is DecisionKind.DUPLICATE:
        if not (state.verifying or state.evidence is not None):
            return decision
        return Decision(
            DecisionKind.APPLIED,
            decision.status,
            (),
            dict(_SETTLED),
            f"{decision.detail}; verification closed",
        )
    return dataclasses.replace(decision, changes={**decision.changes, **_SETTLED})


def _on_expired(state: PaymentState) -> Decision:
    status = state.status
    if status not in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        return Decision(DecisionKind.IGNORED, status, detail=f"cannot expire a {status} payment")
    reason = None
    if status is PaymentStatus.UNKNOWN:
        # Daraja never confirmed this push (or only a callback named its id), so nothing
        # could ask it what the customer did: the customer may have paid. Failed, but
        # flagged for a human to verify against the M-Pesa statement.
        reason = UNVERIFIED_EXPIRY
    elif state.evidence is not None:
        reason = (
            f"expired while a success callback{_named(state.evidence_id)} waited for Daraja "
            "to confirm it: the customer may have paid; verify against the M-Pesa statement"
        )
    changes: dict[str, Any] = {
        "status": PaymentStatus.FAILED,
        "failure_reason": "expired",
        **_SETTLED,
    }
    events: tuple[EventType, ...] = (EventType.FAILED,)
    detail = "no final answer before the deadline"
    if reason is not None:
        changes.update(flagged=True, flag_reason=_join_flag(state, reason))
        events = (EventType.FAILED, EventType.FLAGGED)
        detail += "; outcome unverified"
    return Decision(DecisionKind.APPLIED, PaymentStatus.FAILED, events, changes, detail)


def _on_unverifiable(state: PaymentState) -> Decision:
    if not state.verifying and state.evidence is None:
        return Decision(DecisionKind.IGNORED, state.status, detail="nothing awaits verification")
    if state.status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        return _on_expired(state)
    if state.evidence is None:
        return Decision(
            DecisionKind.APPLIED,
            state.status,
            (),
            dict(_SETTLED),
            "verification window passed",
        )
    reason = (
        f"a success callback{_named(state.evidence_id)} for this {state.status} payment "
        "could not be confirmed by Daraja: verify against the M-Pesa statement"
    )
    flag = _flag(state, reason)
    changes = {**flag.changes, **_SETTLED}
    return Decision(DecisionKind.APPLIED, state.status, flag.events, changes, reason)


def _flag(state: PaymentState, reason: str) -> Decision:
    if state.flagged and state.flag_reason is not None and reason in state.flag_reason:
        return Decision(DecisionKind.DUPLICATE, state.status, detail=reason)
    return Decision(
        DecisionKind.APPLIED,
        state.status,
        (EventType.FLAGGED,),
        {"flagged": True, "flag_reason": _join_flag(state, reason)},
        reason,
    )


def _join_flag(state: PaymentState, reason: str) -> str:
    # Flags accumulate: a second disagreement never hides the first.
    if state.flagged and state.flag_reason and reason not in state.flag_reason:
        return f"{state.flag_reason}; {reason}"
    return reason


def _named(callback_id: str | None) -> str:
    return f" ({callback_id})" if callback_id else ""


def _details(result: StkResult) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if result.receipt is not None:
        changes["receipt"] = result.receipt
    if result.amount is not None:
        changes["paid_amount"] = _as_decimal(result.amount)
    if result.phone is not None:
        changes["paid_phone"] = result.phone
    if result.transaction_date is not None:
        changes["transaction_date"] = result.transaction_date
    return changes


def _fail(
    state: PaymentState, result: StkResult, info: CodeInfo | None, flags: tuple[str, ...]
) -> Decision:
    code = result.result_code.strip()
    reason = _failure_reason(result, info)
    changes: dict[str, Any] = {
        "status": PaymentStatus.FAILED,
        "result_code": code,
        "result_desc": result.result_desc,
        "failure_reason": reason,
        **_SETTLED,
    }
    if result.source == "query":
        changes["checkout_request_id_verified"] = True
    events: tuple[EventType, ...] = (EventType.FAILED,)
    detail = f"failed: {reason}"
    if flags:
        flag_reason = "; ".join(flags)
        changes.update(flagged=True, flag_reason=_join_flag(state, flag_reason))
        events = (EventType.FAILED, EventType.FLAGGED)
        detail += f"; flagged: {flag_reason}"
    return Decision(DecisionKind.APPLIED, PaymentStatus.FAILED, events, changes, detail)


def _succeed(
    state: PaymentState, result: StkResult, events: tuple[EventType, ...], detail: str
) -> Decision:
    """A confirmed success callback settles the payment (it matched the request)."""
    changes: dict[str, Any] = {
        "status": PaymentStatus.SUCCEEDED,
        "result_code": "0",
        "result_desc": result.result_desc,
        "failure_reason": None,
        **_details(result),
        **_SETTLED,
    }
    evidence = state.evidence
    if evidence is not None and evidence.receipt and evidence.receipt != result.receipt:
        # An earlier success callback named another receipt: two sources really disagree.
        reason = (
            f"an earlier callback{_named(state.evidence_id)} reported receipt {evidence.receipt}, "
            f"this one {result.receipt}"
        )
        changes.update(flagged=True, flag_reason=_join_flag(state, reason))
        return Decision(
            DecisionKind.APPLIED,
            PaymentStatus.SUCCEEDED,
            (*events, EventType.FLAGGED),
            changes,
            f"{detail}; flagged: {reason}",
        )
    return Decision(DecisionKind.APPLIED, PaymentStatus.SUCCEEDED, events, changes, detail)


def _succeed_by_query(
    state: PaymentState, result: StkResult, events: tuple[EventType, ...], detail: str
) -> Decision:
    """Daraja's query says paid; the evidence (if any) completes the record or is flagged."""
    changes: dict[str, Any] = {
        "status": PaymentStatus.SUCCEEDED,
        "result_code": "0",
        "result_desc": result.result_desc,
        "failure_reason": None,
        "checkout_request_id_verified": True,
        **_SETTLED,
    }
    evidence = state.evidence
    flag: str | None = None
    if evidence is not None:
        verified = dataclasses.replace(state, checkout_request_id_verified=True)
        assessment = assess_success(verified, evidence)
        if assessment.verdict == "mismatch":
            if state.evidence_refused:
                flag = (
                    f"Daraja confirms the payment, but its callback{_named(state.evidence_id)} "
                    f"was refused: {'; '.join(assessment.mismatches)}"
                )
            else:
                changes.update(_details(evidence))
                flag = (
                    f"the callback{_named(state.evidence_id)} disagrees with the request: "
                    + "; ".join(assessment.mismatches)
                )
        else:
            changes.update(_details(evidence))
            detail += f"; details from the callback{_named(state.evidence_id)}"
    if flag is not None:
        changes.update(flagged=True, flag_reason=_join_flag(state, flag))
        events = (*events, EventType.FLAGGED)
        detail += f"; flagged: {flag}"
    return Decision(DecisionKind.APPLIED, PaymentStatus.SUCCEEDED, events, changes, detail)


def _as_decimal(value: int | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def _same_amount(reported: int | Decimal, requested: int) -> bool:
    try:
        return _as_decimal(reported) == Decimal(requested)
    except (InvalidOperation, TypeError):  # pragma: no cover - parser gives numbers
        return False


def mismatch_reasons(state: PaymentState, result: StkResult) -> list[str]:
    """Say how a success differs from what was requested (amount, phone), if at all."""
    reasons: list[str] = []
    if result.amount is not None and not _same_amount(result.amount, state.amount):
        reasons.append(f"amount {result.amount} differs from requested {state.amount}")
    if (
        result.phone is not None
        and _has_digits(result.phone)
        and not phones_match(state.phone, result.phone)
    ):
        # A fully masked phone ("*") shows nothing to compare: unverifiable, not different.
        reasons.append("phone differs from the one requested")
    return reasons


def _has_digits(phone: str) -> bool:
    return any("0" <= ch <= "9" for ch in phone)


def _canonical_phone(phone: str) -> str:
    # Keep masking characters: Daraja may mask the callback's PhoneNumber (2547****149).
    # ASCII digits only: other scripts' digits are not a phone number here.
    cleaned = re.sub(r"[^0-9*]", "", phone)
    if cleaned.startswith("0") and len(cleaned) == 10:
        return "254" + cleaned[1:]
    if len(cleaned) == 9 and cleaned[0] in "17":
        return "254" + cleaned
    return cleaned


def phones_match(requested: str, reported: str) -> bool:
    """Compare a requested phone with a reported one, tolerating Daraja's masking.

    Masked digits (``*``) match anything; visible digits must agree. A masked number of a
    different length cannot be compared and counts as a match only if its visible prefix and
    suffix agree (``2547****149`` against ``254708374149``). A reported value with no
    visible digit at all (``*``) matches nothing.
    """
    want = _canonical_phone(requested)
    got = _canonical_phone(reported)
    if "*" not in got:
        return want == got
    if not got.strip("*"):
        return False
    if len(got) == len(want):
        return all(g == "*" or g == w for g, w in zip(got, want, strict=True))
    head, _, tail = got.partition("*")
    tail = tail.lstrip("*")
    tail = tail.rsplit("*", 1)[-1]
    return want.startswith(head) and want.endswith(tail)
