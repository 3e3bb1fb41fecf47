"""The payout and refund state machines, as pure code: money the business sends.

A B2C payout and a reversal (refund) are both *transfers*: an initiator request that Daraja
acknowledges synchronously (``ConversationID``), then carries out, reporting the outcome in
a ``{"Result": ...}`` POST to our ResultURL (or a call to our QueueTimeOutURL). Storage
(:mod:`pesa.ledger._transfers`) reads a transfer, asks :func:`decide_transfer` what an input
does to it, and writes the answer in one transaction guarded by the state it read::

    created ──accepted (ConversationID)──> pending ──confirmed Result 0 / status 0──> succeeded
       │                                     │  └──final failure (ids from Daraja)──> failed
       │                                     └──queue timeout──> unknown
       ├──refused, nothing sent before──> rejected
       ├──refused as a duplicate / no answer──> unknown ──status / Result──> ...
    failed ──Transaction Status says completed──> succeeded (+ corrected, flagged)

Who may say that money moved (DESIGN.md, "Trust"), for money going *out*:

- Daraja's own answers are authoritative: its synchronous answer (the ConversationID; or
  "Duplicate OriginatorConversationID", which proves an earlier send arrived), and
  Transaction Status, whose answer comes by callback but is matched by the ids Daraja gave
  *our query*, which nobody else has seen.
- A ``Result`` is evidence. Anyone holding the ResultURL token could POST one, and a replay
  repeats a real one. A success settles a transfer only when it names the ConversationID
  Daraja gave our request, carries a receipt, and its amount is the amount sent (and, for a
  payout, the recipient's number, when shown, is the number paid). A failure settles it
  only when it names that ConversationID. Anything less (the answer to our request was lost,
  so the id cannot be checked; no receipt; no amount) is kept as evidence and Transaction
  Status settles the transfer.
- Paying twice is the failure that costs money here: a payout is never ``failed`` unless
  Daraja's own ids or Transaction Status say so, a refusal after an earlier send proves
  nothing (so it never rejects), and a payout whose outcome stays unknown past the deadline
  stays ``unknown`` and is flagged for a person, never failed.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from pesa.ledger._states import CodeLookup, DecisionKind, phones_match

__all__ = [
    "PAYOUT_COMMANDS",
    "STATUS_FAILED_WORDS",
    "STATUS_SUCCEEDED_WORDS",
    "TERMINAL_TRANSFER_STATUSES",
    "TransferAccepted",
    "TransferDecision",
    "TransferEvent",
    "TransferExpired",
    "TransferInput",
    "TransferKind",
    "TransferNotFound",
    "TransferOutcomeUnknown",
    "TransferRefused",
    "TransferResult",
    "TransferState",
    "TransferStatus",
    "TransferTimedOut",
    "decide_transfer",
    "is_placeholder_receipt",
    "status_outcome",
    "transfer_outcome",
]

PAYOUT_COMMANDS = ("BusinessPayment", "SalaryPayment", "PromotionPayment")
"""B2C ``CommandID`` values (Daraja reference §8.1)."""

TransferKind: TypeAlias = Literal["payout", "refund"]
"""A B2C payout, or a reversal of a customer's payment (a refund)."""


class TransferStatus(StrEnum):
    """Where a payout or a refund is in its lifecycle."""

    CREATED = "created"
    """Committed; its request may or may not have left yet."""
    PENDING = "pending"
    """Daraja accepted the request (we hold its ConversationID); no final Result yet."""
    SUCCEEDED = "succeeded"
    """The money moved (a cross-checked Result, or Transaction Status)."""
    FAILED = "failed"
    """Daraja carried the request out and it failed: no money moved."""
    REJECTED = "rejected"
    """Daraja refused the only request ever sent: nothing was processed."""
    UNKNOWN = "unknown"
    """The request may have been carried out: settled by Transaction Status (or a person)."""


TERMINAL_TRANSFER_STATUSES: frozenset[TransferStatus] = frozenset(
    {TransferStatus.SUCCEEDED, TransferStatus.FAILED, TransferStatus.REJECTED}
)


class TransferEvent(StrEnum):
    """What a transition announces; the outbox writes ``payout.<event>``/``refund.<event>``."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    FLAGGED = "flagged"
    UPDATED = "updated"
    """The record was completed (a late Result's receipt and recipient after a status answer)."""
    CORRECTED = "corrected"
    """Daraja says a transfer recorded as failed or rejected did move money."""


# -- inputs -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferAccepted:
    """Daraja's synchronous answer: accepted, with its ids."""

    conversation_id: str
    originator_conversation_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRefused:
    """Daraja answered the request with an error that proves *this* request was not processed.

    Attributes:
        duplicate: the refusal is ``Duplicate OriginatorConversationID``: an earlier send
            with this id reached Daraja (B2C v3).
    """

    error_code: str | None
    error_message: str
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class TransferOutcomeUnknown:
    """The request may have left but no usable answer came (timeout, an ambiguous 5xx)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TransferTimedOut:
    """A call to our QueueTimeOutURL: the request timed out in M-Pesa's queue (undocumented
    payload, REFERENCE §14.5), so whether it was carried out is unknown."""


@dataclass(frozen=True, slots=True)
class TransferNotFound:
    """Transaction Status answered ``2032``: Daraja has no transaction for this id (yet)."""


@dataclass(frozen=True, slots=True)
class TransferExpired:
    """The deadline passed with no final answer: stop asking, flag for a person."""


@dataclass(frozen=True, slots=True)
class TransferResult:
    """A ``Result`` callback of the request, or a Transaction Status answer about it.

    Attributes:
        result_code: ``ResultCode`` as a string (``"0"`` for success). For a status answer,
            the status query's own code (``"0"``: the transaction was found).
        conversation_id: the ``ConversationID`` the Result names (for a status answer, the
            original transaction's, when reported).
        originator_conversation_id: the ``OriginatorConversationID`` it names.
        receipt: the M-Pesa receipt of the transfer (never a placeholder such as
            ``OAK0000000``).
        amount: the amount Daraja reports moved.
        counterparty: the other side's public name (``ReceiverPartyPublicName``,
            ``CreditPartyPublicName``): ``"254708374149 - JOHN DOE"``.
        completed_at: when M-Pesa completed it.
        original_receipt: for a reversal, the receipt it reverses (``OriginalTransactionID``).
        transaction_status: for a status answer, ``TransactionStatus`` (``Completed``...).
        source: ``"callback"`` (evidence) or ``"status"`` (Transaction Status, authoritative).
    """

    result_code: str
    result_desc: str = ""
    conversation_id: str | None = None
    originator_conversation_id: str | None = None
    receipt: str | None = None
    amount: Decimal | None = None
    counterparty: str | None = None
    completed_at: datetime | None = None
    original_receipt: str | None = None
    transaction_status: str | None = None
    source: Literal["callback", "status"] = "callback"

    @property
    def is_success(self) -> bool:
        """For a Result: ``ResultCode`` 0. For a status answer: found and completed."""
        if self.result_code.strip() != "0":
            return False
        return self.source == "callback" or status_outcome(self.transaction_status) == "succeeded"


TransferInput: TypeAlias = (
    TransferAccepted
    | TransferRefused
    | TransferOutcomeUnknown
    | TransferTimedOut
    | TransferNotFound
    | TransferExpired
    | TransferResult
)

STATUS_SUCCEEDED_WORDS = frozenset({"completed", "reversed"})
"""``TransactionStatus`` values meaning the money moved (REFERENCE §8.5; ``Reversed``: it
moved and was later given back)."""
STATUS_FAILED_WORDS = frozenset({"cancelled", "canceled", "declined", "expired", "failed"})
"""``TransactionStatus`` values that are final without money moving (REFERENCE §8.5)."""


def status_outcome(status: str | None) -> Literal["succeeded", "failed", "pending"]:
    """What a Transaction Status ``TransactionStatus`` word means (anything else: pending)."""
    word = (status or "").strip().lower()
    if word in STATUS_SUCCEEDED_WORDS:
        return "succeeded"
    if word in STATUS_FAILED_WORDS:
        return "failed"
    return "pending"


_PLACEHOLDER = re.compile(r"^(?:[A-Z]{0,3}0+|X+|0+)$")


def is_placeholder_receipt(value: str | None) -> bool:
    """``OAK0000000``, ``XXXXXXXXXX``, empty: what failed Results carry instead of a receipt."""
    return value is None or not value.strip() or bool(_PLACEHOLDER.match(value.strip().upper()))


# -- state and decisions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransferState:
    """The part of a payout or refund the state machine needs.

    Attributes:
        attempts: requests sent so far (counted before each send).
        ids_verified: ``False`` while the ConversationID was learnt from a callback.
        evidence: a Result kept as evidence, not yet settled by Transaction Status.
        verifying: a status check has been asked for.
        expired: the deadline passed (no more automatic checks).
        phone: for a payout, the number paid (checked against the Result's recipient).
    """

    status: TransferStatus
    amount: int
    attempts: int = 0
    originator_conversation_id: str | None = None
    conversation_id: str | None = None
    ids_verified: bool = True
    receipt: str | None = None
    result_code: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    evidence: TransferResult | None = None
    evidence_id: str | None = None
    verifying: bool = False
    expired: bool = False
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class TransferDecision:
    """What an input does to a transfer.

    Attributes:
        kind: applied, unverified, refused, noop, duplicate or ignored (as for payments).
        status: the status after the input.
        events: events to write, in order, with ``changes``.
        changes: column values to write.
        detail: a short explanation (logged, stored with callbacks, in events).
        verify: ask Transaction Status now (``verify_at``).
        keep_evidence: the input (a stored callback) becomes the transfer's evidence.
        resend: send the request again with the same OriginatorConversationID (payouts
            only): Daraja refuses it as a duplicate if an earlier send arrived.
    """

    kind: DecisionKind
    status: TransferStatus
    events: tuple[TransferEvent, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    verify: bool = False
    keep_evidence: bool = False
    resend: bool = False

    @property
    def writes(self) -> bool:
        """``True`` when the row must be written (applied, or evidence kept, or a resend)."""
        return (
            self.kind in (DecisionKind.APPLIED, DecisionKind.UNVERIFIED, DecisionKind.REFUSED)
            or self.resend
        )


_SETTLED: dict[str, Any] = {"evidence_callback_id": None, "verify_at": None, "verify_since": None}
"""Changes that close every open question (evidence, verification)."""

_OPEN = (TransferStatus.CREATED, TransferStatus.PENDING, TransferStatus.UNKNOWN)


def decide_transfer(
    state: TransferState,
    event: TransferInput,
    *,
    kind: TransferKind = "payout",
    lookup: CodeLookup | None = None,
    resend: bool = False,
    max_sends: int = 3,
) -> TransferDecision:
    """Decide what ``event`` does to a payout or refund in ``state``.

    Args:
        state: the transfer as stored, with its unsettled evidence.
        event: Daraja's answer, a Result, a queue timeout, a status answer, the deadline.
        kind: ``"payout"`` (its OriginatorConversationID is ours and stable, so it may be
            re-sent) or ``"refund"`` (a reversal: never re-sent).
        lookup: the initiator result-code catalogue; a code it calls not final is never
            applied as a failure (Transaction Status decides).
        resend: whether a payout Daraja does not know (status ``2032``) and that nothing
            else accounts for may be sent again (same OriginatorConversationID).
        max_sends: the most requests one payout may send in all.

    Returns:
        A :class:`TransferDecision`; never raises for a valid input.
    """
    if isinstance(event, TransferAccepted):
        return _on_accepted(state, event)
    if isinstance(event, TransferRefused):
        return _on_refused(state, event)
    if isinstance(event, TransferOutcomeUnknown):
        if state.status is TransferStatus.CREATED:
            return _to_unknown(event.reason, "no answer to the request: settled by status")
        if state.status is TransferStatus.UNKNOWN:
            return TransferDecision(DecisionKind.DUPLICATE, state.status, detail="already unknown")
        return _ignored(state, "no answer")
    if isinstance(event, TransferTimedOut):
        return _on_timed_out(state)
    if isinstance(event, TransferNotFound):
        return _on_not_found(state, kind, resend, max_sends)
    if isinstance(event, TransferExpired):
        return _on_expired(state, kind)
    if isinstance(event, TransferResult):
        if event.source == "status":
            return _on_status(state, event, kind)
        return _on_callback(state, event, kind, lookup)
    raise TypeError(f"not a transfer input: {event!r}")  # pragma: no cover - typing forbids it


def transfer_outcome(
    decision: TransferDecision,
) -> Literal["applied", "unverified", "invalid", "duplicate", "ignored"]:
    """The outcome stored with the Result (or status answer) a decision came from."""
    kind = decision.kind
    if kind is DecisionKind.APPLIED:
        return "applied"
    if kind is DecisionKind.UNVERIFIED:
        return "unverified"
    if kind is DecisionKind.REFUSED:
        return "invalid"
    if kind is DecisionKind.DUPLICATE:
        return "duplicate"
    return "ignored"


def _ignored(state: TransferState, what: str) -> TransferDecision:
    return TransferDecision(
        DecisionKind.IGNORED, state.status, detail=f"{what} while {state.status}"
    )


def _to_unknown(reason: str, detail: str) -> TransferDecision:
    return TransferDecision(
        DecisionKind.APPLIED,
        TransferStatus.UNKNOWN,
        (TransferEvent.UNKNOWN,),
        {"status": TransferStatus.UNKNOWN, "failure_reason": reason},
        detail,
        verify=True,
    )


def _on_accepted(state: TransferState, event: TransferAccepted) -> TransferDecision:
    status = state.status
    if status in (TransferStatus.CREATED, TransferStatus.UNKNOWN):
        recorded = state.conversation_id
        if recorded not in (None, event.conversation_id) and state.ids_verified:
            return _ignored(state, "another ConversationID is recorded; accepted")
        changes: dict[str, Any] = {
            "status": TransferStatus.PENDING,
            "conversation_id": event.conversation_id,
            "ids_verified": True,
            "failure_reason": None,
        }
        if event.originator_conversation_id and not state.originator_conversation_id:
            changes["originator_conversation_id"] = event.originator_conversation_id
        detail = "accepted by Daraja"
        if recorded is not None and recorded != event.conversation_id:
            # The ids a callback gave were not this request's: its evidence is about another.
            changes.update(_SETTLED)
            detail += "; the ConversationID learnt from a callback is replaced"
        return TransferDecision(
            DecisionKind.APPLIED, TransferStatus.PENDING, (TransferEvent.PENDING,), changes, detail
        )
    if state.conversation_id == event.conversation_id:
        return TransferDecision(DecisionKind.DUPLICATE, status, detail="already accepted")
    return _ignored(state, "accepted")


def _on_refused(state: TransferState, event: TransferRefused) -> TransferDecision:
    status = state.status
    code = event.error_code or "refused"
    if event.duplicate:
        # Daraja already holds a request with this OriginatorConversationID: an earlier send
        # arrived. Whatever it did, Transaction Status will tell; this send did nothing.
        if status is TransferStatus.CREATED:
            return _to_unknown(
                f"Daraja refused a re-send as a duplicate [{code}]: an earlier send arrived",
                "an earlier send reached Daraja: settled by Transaction Status",
            )
        return TransferDecision(
            DecisionKind.NOOP,
            status,
            detail=f"re-send refused as a duplicate [{code}]: the first send reached Daraja",
            verify=status in (TransferStatus.UNKNOWN, TransferStatus.PENDING),
        )
    if status is TransferStatus.CREATED and state.attempts <= 1 and state.conversation_id is None:
        return TransferDecision(
            DecisionKind.APPLIED,
            TransferStatus.REJECTED,
            (TransferEvent.REJECTED,),
            {
                "status": TransferStatus.REJECTED,
                "result_code": event.error_code,
                "result_desc": event.error_message,
                "failure_reason": event.error_message,
            },
            f"rejected by Daraja [{code}]",
        )
    if status is TransferStatus.CREATED:
        # A re-send was refused, but an earlier send may have been carried out.
        return _to_unknown(
            f"a re-send was refused [{code}] {event.error_message}; an earlier send may have "
            "been carried out",
            "re-send refused; an earlier send may have arrived: settled by Transaction Status",
        )
    if status is TransferStatus.REJECTED:
        return TransferDecision(DecisionKind.DUPLICATE, status, detail="already rejected")
    return TransferDecision(
        DecisionKind.NOOP,
        status,
        detail=f"a re-send was refused [{code}]: it proves nothing about the first",
    )


def _on_timed_out(state: TransferState) -> TransferDecision:
    if state.status in (TransferStatus.CREATED, TransferStatus.PENDING):
        return _to_unknown(
            "the request timed out in M-Pesa's queue (QueueTimeOutURL)",
            "queue timeout: settled by Transaction Status",
        )
    if state.status is TransferStatus.UNKNOWN:
        return TransferDecision(
            DecisionKind.DUPLICATE, state.status, detail="already unknown", verify=True
        )
    return _ignored(state, "queue timeout")


def _on_not_found(
    state: TransferState, kind: TransferKind, resend: bool, max_sends: int
) -> TransferDecision:
    status = state.status
    evidence = state.evidence
    if status is TransferStatus.UNKNOWN:
        if evidence is not None and not evidence.is_success:
            # A failure Result we could not check, and Daraja has no transaction by this id:
            # both say no money moved.
            return _fail(
                state,
                evidence,
                None,
                (),
                "failed: a failure Result, and Transaction Status finds no transaction",
            )
        may_resend = (
            kind == "payout"
            and resend
            and state.attempts < max_sends
            and evidence is None
            # Daraja accepted this id before (a queue timeout made it unknown): it has it.
            and not (state.conversation_id is not None and state.ids_verified)
        )
        if may_resend:
            return TransferDecision(
                DecisionKind.NOOP,
                status,
                detail="Daraja has no transaction by this id: sent again with the same "
                "OriginatorConversationID (a duplicate if the first arrived)",
                resend=True,
            )
        return TransferDecision(
            DecisionKind.NOOP, status, detail="Daraja has no transaction by this id yet"
        )
    if status is TransferStatus.PENDING:
        return TransferDecision(
            DecisionKind.NOOP, status, detail="Daraja has no completed transaction by this id yet"
        )
    if status in (TransferStatus.FAILED, TransferStatus.REJECTED) and state.verifying:
        # A success Result for a failed transfer: Daraja has no such transaction.
        detail = "a success Result was reported, but Transaction Status finds no transaction"
        if evidence is not None and evidence.is_success:
            return _close(_flag(state, f"{detail}{_named(state.evidence_id)}"), state)
        return _close(TransferDecision(DecisionKind.DUPLICATE, status, detail=detail), state)
    return _ignored(state, "a status answer")


def _on_expired(state: TransferState, kind: TransferKind) -> TransferDecision:
    if state.status not in _OPEN and not state.verifying:
        return _ignored(state, "deadline")
    if state.status not in _OPEN:
        # A settled transfer whose contrary evidence Daraja never confirmed.
        reason = (
            f"a Result{_named(state.evidence_id)} contradicting this {state.status} {kind} "
            "could not be confirmed by Daraja: verify against the M-Pesa statement"
        )
        flag = _flag(state, reason)
        return dataclasses.replace(flag, changes={**flag.changes, **_SETTLED})
    what = "paid" if kind == "payout" else "refunded"
    reason = (
        f"no final answer from Daraja before the deadline: the money may have been {what}; "
        f"verify against the M-Pesa statement before sending it again"
    )
    changes: dict[str, Any] = {
        "status": TransferStatus.UNKNOWN,
        "flagged": True,
        "flag_reason": _join_flag(state, reason),
        "failure_reason": "no final answer before the deadline",
        **_SETTLED,
    }
    events: tuple[TransferEvent, ...] = (TransferEvent.FLAGGED,)
    if state.status is not TransferStatus.UNKNOWN:
        events = (TransferEvent.UNKNOWN, TransferEvent.FLAGGED)
    return TransferDecision(
        DecisionKind.APPLIED, TransferStatus.UNKNOWN, events, changes, f"expired: {reason}"
    )


# -- Results --------------------------------------------------------------------------------


def _ids_confirmed(state: TransferState, result: TransferResult) -> bool:
    """The Result names the ConversationID Daraja's own answer gave this request."""
    return (
        state.ids_verified
        and state.conversation_id is not None
        and result.conversation_id == state.conversation_id
    )


def _recipient_number(counterparty: str | None) -> str | None:
    # "254708374149 - JOHN DOE" or "0712345678 - FIRST LAST"; anything else is not parsed.
    if not counterparty:
        return None
    head = counterparty.split(" - ", 1)[0].strip()
    return head if re.fullmatch(r"[0-9*]{9,13}", head) else None


def _mismatches(state: TransferState, result: TransferResult, kind: TransferKind) -> list[str]:
    reasons = []
    if result.amount is not None and not _same_amount(result.amount, state.amount):
        reasons.append(f"amount {result.amount} differs from the {state.amount} sent")
    if kind == "payout" and state.phone is not None:
        number = _recipient_number(result.counterparty)
        if number is not None and not phones_match(state.phone, number):
            reasons.append("the recipient's number differs from the one paid")
    if (
        result.originator_conversation_id is not None
        and state.originator_conversation_id is not None
        and result.originator_conversation_id != state.originator_conversation_id
    ):
        reasons.append("its OriginatorConversationID is not this request's")
    return reasons


def _unverifiable(state: TransferState, result: TransferResult) -> list[str]:
    problems = []
    if not _ids_confirmed(state, result):
        if state.conversation_id is None or not state.ids_verified:
            problems.append("Daraja's answer was lost: its ConversationID cannot be checked")
        else:
            problems.append("it does not name the ConversationID Daraja gave the request")
    if result.is_success:
        if result.receipt is None:
            problems.append("no receipt")
        if result.amount is None:
            problems.append("no amount")
    return problems


def _on_callback(
    state: TransferState, result: TransferResult, kind: TransferKind, lookup: CodeLookup | None
) -> TransferDecision:
    status = state.status
    code = result.result_code.strip()
    if (
        state.ids_verified
        and state.conversation_id is not None
        and result.conversation_id is not None
        and result.conversation_id != state.conversation_id
    ):
        return TransferDecision(
            DecisionKind.REFUSED,
            status,
            detail="its ConversationID is not the one Daraja gave this request: not applied",
        )
    if status in _OPEN:
        if result.is_success:
            mismatches = _mismatches(state, result, kind)
            problems = _unverifiable(state, result)
            if not mismatches and not problems:
                return _succeed(state, result, "paid" if kind == "payout" else "refunded")
            if mismatches:
                return TransferDecision(
                    DecisionKind.REFUSED,
                    status,
                    detail="success Result contradicts the request: "
                    + "; ".join([*mismatches, *problems])
                    + "; Transaction Status settles it",
                    verify=True,
                    keep_evidence=True,
                )
            return TransferDecision(
                DecisionKind.UNVERIFIED,
                status,
                detail=f"success not confirmed ({'; '.join(problems)}): Transaction Status "
                "settles it",
                verify=True,
                keep_evidence=True,
            )
        info = None if lookup is None else lookup(code)
        if info is not None and not info.final:
            return TransferDecision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} is not final ({info.meaning}): Transaction Status "
                "settles it",
                verify=True,
            )
        if _ids_confirmed(state, result) and state.evidence is None:
            return _fail(state, result, info, (), f"failed: {_reason(result, info)}")
        if state.evidence is not None:
            return TransferDecision(
                DecisionKind.NOOP,
                status,
                detail=f"result code {code} not applied: evidence awaits Transaction Status",
                verify=True,
            )
        return TransferDecision(
            DecisionKind.UNVERIFIED,
            status,
            detail=f"failure [{code}] not confirmed ({'; '.join(_unverifiable(state, result))}):"
            " Transaction Status settles it",
            verify=True,
            keep_evidence=True,
        )
    if status is TransferStatus.SUCCEEDED:
        return _after_success(state, result)
    if status in (TransferStatus.FAILED, TransferStatus.REJECTED):
        if result.is_success:
            # Whoever holds the ResultURL token could send this: only Transaction Status
            # may turn a failed transfer into a successful one.
            return TransferDecision(
                DecisionKind.UNVERIFIED,
                status,
                detail=f"success reported for a {status} {kind}: Transaction Status settles it",
                verify=True,
                keep_evidence=True,
            )
        return TransferDecision(DecisionKind.DUPLICATE, status, detail=f"already {status}")
    return _ignored(state, "a Result")  # pragma: no cover - every status is handled


def _after_success(state: TransferState, result: TransferResult) -> TransferDecision:
    if not result.is_success:
        return _flag(state, f"result code {result.result_code} reported after success")
    if result.receipt is not None and result.receipt == state.receipt:
        return TransferDecision(DecisionKind.DUPLICATE, state.status, detail="already succeeded")
    if state.receipt is not None:
        if result.receipt is None:
            return TransferDecision(
                DecisionKind.DUPLICATE, state.status, detail="already succeeded"
            )
        return _flag(state, f"second success with a different receipt {result.receipt}")
    # Transaction Status settled it without a receipt: a matching Result completes the record.
    changes = _details(result)
    if not changes:
        return TransferDecision(DecisionKind.DUPLICATE, state.status, detail="already succeeded")
    return TransferDecision(
        DecisionKind.APPLIED,
        state.status,
        (TransferEvent.UPDATED,),
        changes,
        "receipt and details recorded from the Result",
    )


# -- Transaction Status -----------------------------------------------------------------------


def _on_status(
    state: TransferState, result: TransferResult, kind: TransferKind
) -> TransferDecision:
    status = state.status
    outcome = status_outcome(result.transaction_status) if result.result_code == "0" else "pending"
    if outcome == "pending":
        return TransferDecision(
            DecisionKind.NOOP,
            status,
            detail=f"Transaction Status: {result.transaction_status or 'no final status'} yet",
        )
    if (
        result.originator_conversation_id is not None
        and state.originator_conversation_id is not None
        and result.originator_conversation_id != state.originator_conversation_id
    ):
        return _flag(
            state,
            "Transaction Status answered about another request "
            f"(OriginatorConversationID {result.originator_conversation_id})",
        )
    if outcome == "succeeded":
        if status in _OPEN:
            return _succeed_by_status(state, result, (TransferEvent.SUCCEEDED,), kind)
        if status in (TransferStatus.FAILED, TransferStatus.REJECTED):
            decision = _succeed_by_status(
                state, result, (TransferEvent.SUCCEEDED, TransferEvent.CORRECTED), kind
            )
            reason = (
                f"recorded {status} earlier, but Daraja says it was carried out: make sure it "
                "was not sent again"
            )
            return _with_flag(decision, state, reason)
        if result.receipt is not None and state.receipt not in (None, result.receipt):
            return _close(
                _flag(state, f"Transaction Status reports another receipt {result.receipt}"),
                state,
            )
        if state.receipt is None and _details(result):
            return _close(
                TransferDecision(
                    DecisionKind.APPLIED,
                    status,
                    (TransferEvent.UPDATED,),
                    _details(result),
                    "receipt recorded from Transaction Status",
                ),
                state,
            )
        return _close(
            TransferDecision(DecisionKind.DUPLICATE, status, detail="already succeeded"), state
        )
    # Daraja says the transaction ended without money moving.
    if status in _OPEN:
        flags: tuple[str, ...] = ()
        if state.evidence is not None and state.evidence.is_success:
            flags = (
                f"a Result{_named(state.evidence_id)} reported success, but Transaction Status "
                f"says {result.transaction_status}",
            )
        return _fail(
            state,
            result,
            None,
            flags,
            f"failed: Transaction Status says {result.transaction_status}",
        )
    if status is TransferStatus.SUCCEEDED:
        return _close(
            _flag(state, f"Transaction Status says {result.transaction_status} after success"),
            state,
        )
    return _close(
        TransferDecision(DecisionKind.DUPLICATE, status, detail=f"already {status}"), state
    )


# -- helpers ------------------------------------------------------------------------------------


def _reason(result: TransferResult, info: Any) -> str:
    known = info.meaning if info is not None and getattr(info, "known", False) else None
    if result.source == "status":
        return f"Transaction Status says {result.transaction_status}"
    return known or result.result_desc or f"result code {result.result_code.strip()}"


def _details(result: TransferResult) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if result.receipt is not None:
        changes["receipt"] = result.receipt
    if result.amount is not None:
        changes["paid_amount"] = result.amount
    if result.counterparty is not None:
        changes["counterparty"] = result.counterparty
    if result.completed_at is not None:
        changes["completed_at"] = result.completed_at
    return changes


def _succeed(state: TransferState, result: TransferResult, detail: str) -> TransferDecision:
    changes: dict[str, Any] = {
        "status": TransferStatus.SUCCEEDED,
        "result_code": "0",
        "result_desc": result.result_desc,
        "failure_reason": None,
        **_details(result),
        **_SETTLED,
    }
    decision = TransferDecision(
        DecisionKind.APPLIED, TransferStatus.SUCCEEDED, (TransferEvent.SUCCEEDED,), changes, detail
    )
    evidence = state.evidence
    if evidence is not None and evidence.receipt and evidence.receipt != result.receipt:
        return _with_flag(
            decision,
            state,
            f"an earlier Result{_named(state.evidence_id)} reported receipt {evidence.receipt}, "
            f"this one {result.receipt}",
        )
    return decision


def _succeed_by_status(
    state: TransferState,
    result: TransferResult,
    events: tuple[TransferEvent, ...],
    kind: TransferKind,
) -> TransferDecision:
    """Transaction Status says it was carried out; the evidence completes the record or flags."""
    changes: dict[str, Any] = {
        "status": TransferStatus.SUCCEEDED,
        "result_code": "0",
        "result_desc": f"Transaction Status: {result.transaction_status}",
        "failure_reason": None,
        "ids_verified": True,
        **_SETTLED,
    }
    flags: list[str] = []
    evidence = state.evidence
    if evidence is not None and evidence.is_success:
        changes.update(_details(evidence))
        if evidence.receipt and result.receipt and evidence.receipt != result.receipt:
            flags.append(
                f"the Result{_named(state.evidence_id)} reported receipt {evidence.receipt}, "
                f"Transaction Status {result.receipt}"
            )
        mismatches = _mismatches(state, evidence, kind)
        if mismatches:
            flags.append(
                f"the Result{_named(state.evidence_id)} disagrees with the request: "
                + "; ".join(mismatches)
            )
    details = _details(result)
    if "counterparty" in details and "counterparty" in changes:
        del details["counterparty"]  # the Result names the recipient better than the status
    changes.update(details)
    if result.amount is not None and not _same_amount(result.amount, state.amount):
        flags.append(f"Daraja reports {result.amount} moved, {state.amount} was asked")
    if status_outcome(result.transaction_status) == "succeeded" and (
        (result.transaction_status or "").strip().lower() == "reversed"
    ):
        flags.append("Transaction Status says it was reversed since")
    decision = TransferDecision(
        DecisionKind.APPLIED,
        TransferStatus.SUCCEEDED,
        events,
        changes,
        "carried out (Transaction Status)",
    )
    for reason in flags:
        decision = _with_flag(decision, state, reason)
    return decision


def _fail(
    state: TransferState,
    result: TransferResult,
    info: Any,
    flags: tuple[str, ...],
    detail: str,
) -> TransferDecision:
    changes: dict[str, Any] = {
        "status": TransferStatus.FAILED,
        "result_code": result.result_code.strip()
        if result.source == "callback"
        else (result.transaction_status or "failed")[:32],
        "result_desc": result.result_desc,
        "failure_reason": _reason(result, info),
        **_SETTLED,
    }
    decision = TransferDecision(
        DecisionKind.APPLIED, TransferStatus.FAILED, (TransferEvent.FAILED,), changes, detail
    )
    for reason in flags:
        decision = _with_flag(decision, state, reason)
    return decision


def _with_flag(decision: TransferDecision, state: TransferState, reason: str) -> TransferDecision:
    current = decision.changes.get("flag_reason", state.flag_reason)
    flagged = decision.changes.get("flagged", state.flagged)
    joined = _join(flagged, current, reason)
    events = decision.events
    if TransferEvent.FLAGGED not in events:
        events = (*events, TransferEvent.FLAGGED)
    return dataclasses.replace(
        decision,
        events=events,
        changes={**decision.changes, "flagged": True, "flag_reason": joined},
        detail=f"{decision.detail}; flagged: {reason}",
    )


def _flag(state: TransferState, reason: str) -> TransferDecision:
    if state.flagged and state.flag_reason is not None and reason in state.flag_reason:
        return TransferDecision(DecisionKind.DUPLICATE, state.status, detail=reason)
    return TransferDecision(
        DecisionKind.APPLIED,
        state.status,
        (TransferEvent.FLAGGED,),
        {"flagged": True, "flag_reason": _join_flag(state, reason)},
        reason,
    )


def _close(decision: TransferDecision, state: TransferState) -> TransferDecision:
    """A final status answer closes any open question (evidence, verification)."""
    if decision.kind is DecisionKind.DUPLICATE:
        if not (state.verifying or state.evidence is not None):
            return decision
        return TransferDecision(
            DecisionKind.APPLIED,
            decision.status,
            (),
            dict(_SETTLED),
            f"{decision.detail}; verification closed",
        )
    return dataclasses.replace(decision, changes={**decision.changes, **_SETTLED})


def _join(flagged: bool, current: str | None, reason: str) -> str:
    if flagged and current and reason not in current:
        return f"{current}; {reason}"
    return current if flagged and current else reason


def _join_flag(state: TransferState, reason: str) -> str:
    # Flags accumulate: a second disagreement never hides the first.
    return _join(state.flagged, state.flag_reason, reason)


def _named(callback_id: str | None) -> str:
    return f" ({callback_id})" if callback_id else ""


def _same_amount(reported: Decimal, requested: int) -> bool:
    try:
        return Decimal(reported) == Decimal(requested)
    except (InvalidOperation, TypeError):  # pragma: no cover - parsers give numbers
        return False
