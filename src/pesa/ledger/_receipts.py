"""The C2B receipt and expected-payment state machines, as pure code (no I/O, no clock).

A customer pays a PayBill or a Till from the phone's menu; Daraja POSTs a *confirmation* to
the URL the business registered. The ledger records each as a **receipt**, keyed by its
M-Pesa receipt number (``TransID``), and matches it to an **expected payment** (an invoice
or an order: "I expect KES X for account reference R") by the account number the customer
typed (``BillRefNumber``).

Who may say that money came in (DESIGN.md, "Trust"; the rules of :mod:`._states` applied to
receipts):

- Daraja signs nothing. A confirmation is *evidence*: whoever holds the confirmation URL (its
  secret path token) can send one, and an old one can be replayed. It creates a receipt,
  ``received``; it never makes an expected payment paid on its own.
- Daraja's Transaction Status answer is authoritative. It arrives at a one-time ResultURL
  whose secret no registration ever showed; when it reports the receipt ``Completed`` with
  the confirmation's amount, the receipt is ``confirmed`` and counts towards its expected
  payment. When it says the receipt does not exist (``2032``), or reports another amount, the
  receipt is ``refuted`` and flagged: it never counts.
- An account without an initiator cannot ask Transaction Status. Its receipts are
  ``unverified``: they count (money the merchant cannot verify is still shown), but the
  expected payment they settle is flagged, unless verification is switched off
  (``never``: the merchant accepts the risk, and no flag is raised).
- The same ``TransID`` is applied once: a repeat is a duplicate; a repeat that disagrees
  (another amount, another account number) is a flag, never a second receipt.
- A second source that agrees completes the record (a confirmation arriving after a lookup
  fills in the account number); only a real disagreement is a flag.

Expected payments move by the money their receipts add up to::

    open ──receipts < amount──> partially_paid ──receipts = amount──> paid
      │                                         └──receipts > amount──> overpaid
      └──cancelled by the merchant──> cancelled (money arriving later is flagged)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from pesa.ledger._states import DecisionKind

__all__ = [
    "COMPLETED",
    "NOT_FOUND_CODES",
    "Confirmation",
    "ExpectedDecision",
    "ExpectedEvent",
    "ExpectedState",
    "ExpectedStatus",
    "MatchCandidate",
    "Pulled",
    "ReceiptDecision",
    "ReceiptEvent",
    "ReceiptInput",
    "ReceiptState",
    "ReceiptStatus",
    "StatusAnswer",
    "Tally",
    "Cancel",
    "VerificationAbandoned",
    "VerifyPolicy",
    "choose_expected",
    "counts",
    "decide_expected",
    "decide_receipt",
    "new_receipt",
    "receipt_outcome",
    "reference_key",
    "tally_status",
]

VerifyPolicy: TypeAlias = Literal["auto", "always", "never"]
"""Whether confirmations are checked with Transaction Status before they count:
``auto`` (when the account has an initiator; otherwise they count, flagged unverified),
``always`` (every account must have an initiator) or ``never`` (confirmations count as is)."""

COMPLETED = "Completed"
"""Transaction Status' word for a transaction that went through (REFERENCE §8.5)."""

NOT_FOUND_CODES: frozenset[str] = frozenset({"2032"})
"""Transaction Status result codes that say the receipt does not exist (REFERENCE §8.5)."""


class ReceiptStatus(StrEnum):
    """Where a receipt stands: how far what it says about money is known to be true."""

    RECEIVED = "received"
    """A confirmation was recorded; Daraja's Transaction Status is asked to confirm it."""
    CONFIRMED = "confirmed"
    """Daraja's Transaction Status confirmed it (or a lookup found it): it counts."""
    UNVERIFIED = "unverified"
    """Recorded from a confirmation Daraja cannot be asked about (no initiator, or
    verification off): it counts; under ``auto`` what it settles is flagged."""
    REFUTED = "refuted"
    """Daraja says no such receipt exists, or reports other facts: it never counts."""


class ReceiptEvent(StrEnum):
    """The events of receipts (the outbox for webhooks and handlers)."""

    RECEIVED = "receipt.received"
    """A new receipt was recorded (from a confirmation, or found by a lookup)."""
    CONFIRMED = "receipt.confirmed"
    """Daraja's Transaction Status confirmed the receipt: act on this one."""
    REFUTED = "receipt.refuted"
    """Daraja says the receipt does not exist or differs: possibly forged."""
    FLAGGED = "receipt.flagged"
    """Something about the receipt needs a person (a disagreeing repeat, no answer)."""
    UNMATCHED = "receipt.unmatched"
    """No expected payment has the receipt's account number (or it names none)."""
    UPDATED = "receipt.updated"
    """A later confirmation completed a receipt found by a lookup (account number, payer)."""
    MATCHED = "receipt.matched"
    """A receipt recorded earlier was matched to an expected payment created after it."""


class ExpectedStatus(StrEnum):
    """Where an expected payment stands."""

    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERPAID = "overpaid"
    CANCELLED = "cancelled"


class ExpectedEvent(StrEnum):
    """The events of expected payments."""

    PARTIALLY_PAID = "expected_payment.partially_paid"
    PAID = "expected_payment.paid"
    OVERPAID = "expected_payment.overpaid"
    CANCELLED = "expected_payment.cancelled"
    FLAGGED = "expected_payment.flagged"


_STATUS_EVENT = {
    ExpectedStatus.PARTIALLY_PAID: ExpectedEvent.PARTIALLY_PAID,
    ExpectedStatus.PAID: ExpectedEvent.PAID,
    ExpectedStatus.OVERPAID: ExpectedEvent.OVERPAID,
}
_OPEN = frozenset({ExpectedStatus.OPEN, ExpectedStatus.PARTIALLY_PAID})


# -- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a C2B confirmation says (evidence, not proof).

    Attributes:
        trans_id: ``TransID``, the M-Pesa receipt number (the receipt's key).
        amount: ``TransAmount``, in shillings.
        shortcode: ``BusinessShortCode`` (the PayBill or till paid).
        account_reference: ``BillRefNumber``, the account number the customer typed.
        msisdn: ``MSISDN`` as sent: masked (v2) or a SHA-256 hash (v1).
        trans_time: ``TransTime`` as an aware datetime.
    """

    trans_id: str
    amount: Decimal
    shortcode: str
    account_reference: str | None = None
    msisdn: str | None = None
    trans_time: datetime | None = None
    transaction_type: str | None = None
    invoice_number: str | None = None
    third_party_trans_id: str | None = None
    payer_name: str | None = None
    org_account_balance: Decimal | None = None


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """Daraja's Transaction Status result about one receipt (authoritative).

    Attributes:
        result_code: ``ResultCode`` as a string (``"0"``: found; ``"2032"``: no such receipt).
        amount: the ``Amount`` result parameter.
        transaction_status: ``TransactionStatus`` (``Completed``, ``Reversed``, ...).
        credit_party: ``CreditPartyName`` (``"600997 - Org"``: who was paid).
        debit_party: ``DebitPartyName`` (``"254708374149 - John Doe"``: who paid).
        receipt_no: ``ReceiptNo`` (or the Result's ``TransactionID``).
        finalised_at: ``FinalisedTime``.
    """

    result_code: str
    result_desc: str = ""
    amount: Decimal | None = None
    transaction_status: str | None = None
    credit_party: str | None = None
    debit_party: str | None = None
    receipt_no: str | None = None
    finalised_at: datetime | None = None

    @property
    def found(self) -> bool:
        """Daraja knows the receipt (``ResultCode`` 0)."""
        return self.result_code.strip() == "0"

    @property
    def not_found(self) -> bool:
        """Daraja says the receipt does not exist."""
        return self.result_code.strip() in NOT_FOUND_CODES


@dataclass(frozen=True, slots=True)
class Pulled:
    """One transaction of Daraja's Pull Transactions answer (authoritative, REFERENCE §8.9).

    M-Pesa's own record of a payment into the shortcode: a receipt it names is money that
    came, whether or not its confirmation ever did (a receipt first known this way is
    *recovered*).

    Attributes:
        trans_id: ``transactionId``, the M-Pesa receipt.
        amount: ``amount``.
        shortcode: the shortcode the query was about.
        account_reference: ``billreference``, the account number the customer typed.
        msisdn: ``msisdn`` as Daraja sent it.
        trans_time: ``trxDate``.
        payer_name: ``sender``.
        transaction_type: ``transactiontype``.
    """

    trans_id: str
    amount: Decimal
    shortcode: str
    account_reference: str | None = None
    msisdn: str | None = None
    trans_time: datetime | None = None
    payer_name: str | None = None
    transaction_type: str | None = None


@dataclass(frozen=True, slots=True)
class VerificationAbandoned:
    """No usable Transaction Status answer came within the verification deadline."""

    reason: str = ""


ReceiptInput: TypeAlias = Confirmation | StatusAnswer | Pulled | VerificationAbandoned


@dataclass(frozen=True, slots=True)
class ReceiptState:
    """The part of a receipt the state machine needs to decide."""

    status: ReceiptStatus
    trans_id: str
    amount: Decimal
    shortcode: str
    account_reference: str | None = None
    msisdn: str | None = None
    source: Literal["confirmation", "lookup", "pull"] = "confirmation"
    flagged: bool = False
    flag_reason: str | None = None
    verifying: bool = False


@dataclass(frozen=True, slots=True)
class ReceiptDecision:
    """What an input does to a receipt.

    Attributes:
        kind: applied, duplicate, noop or ignored (:class:`pesa.ledger.DecisionKind`).
        status: the status after the input.
        events: event types to write, in order.
        changes: column values to write on the receipt row.
        detail: a short explanation (logged, stored with the raw callback).
        verify: ask Daraja (Transaction Status) about this receipt.
        rematch: the receipt's account number changed: match it again.
    """

    kind: DecisionKind
    status: ReceiptStatus
    events: tuple[ReceiptEvent, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    verify: bool = False
    rematch: bool = False

    @property
    def applied(self) -> bool:
        """Whether the receipt changes."""
        return self.kind is DecisionKind.APPLIED


_SETTLED: dict[str, Any] = {"verify_at": None, "verify_since": None}


def _details(confirmation: Confirmation) -> dict[str, Any]:
    return {
        "amount": confirmation.amount,
        "account_reference": confirmation.account_reference,
        "msisdn": confirmation.msisdn,
        "trans_time": confirmation.trans_time,
        "transaction_type": confirmation.transaction_type,
        "invoice_number": confirmation.invoice_number,
        "third_party_trans_id": confirmation.third_party_trans_id,
        "payer_name": confirmation.payer_name,
        "org_account_balance": confirmation.org_account_balance,
    }


def _pulled_details(pulled: Pulled) -> dict[str, Any]:
    return {
        "amount": pulled.amount,
        "account_reference": pulled.account_reference,
        "msisdn": pulled.msisdn,
        "trans_time": pulled.trans_time,
        "transaction_type": pulled.transaction_type,
        "payer_name": pulled.payer_name,
    }


def new_receipt(
    source: Confirmation | StatusAnswer | Pulled,
    *,
    verifiable: bool,
    policy: VerifyPolicy = "auto",
) -> ReceiptDecision:
    """Decide what the first news of a ``TransID`` creates.

    A confirmation creates a ``received`` receipt when Daraja can be asked about it (the
    account has an initiator and ``policy`` is not ``never``) or must be (``always``), else
    an ``unverified`` one. A
    Transaction Status answer (a lookup) that found the receipt creates it ``confirmed``; one
    that did not creates nothing (``IGNORED``).
    """
    if isinstance(source, Pulled):
        # Daraja's own record of money that came, no confirmation for it: recovered.
        return ReceiptDecision(
            DecisionKind.APPLIED,
            ReceiptStatus.CONFIRMED,
            (ReceiptEvent.RECEIVED, ReceiptEvent.CONFIRMED),
            {"status": ReceiptStatus.CONFIRMED, "source": "pull", **_pulled_details(source)},
            "recovered by Pull Transactions: Daraja lists it, no confirmation ever came",
        )
    if isinstance(source, StatusAnswer):
        if not source.found or source.amount is None:
            return _ignored(f"Daraja did not confirm it (result code {source.result_code})")
        if not _completed(source):
            return _ignored(f"Daraja reports it {source.transaction_status}")
        return ReceiptDecision(
            DecisionKind.APPLIED,
            ReceiptStatus.CONFIRMED,
            (ReceiptEvent.RECEIVED, ReceiptEvent.CONFIRMED),
            {
                "status": ReceiptStatus.CONFIRMED,
                "amount": source.amount,
                "source": "lookup",
                "trans_time": source.finalised_at,
            },
            "found by a Transaction Status lookup: confirmed by Daraja",
        )
    if policy == "always" or (verifiable and policy != "never"):
        # Under "always" a receipt nobody can verify waits (flagged by the verifier), and
        # never counts: only Daraja's confirmation makes it money.
        return ReceiptDecision(
            DecisionKind.APPLIED,
            ReceiptStatus.RECEIVED,
            (ReceiptEvent.RECEIVED,),
            {"status": ReceiptStatus.RECEIVED, "source": "confirmation", **_details(source)},
            "recorded from the confirmation; Daraja's Transaction Status is asked to confirm it",
            verify=True,
        )
    why = (
        "verification is off (PESA_C2B_VERIFY=never)"
        if policy == "never"
        else "its account has no initiator to ask Transaction Status"
    )
    return ReceiptDecision(
        DecisionKind.APPLIED,
        ReceiptStatus.UNVERIFIED,
        (ReceiptEvent.RECEIVED,),
        {"status": ReceiptStatus.UNVERIFIED, "source": "confirmation", **_details(source)},
        f"recorded from the confirmation, unverified: {why}",
    )


def receipt_outcome(
    decision: ReceiptDecision,
) -> Literal["applied", "flagged", "duplicate", "ignored"]:
    """The outcome stored with the confirmation (or lookup) a decision came from."""
    if decision.kind is DecisionKind.APPLIED:
        if decision.events == (ReceiptEvent.FLAGGED,):
            return "flagged"
        return "applied"
    if decision.kind is DecisionKind.DUPLICATE:
        return "duplicate"
    return "ignored"


def _ignored(detail: str) -> ReceiptDecision:
    """An input that creates or changes nothing."""
    return ReceiptDecision(DecisionKind.IGNORED, ReceiptStatus.RECEIVED, detail=detail)


def decide_receipt(state: ReceiptState, event: ReceiptInput) -> ReceiptDecision:
    """Decide what ``event`` does to a receipt in ``state``.

    Never raises for a valid input type: an input that does not fit is ``IGNORED``, a repeat
    ``DUPLICATE``.
    """
    if isinstance(event, Confirmation):
        return _on_confirmation(state, event)
    if isinstance(event, StatusAnswer):
        return _on_status(state, event)
    if isinstance(event, Pulled):
        return _on_pulled(state, event)
    if isinstance(event, VerificationAbandoned):
        return _on_abandoned(state, event)
    raise TypeError(f"not a receipt input: {event!r}")  # pragma: no cover - typing forbids it


def _disagreements(state: ReceiptState, confirmation: Confirmation) -> list[str]:
    found = []
    if confirmation.amount != state.amount:
        found.append(f"amount {confirmation.amount} (recorded {state.amount})")
    if confirmation.shortcode != state.shortcode:
        found.append(f"shortcode {confirmation.shortcode} (recorded {state.shortcode})")
    if (
        state.account_reference is not None
        and confirmation.account_reference is not None
        and reference_key(confirmation.account_reference) != reference_key(state.account_reference)
    ):
        found.append(
            f"account number {confirmation.account_reference!r} "
            f"(recorded {state.account_reference!r})"
        )
    return found


def _on_confirmation(state: ReceiptState, confirmation: Confirmation) -> ReceiptDecision:
    status = state.status
    differs = _disagreements(state, confirmation)
    if differs:
        reason = f"another confirmation for {state.trans_id} disagrees: " + "; ".join(differs)
        return _flag(state, reason)
    if state.source == "lookup" and state.msisdn is None and confirmation.msisdn is not None:
        # The lookup found the money; the confirmation completes who paid and for what.
        changes = {
            k: v for k, v in _details(confirmation).items() if v is not None and k != "amount"
        }
        rematch = state.account_reference is None and confirmation.account_reference is not None
        return ReceiptDecision(
            DecisionKind.APPLIED,
            status,
            (ReceiptEvent.UPDATED,),
            changes,
            "the confirmation completes the receipt found by a lookup",
            rematch=rematch,
        )
    return ReceiptDecision(DecisionKind.DUPLICATE, status, detail="confirmation already recorded")


def _on_pulled(state: ReceiptState, pulled: Pulled) -> ReceiptDecision:
    """Pull Transactions lists a receipt the ledger has: it agrees, completes or disagrees."""
    status = state.status
    differs = []
    if pulled.amount != state.amount:
        differs.append(f"amount {pulled.amount} (recorded {state.amount})")
    if pulled.shortcode != state.shortcode:
        differs.append(f"shortcode {pulled.shortcode} (recorded {state.shortcode})")
    if differs:
        return _flag(
            state, f"Pull Transactions reports {state.trans_id} otherwise: " + "; ".join(differs)
        )
    if status is ReceiptStatus.REFUTED:
        return _flag(
            state,
            f"Pull Transactions lists {state.trans_id} although Transaction Status refuted it",
        )
    missing = {
        k: v
        for k, v in _pulled_details(pulled).items()
        if v is not None and k not in ("amount", "msisdn")
    }
    if status in (ReceiptStatus.RECEIVED, ReceiptStatus.UNVERIFIED):
        # Daraja's own record confirms the confirmation: it counts, nothing to ask any more.
        return ReceiptDecision(
            DecisionKind.APPLIED,
            ReceiptStatus.CONFIRMED,
            (ReceiptEvent.CONFIRMED,),
            {"status": ReceiptStatus.CONFIRMED, **_SETTLED},
            "confirmed by Pull Transactions (Daraja's own record of the shortcode)",
        )
    if state.account_reference is None and missing.get("account_reference") is not None:
        return ReceiptDecision(
            DecisionKind.APPLIED,
            status,
            (ReceiptEvent.UPDATED,),
            missing,
            "Pull Transactions completes the receipt",
            rematch=True,
        )
    return ReceiptDecision(DecisionKind.DUPLICATE, status, detail="already recorded")


def _completed(answer: StatusAnswer) -> bool:
    word = (answer.transaction_status or COMPLETED).strip()
    return word.lower() == COMPLETED.lower()


def _paid_party(credit_party: str | None) -> str | None:
    """The shortcode at the head of ``CreditPartyName`` (``"600997 - Org"``), if any."""
    if not credit_party:
        return None
    match = re.match(r"\s*(\d{5,7})(?!\d)", credit_party)
    return match.group(1) if match else None


def _contradictions(state: ReceiptState, answer: StatusAnswer) -> list[str]:
    """What makes Daraja's answer say the money did not reach this shortcode under this
    receipt. (Another amount is not one: Daraja's amount is recorded, see _on_status.)"""
    found = []
    if not _completed(answer):
        found.append(f"Daraja reports it {answer.transaction_status}")
    paid = _paid_party(answer.credit_party)
    if paid is not None and paid != state.shortcode:
        found.append(f"Daraja reports it paid to {paid}, the confirmation to {state.shortcode}")
    receipt = (answer.receipt_no or "").strip()
    if receipt and receipt != state.trans_id:
        found.append(f"Daraja answered about {receipt}")
    return found


def _on_status(state: ReceiptState, answer: StatusAnswer) -> ReceiptDecision:
    status = state.status
    if answer.not_found:
        reason = (
            f"Daraja's Transaction Status says receipt {state.trans_id} does not exist "
            f"(result code {answer.result_code.strip()}): possibly a forged confirmation"
        )
        return _refute(state, reason)
    if not answer.found:
        # An operational answer (initiator locked, system busy, ...): nothing is known yet.
        return ReceiptDecision(
            DecisionKind.NOOP,
            status,
            detail=f"Transaction Status failed with result code {answer.result_code.strip()}: "
            f"{answer.result_desc}; asked again later",
            verify=status is ReceiptStatus.RECEIVED,
        )
    if answer.amount is None:
        return ReceiptDecision(
            DecisionKind.NOOP,
            status,
            detail="Transaction Status answered without an Amount: cannot confirm; asked again",
            verify=status is ReceiptStatus.RECEIVED,
        )
    contradictions = _contradictions(state, answer)
    if contradictions:
        return _refute(state, "; ".join(contradictions))
    if answer.amount != state.amount:
        return _corrected(state, answer)
    if status is ReceiptStatus.CONFIRMED:
        if state.verifying:
            return ReceiptDecision(
                DecisionKind.APPLIED, status, (), dict(_SETTLED), "already confirmed"
            )
        return ReceiptDecision(DecisionKind.DUPLICATE, status, detail="already confirmed")
    detail = "confirmed by Daraja's Transaction Status"
    if status is ReceiptStatus.REFUTED:
        detail += " (it had been refuted: the earlier answer is kept in the flag)"
    return ReceiptDecision(
        DecisionKind.APPLIED,
        ReceiptStatus.CONFIRMED,
        (ReceiptEvent.CONFIRMED,),
        {"status": ReceiptStatus.CONFIRMED, **_SETTLED},
        detail,
    )


def _corrected(state: ReceiptState, answer: StatusAnswer) -> ReceiptDecision:
    """Daraja confirms the receipt with another amount than the confirmation said.

    Daraja's answer is authoritative: its amount is recorded (a forged first copy of a real
    receipt with an inflated amount must not keep the real money from counting), and the
    receipt is flagged, since a confirmation lied about it.
    """
    assert answer.amount is not None
    reason = (
        f"a confirmation said amount {state.amount}, Daraja's Transaction Status says "
        f"{answer.amount}: Daraja's amount is recorded"
    )
    if state.status is ReceiptStatus.CONFIRMED:
        # Two Daraja answers disagree: keep the first, a person decides.
        flag = _flag(state, f"a later Transaction Status answer disagrees: {reason}")
        return ReceiptDecision(
            flag.kind, flag.status, flag.events, {**flag.changes, **_SETTLED}, flag.detail
        )
    return ReceiptDecision(
        DecisionKind.APPLIED,
        ReceiptStatus.CONFIRMED,
        (ReceiptEvent.CONFIRMED, ReceiptEvent.FLAGGED),
        {
            "status": ReceiptStatus.CONFIRMED,
            "amount": answer.amount,
            "flagged": True,
            "flag_reason": _join(state, reason),
            **_SETTLED,
        },
        f"confirmed by Daraja's Transaction Status; {reason}",
    )


def _refute(state: ReceiptState, reason: str) -> ReceiptDecision:
    if state.status is ReceiptStatus.REFUTED:
        if state.verifying:
            return ReceiptDecision(
                DecisionKind.APPLIED, state.status, (), dict(_SETTLED), "already refuted"
            )
        return ReceiptDecision(DecisionKind.DUPLICATE, state.status, detail="already refuted")
    if state.status is ReceiptStatus.CONFIRMED:
        # Two Daraja answers disagree: keep it confirmed, a person decides.
        flag = _flag(state, f"a later Transaction Status answer disagrees: {reason}")
        return ReceiptDecision(
            flag.kind, flag.status, flag.events, {**flag.changes, **_SETTLED}, flag.detail
        )
    return ReceiptDecision(
        DecisionKind.APPLIED,
        ReceiptStatus.REFUTED,
        (ReceiptEvent.REFUTED,),
        {
            "status": ReceiptStatus.REFUTED,
            "flagged": True,
            "flag_reason": _join(state, reason),
            **_SETTLED,
        },
        reason,
    )


def _on_abandoned(state: ReceiptState, event: VerificationAbandoned) -> ReceiptDecision:
    if state.status is not ReceiptStatus.RECEIVED:
        if state.verifying:
            return ReceiptDecision(
                DecisionKind.APPLIED, state.status, (), dict(_SETTLED), "verification closed"
            )
        return ReceiptDecision(DecisionKind.IGNORED, state.status, detail="nothing to verify")
    reason = (
        "Daraja's Transaction Status never confirmed this receipt"
        + (f" ({event.reason})" if event.reason else "")
        + ": it does not count until a lookup confirms it"
    )
    flag = _flag(state, reason)
    return ReceiptDecision(
        DecisionKind.APPLIED, state.status, flag.events, {**flag.changes, **_SETTLED}, reason
    )


def _flag(state: ReceiptState, reason: str) -> ReceiptDecision:
    if state.flagged and state.flag_reason is not None and reason in state.flag_reason:
        return ReceiptDecision(DecisionKind.DUPLICATE, state.status, detail=reason)
    return ReceiptDecision(
        DecisionKind.APPLIED,
        state.status,
        (ReceiptEvent.FLAGGED,),
        {"flagged": True, "flag_reason": _join(state, reason)},
        reason,
    )


def _join(state: ReceiptState | ExpectedState, reason: str) -> str:
    # Flags accumulate: a second problem never hides the first.
    if state.flagged and state.flag_reason and reason not in state.flag_reason:
        return f"{state.flag_reason}; {reason}"
    return reason


# -- counting -----------------------------------------------------------------------------


def counts(status: ReceiptStatus | str) -> Literal["paid", "pending", "none"]:
    """How a receipt in ``status`` counts towards its expected payment.

    ``confirmed`` and ``unverified`` receipts are money received; ``received`` ones are money
    announced, awaiting Daraja's confirmation; ``refuted`` ones are nothing.
    """
    status = ReceiptStatus(status)
    if status in (ReceiptStatus.CONFIRMED, ReceiptStatus.UNVERIFIED):
        return "paid"
    if status is ReceiptStatus.RECEIVED:
        return "pending"
    return "none"


def reference_key(reference: str) -> str:
    """The form account numbers are matched in: their ASCII letters and digits, upper case.

    Customers type account numbers on a phone keypad: ``inv 1042`` or ``INV1042`` for
    ``INV-1042``.
    """
    return re.sub(r"[^0-9A-Za-z]+", "", reference).upper()


@dataclass(frozen=True, slots=True)
class MatchCandidate:
    """An expected payment that may receive a receipt (same account, same reference)."""

    id: str
    status: ExpectedStatus
    created_at: datetime


def choose_expected(candidates: list[MatchCandidate]) -> tuple[str | None, str]:
    """Pick the expected payment a receipt settles, and say why.

    The oldest one still open (or partly paid) first; else the newest paid one (the
    customer paid twice: an over-payment, visible); a cancelled one never.
    """
    waiting = sorted(
        (c for c in candidates if c.status in _OPEN), key=lambda c: (c.created_at, c.id)
    )
    if waiting:
        return waiting[0].id, "the oldest open expected payment with this account number"
    settled = sorted(
        (c for c in candidates if c.status in (ExpectedStatus.PAID, ExpectedStatus.OVERPAID)),
        key=lambda c: (c.created_at, c.id),
    )
    if settled:
        return settled[-1].id, "already paid: an over-payment"
    if candidates:
        return None, "its expected payment was cancelled"
    return None, "no expected payment has this account number"


# -- expected payments --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tally:
    """What an expected payment's receipts add up to, after a receipt changed.

    Attributes:
        paid: money received (confirmed and unverified receipts).
        pending: money announced by confirmations awaiting Daraja's confirmation.
        unverified: receipts counted without Daraja's confirmation (their ids).
        refuted: receipts Daraja refuted (their ids).
        receipt_id: the receipt whose change this is.
    """

    paid: Decimal
    pending: Decimal
    unverified: tuple[str, ...] = ()
    refuted: tuple[str, ...] = ()
    receipt_id: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """The merchant no longer expects this payment."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ExpectedState:
    """The part of an expected payment the state machine needs."""

    status: ExpectedStatus
    amount: int
    paid_amount: Decimal = Decimal(0)
    pending_amount: Decimal = Decimal(0)
    flagged: bool = False
    flag_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ExpectedDecision:
    """What an input does to an expected payment (see :class:`ReceiptDecision`)."""

    kind: DecisionKind
    status: ExpectedStatus
    events: tuple[ExpectedEvent, ...] = ()
    changes: dict[str, Any] = field(default_factory=dict)
    detail: str = ""


def tally_status(amount: int, paid: Decimal) -> ExpectedStatus:
    """The status the money received gives an expected payment of ``amount``."""
    if paid <= 0:
        return ExpectedStatus.OPEN
    if paid < amount:
        return ExpectedStatus.PARTIALLY_PAID
    if paid == amount:
        return ExpectedStatus.PAID
    return ExpectedStatus.OVERPAID


def decide_expected(
    state: ExpectedState, event: Tally | Cancel, *, policy: VerifyPolicy = "auto"
) -> ExpectedDecision:
    """Decide what a new tally of its receipts, or a cancellation, does to an expected
    payment.

    The status follows the money received (``paid``); every change of it writes the
    event of the new status, so that each partial payment is told. Money counted without
    Daraja's confirmation flags the payment (unless ``policy`` is ``never``), and so does a
    refuted receipt (a possibly forged confirmation named this account number) and money
    arriving after a cancellation.
    """
    if isinstance(event, Cancel):
        return _cancel(state, event)
    changes: dict[str, Any] = {}
    events: list[ExpectedEvent] = []
    details: list[str] = []
    status = state.status
    if event.paid != state.paid_amount:
        changes["paid_amount"] = event.paid
    if event.pending != state.pending_amount:
        changes["pending_amount"] = event.pending
    if status is ExpectedStatus.CANCELLED:
        if event.paid > state.paid_amount:
            reasons = [f"{event.paid - state.paid_amount} received after it was cancelled"]
        else:
            reasons = []
    else:
        new_status = tally_status(state.amount, event.paid)
        if new_status is not status or event.paid != state.paid_amount:
            if new_status is not ExpectedStatus.OPEN:
                events.append(_STATUS_EVENT[new_status])
            changes["status"] = new_status
            status = new_status
            details.append(f"{new_status}: {event.paid} of {state.amount} received")
        reasons = []
    if event.unverified and policy != "never":
        # One reason however many such receipts: a flag is raised once per problem.
        reasons.append(
            "money counted without Daraja's confirmation (its account has no initiator for "
            "Transaction Status): check the receipts against the M-Pesa statement"
        )
    reasons.extend(
        f"Daraja refuted a confirmation for it (receipt {receipt}): possibly forged"
        for receipt in event.refuted
    )
    flag_reason = state.flag_reason if state.flagged else None
    for reason in reasons:
        if flag_reason is None or reason not in flag_reason:
            flag_reason = reason if flag_reason is None else f"{flag_reason}; {reason}"
    if flag_reason != (state.flag_reason if state.flagged else None):
        changes.update(flagged=True, flag_reason=flag_reason)
        events.append(ExpectedEvent.FLAGGED)
        details.append(f"flagged: {flag_reason}")
    if not changes:
        return ExpectedDecision(DecisionKind.DUPLICATE, state.status, detail="nothing changed")
    return ExpectedDecision(
        DecisionKind.APPLIED,
        status,
        tuple(events),
        changes,
        "; ".join(details) or "amounts updated",
    )


def _cancel(state: ExpectedState, event: Cancel) -> ExpectedDecision:
    if state.status is ExpectedStatus.CANCELLED:
        return ExpectedDecision(DecisionKind.DUPLICATE, state.status, detail="already cancelled")
    if state.status not in _OPEN:
        return ExpectedDecision(
            DecisionKind.IGNORED, state.status, detail=f"cannot cancel a {state.status} payment"
        )
    detail = "cancelled" + (f": {event.reason}" if event.reason else "")
    return ExpectedDecision(
        DecisionKind.APPLIED,
        ExpectedStatus.CANCELLED,
        (ExpectedEvent.CANCELLED,),
        {"status": ExpectedStatus.CANCELLED},
        detail,
    )
