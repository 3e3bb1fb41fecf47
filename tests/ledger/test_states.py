"""The pure state machine: every (state, input) pair, plus properties that must always hold."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pesa.daraja import lookup_code
from pesa.ledger import (
    TERMINAL_STATUSES,
    Accepted,
    DecisionKind,
    EventType,
    Expired,
    IdFromCallback,
    IdUnknownToDaraja,
    LedgerInput,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    Unverifiable,
    assess_success,
    decide,
    evolve,
    orphan_matches,
    phones_match,
    stk_code,
)

PHONE = "254708374149"
S = PaymentStatus
K = DecisionKind
E = EventType

# A success callback kept as evidence: it could not be cross-checked (masked phone).
EVIDENCE = StkResult("0", "ok", receipt="R0", amount=10, phone="2547****149")

STATES: dict[str, PaymentState] = {
    "created": PaymentState(S.CREATED, 10, PHONE),
    "pending": PaymentState(S.PENDING, 10, PHONE, checkout_request_id="ws_X"),
    "pending_evidence": PaymentState(
        S.PENDING,
        10,
        PHONE,
        checkout_request_id="ws_X",
        evidence=EVIDENCE,
        evidence_id="cb_1",
        verifying=True,
    ),
    "unknown": PaymentState(S.UNKNOWN, 10, PHONE),
    "unknown_adopted": PaymentState(
        S.UNKNOWN,
        10,
        PHONE,
        checkout_request_id="ws_X",
        checkout_request_id_verified=False,
        evidence=EVIDENCE,
        evidence_id="cb_1",
        verifying=True,
    ),
    "succeeded": PaymentState(
        S.SUCCEEDED, 10, PHONE, checkout_request_id="ws_X", result_code="0", receipt="R1"
    ),
    "succeeded_by_query": PaymentState(
        S.SUCCEEDED, 10, PHONE, checkout_request_id="ws_X", result_code="0"
    ),
    "failed": PaymentState(S.FAILED, 10, PHONE, checkout_request_id="ws_X", result_code="1032"),
    "failed_evidence": PaymentState(
        S.FAILED,
        10,
        PHONE,
        checkout_request_id="ws_X",
        result_code="1032",
        evidence=EVIDENCE,
        evidence_id="cb_1",
        verifying=True,
    ),
    "rejected": PaymentState(S.REJECTED, 10, PHONE, result_code="400.002.02"),
}

INPUTS: dict[str, LedgerInput] = {
    "accepted": Accepted("ws_X", "m-1"),
    "accepted_other": Accepted("ws_Y", "m-2"),
    "id_from_callback": IdFromCallback("ws_X", "m-1"),
    "id_unknown": IdUnknownToDaraja("400.002.02"),
    "rejected": Rejected("400.002.02", "Bad Request - Invalid PhoneNumber"),
    "unknown": OutcomeUnknown("read timeout after send"),
    "success": StkResult("0", "ok", receipt="R1", amount=10, phone=PHONE),
    "success_masked": StkResult("0", "ok", receipt="R1", amount=10, phone="2547****149"),
    "success_other_receipt": StkResult("0", "ok", receipt="R2", amount=10, phone=PHONE),
    "success_mismatch": StkResult("0", "ok", receipt="R3", amount=1, phone=PHONE),
    "query_success": StkResult("0", "ok", source="query"),
    "failure": StkResult("1032", "Request cancelled by user"),
    "query_failure": StkResult("1032", "Request cancelled by user", source="query"),
    "still_pending": StillPending(),
    "expired": Expired(),
    "unverifiable": Unverifiable(),
}

# (state, input) -> (decision kind, status afterwards, events written)
EXPECTED: dict[tuple[str, str], tuple[DecisionKind, PaymentStatus, tuple[EventType, ...]]] = {
    ("created", "accepted"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("created", "accepted_other"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("created", "id_from_callback"): (K.IGNORED, S.CREATED, ()),
    ("created", "id_unknown"): (K.IGNORED, S.CREATED, ()),
    ("created", "rejected"): (K.APPLIED, S.REJECTED, (E.REJECTED,)),
    ("created", "unknown"): (K.APPLIED, S.UNKNOWN, (E.UNKNOWN,)),
    ("created", "success"): (K.IGNORED, S.CREATED, ()),
    ("created", "success_masked"): (K.IGNORED, S.CREATED, ()),
    ("created", "success_other_receipt"): (K.IGNORED, S.CREATED, ()),
    ("created", "success_mismatch"): (K.IGNORED, S.CREATED, ()),
    ("created", "query_success"): (K.IGNORED, S.CREATED, ()),
    ("created", "failure"): (K.IGNORED, S.CREATED, ()),
    ("created", "query_failure"): (K.IGNORED, S.CREATED, ()),
    ("created", "still_pending"): (K.IGNORED, S.CREATED, ()),
    ("created", "expired"): (K.IGNORED, S.CREATED, ()),
    ("created", "unverifiable"): (K.IGNORED, S.CREATED, ()),
    ("pending", "accepted"): (K.DUPLICATE, S.PENDING, ()),
    ("pending", "accepted_other"): (K.IGNORED, S.PENDING, ()),
    ("pending", "id_from_callback"): (K.DUPLICATE, S.PENDING, ()),
    ("pending", "id_unknown"): (K.IGNORED, S.PENDING, ()),
    ("pending", "rejected"): (K.IGNORED, S.PENDING, ()),
    ("pending", "unknown"): (K.IGNORED, S.PENDING, ()),
    ("pending", "success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED,)),
    ("pending", "success_masked"): (K.UNVERIFIED, S.PENDING, ()),
    ("pending", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED,)),
    ("pending", "success_mismatch"): (K.UNVERIFIED, S.PENDING, ()),
    ("pending", "query_success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED,)),
    ("pending", "failure"): (K.APPLIED, S.FAILED, (E.FAILED,)),
    ("pending", "query_failure"): (K.APPLIED, S.FAILED, (E.FAILED,)),
    ("pending", "still_pending"): (K.NOOP, S.PENDING, ()),
    ("pending", "expired"): (K.APPLIED, S.FAILED, (E.FAILED,)),
    ("pending", "unverifiable"): (K.IGNORED, S.PENDING, ()),
    ("pending_evidence", "accepted"): (K.DUPLICATE, S.PENDING, ()),
    ("pending_evidence", "accepted_other"): (K.IGNORED, S.PENDING, ()),
    ("pending_evidence", "id_from_callback"): (K.DUPLICATE, S.PENDING, ()),
    ("pending_evidence", "id_unknown"): (K.IGNORED, S.PENDING, ()),
    ("pending_evidence", "rejected"): (K.IGNORED, S.PENDING, ()),
    ("pending_evidence", "unknown"): (K.IGNORED, S.PENDING, ()),
    ("pending_evidence", "success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED, E.FLAGGED)),
    ("pending_evidence", "success_masked"): (K.UNVERIFIED, S.PENDING, ()),
    ("pending_evidence", "success_other_receipt"): (
        K.APPLIED,
        S.SUCCEEDED,
        (E.SUCCEEDED, E.FLAGGED),
    ),
    ("pending_evidence", "success_mismatch"): (K.UNVERIFIED, S.PENDING, ()),
    ("pending_evidence", "query_success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED,)),
    ("pending_evidence", "failure"): (K.NOOP, S.PENDING, ()),
    ("pending_evidence", "query_failure"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("pending_evidence", "still_pending"): (K.NOOP, S.PENDING, ()),
    ("pending_evidence", "expired"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("pending_evidence", "unverifiable"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("unknown", "accepted"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("unknown", "accepted_other"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("unknown", "id_from_callback"): (K.APPLIED, S.UNKNOWN, ()),
    ("unknown", "id_unknown"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "rejected"): (K.APPLIED, S.REJECTED, (E.REJECTED,)),
    ("unknown", "unknown"): (K.DUPLICATE, S.UNKNOWN, ()),
    ("unknown", "success"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "success_masked"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "success_other_receipt"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "success_mismatch"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "query_success"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "failure"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "query_failure"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown", "still_pending"): (K.NOOP, S.UNKNOWN, ()),
    ("unknown", "expired"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("unknown", "unverifiable"): (K.IGNORED, S.UNKNOWN, ()),
    ("unknown_adopted", "accepted"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("unknown_adopted", "accepted_other"): (K.APPLIED, S.PENDING, (E.PENDING,)),
    ("unknown_adopted", "id_from_callback"): (K.DUPLICATE, S.UNKNOWN, ()),
    ("unknown_adopted", "id_unknown"): (K.APPLIED, S.UNKNOWN, ()),
    ("unknown_adopted", "rejected"): (K.APPLIED, S.REJECTED, (E.REJECTED,)),
    ("unknown_adopted", "unknown"): (K.DUPLICATE, S.UNKNOWN, ()),
    ("unknown_adopted", "success"): (K.UNVERIFIED, S.UNKNOWN, ()),
    ("unknown_adopted", "success_masked"): (K.UNVERIFIED, S.UNKNOWN, ()),
    ("unknown_adopted", "success_other_receipt"): (K.UNVERIFIED, S.UNKNOWN, ()),
    ("unknown_adopted", "success_mismatch"): (K.UNVERIFIED, S.UNKNOWN, ()),
    ("unknown_adopted", "query_success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED,)),
    ("unknown_adopted", "failure"): (K.NOOP, S.UNKNOWN, ()),
    ("unknown_adopted", "query_failure"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("unknown_adopted", "still_pending"): (K.NOOP, S.UNKNOWN, ()),
    ("unknown_adopted", "expired"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("unknown_adopted", "unverifiable"): (K.APPLIED, S.FAILED, (E.FAILED, E.FLAGGED)),
    ("succeeded", "accepted"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "accepted_other"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "id_from_callback"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "id_unknown"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "rejected"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "unknown"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "success"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "success_masked"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded", "success_mismatch"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded", "query_success"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "failure"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded", "query_failure"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded", "still_pending"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "expired"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "unverifiable"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "accepted"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded_by_query", "accepted_other"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "id_from_callback"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded_by_query", "id_unknown"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "rejected"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "unknown"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "success"): (K.APPLIED, S.SUCCEEDED, (E.UPDATED,)),
    ("succeeded_by_query", "success_masked"): (K.APPLIED, S.SUCCEEDED, (E.UPDATED,)),
    ("succeeded_by_query", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (E.UPDATED,)),
    ("succeeded_by_query", "success_mismatch"): (K.APPLIED, S.SUCCEEDED, (E.UPDATED, E.FLAGGED)),
    ("succeeded_by_query", "query_success"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded_by_query", "failure"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded_by_query", "query_failure"): (K.APPLIED, S.SUCCEEDED, (E.FLAGGED,)),
    ("succeeded_by_query", "still_pending"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "expired"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded_by_query", "unverifiable"): (K.IGNORED, S.SUCCEEDED, ()),
    ("failed", "accepted"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "accepted_other"): (K.IGNORED, S.FAILED, ()),
    ("failed", "id_from_callback"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "id_unknown"): (K.IGNORED, S.FAILED, ()),
    ("failed", "rejected"): (K.IGNORED, S.FAILED, ()),
    ("failed", "unknown"): (K.IGNORED, S.FAILED, ()),
    ("failed", "success"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed", "success_masked"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed", "success_other_receipt"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed", "success_mismatch"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed", "query_success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED, E.CORRECTED)),
    ("failed", "failure"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "query_failure"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "still_pending"): (K.IGNORED, S.FAILED, ()),
    ("failed", "expired"): (K.IGNORED, S.FAILED, ()),
    ("failed", "unverifiable"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "accepted"): (K.DUPLICATE, S.FAILED, ()),
    ("failed_evidence", "accepted_other"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "id_from_callback"): (K.DUPLICATE, S.FAILED, ()),
    ("failed_evidence", "id_unknown"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "rejected"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "unknown"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "success"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed_evidence", "success_masked"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed_evidence", "success_other_receipt"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed_evidence", "success_mismatch"): (K.UNVERIFIED, S.FAILED, ()),
    ("failed_evidence", "query_success"): (K.APPLIED, S.SUCCEEDED, (E.SUCCEEDED, E.CORRECTED)),
    ("failed_evidence", "failure"): (K.DUPLICATE, S.FAILED, ()),
    ("failed_evidence", "query_failure"): (K.APPLIED, S.FAILED, (E.FLAGGED,)),
    ("failed_evidence", "still_pending"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "expired"): (K.IGNORED, S.FAILED, ()),
    ("failed_evidence", "unverifiable"): (K.APPLIED, S.FAILED, (E.FLAGGED,)),
    ("rejected", "accepted"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "accepted_other"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "id_from_callback"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "id_unknown"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "rejected"): (K.DUPLICATE, S.REJECTED, ()),
    ("rejected", "unknown"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success_masked"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success_other_receipt"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success_mismatch"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "query_success"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "failure"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "query_failure"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "still_pending"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "expired"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "unverifiable"): (K.IGNORED, S.REJECTED, ()),
}


def test_the_table_covers_every_state_and_input() -> None:
    assert set(EXPECTED) == {(s, i) for s in STATES for i in INPUTS}
    assert {state.status for state in STATES.values()} == set(PaymentStatus)


@pytest.mark.parametrize(("state_name", "input_name"), sorted(EXPECTED))
def test_every_state_input_pair(state_name: str, input_name: str) -> None:
    kind, status, events = EXPECTED[(state_name, input_name)]
    decision = decide(STATES[state_name], INPUTS[input_name])
    assert (decision.kind, decision.status, decision.events) == (kind, status, events)
    assert decision.detail
    if not decision.writes:
        assert decision.changes == {}
    else:
        assert decision.changes.get("status", status) == status


def test_accepted_records_the_daraja_ids() -> None:
    decision = decide(STATES["created"], Accepted("ws_CO_1", "29115-1"))
    assert decision.changes["checkout_request_id"] == "ws_CO_1"
    assert decision.changes["merchant_request_id"] == "29115-1"


def test_rejected_keeps_darajas_code_and_message() -> None:
    decision = decide(STATES["created"], INPUTS["rejected"])
    assert decision.changes["result_code"] == "400.002.02"
    assert decision.changes["failure_reason"] == "Bad Request - Invalid PhoneNumber"


@dataclass(frozen=True)
class Code:
    meaning: str
    final: bool = True
    known: bool = True


CATALOGUE = {"1032": Code("The customer cancelled the prompt")}


def lookup(code: str) -> Code:
    return CATALOGUE.get(code, Code(f"unknown code {code}", final=False, known=False))


def test_failure_reason_comes_from_the_catalogue_when_it_knows_the_code() -> None:
    decision = decide(STATES["pending"], INPUTS["failure"], lookup=lookup)
    assert decision.changes["failure_reason"] == "The customer cancelled the prompt"
    assert decision.changes["result_code"] == "1032"


def test_the_real_catalogue_fits_the_lookup_protocol() -> None:
    decision = decide(
        STATES["pending"], StkResult("1037", "No response from user."), lookup=stk_code
    )
    assert decision.changes["failure_reason"] == lookup_code("1037").meaning


@pytest.mark.parametrize("start", ["pending", "unknown_adopted"])
def test_a_code_the_catalogue_calls_not_final_leaves_the_payment_open(start: str) -> None:
    decision = decide(
        STATES[start], StkResult("4999", "Something odd", source="query"), lookup=lookup
    )
    assert decision.kind is K.NOOP
    assert decision.status is STATES[start].status
    assert "verify" in decision.detail


def test_without_a_catalogue_the_reason_is_darajas_result_desc() -> None:
    decision = decide(STATES["pending"], StkResult("4999", "Something odd"))
    assert decision.changes["failure_reason"] == "Something odd"
    assert decide(STATES["pending"], StkResult("4999")).changes["failure_reason"] == (
        "result code 4999"
    )


def test_result_code_is_compared_as_a_string() -> None:
    assert StkResult(" 0 ").is_success
    assert not StkResult("00").is_success
    assert not StkResult("1").is_success


def test_expiry_fails_with_reason_expired() -> None:
    decision = decide(STATES["pending"], Expired())
    assert decision.changes["status"] is S.FAILED
    assert decision.changes["failure_reason"] == "expired"
    assert "flagged" not in decision.changes


@pytest.mark.parametrize("start", ["pending_evidence", "unknown_adopted"])
def test_expiry_with_an_unconfirmed_success_is_flagged(start: str) -> None:
    """A success callback waited for Daraja's confirmation: the customer may have paid."""
    decision = decide(STATES[start], Expired())
    assert decision.status is S.FAILED
    assert decision.changes["flagged"] is True
    assert "may have paid" in decision.changes["flag_reason"]


def test_expiry_of_an_unconfirmed_push_is_flagged_for_verification() -> None:
    """Nobody could ask Daraja about it: failed, but never silently (the customer may have paid)."""
    decision = decide(STATES["unknown"], Expired())
    assert decision.changes["failure_reason"] == "expired"
    assert decision.changes["flagged"] is True
    assert "verify" in decision.changes["flag_reason"]


def test_success_records_receipt_amount_phone_and_date() -> None:
    decision = decide(STATES["pending"], INPUTS["success"])
    assert decision.changes["receipt"] == "R1"
    assert decision.changes["paid_amount"] == Decimal(10)
    assert decision.changes["paid_phone"] == PHONE
    assert "flagged" not in decision.changes


@pytest.mark.parametrize(
    ("amount", "phone", "reason_part"),
    [
        (9, PHONE, "amount 9 differs from requested 10"),
        (Decimal("10.50"), PHONE, "amount 10.50 differs"),
        (10, "254711000000", "phone differs"),
    ],
)
def test_a_success_that_contradicts_the_request_never_settles_without_a_query(
    amount: int | Decimal, phone: str, reason_part: str
) -> None:
    """Finding 3: only Daraja's query settles it; then it succeeds, flagged with the reason."""
    result = StkResult("0", receipt="R9", amount=amount, phone=phone)
    flag = decide(STATES["pending"], result)
    assert (flag.kind, flag.status, flag.events) == (K.UNVERIFIED, S.PENDING, ())
    assert flag.verify and flag.keep_evidence
    refuse = decide(STATES["pending"], result, on_mismatch="refuse")
    assert (refuse.kind, refuse.status) == (K.REFUSED, S.PENDING)
    assert refuse.verify and refuse.keep_evidence

    held = replace(STATES["pending"], evidence=result, evidence_id="cb_9", verifying=True)
    settled = decide(held, INPUTS["query_success"])
    assert settled.status is S.SUCCEEDED
    assert settled.events == (E.SUCCEEDED, E.FLAGGED)
    assert (
        reason_part in settled.changes["flag_reason"] and "cb_9" in settled.changes["flag_reason"]
    )
    assert settled.changes["receipt"] == "R9", "flag policy: the callback's values are kept"

    refused = replace(held, evidence_refused=True)
    settled = decide(refused, INPUTS["query_success"])
    assert settled.events == (E.SUCCEEDED, E.FLAGGED)
    assert "refused" in settled.changes["flag_reason"] and "cb_9" in settled.changes["flag_reason"]
    assert "receipt" not in settled.changes, "refuse policy: a refused callback's values are not"


@pytest.mark.parametrize(
    ("result", "why"),
    [
        (StkResult("0", receipt="R1", phone=PHONE), "no Amount"),
        (StkResult("0", receipt="R1", amount=10), "no PhoneNumber"),
        (StkResult("0", receipt="R1", amount=10, phone="2547****149"), "a masked PhoneNumber"),
        (StkResult("0", receipt="R1", amount=10, phone="*"), "a masked PhoneNumber"),
        (StkResult("0", amount=10, phone=PHONE), "no MpesaReceiptNumber"),
    ],
)
def test_a_success_that_cannot_be_cross_checked_waits_for_a_query(
    result: StkResult, why: str
) -> None:
    """Finding 3: no amount, no phone, a masked phone: never trusted alone."""
    assessment = assess_success(STATES["pending"], result)
    assert assessment.verdict != "confirmed"
    assert why in assessment.reason
    decision = decide(STATES["pending"], result)
    assert decision.kind is K.UNVERIFIED
    assert decision.status is S.PENDING
    assert decision.verify and decision.keep_evidence
    assert decision.events == ()


def test_a_confirmed_success_settles_alone() -> None:
    assert assess_success(STATES["pending"], INPUTS["success"]).verdict == "confirmed"
    assert decide(STATES["pending"], INPUTS["success"]).status is S.SUCCEEDED


def test_the_evidence_completes_the_record_once_the_query_confirms_it() -> None:
    decision = decide(STATES["pending_evidence"], INPUTS["query_success"])
    assert decision.events == (E.SUCCEEDED,)
    assert decision.changes["receipt"] == "R0"
    assert decision.changes["paid_amount"] == Decimal(10)
    assert decision.changes["evidence_callback_id"] is None
    assert decision.changes["verify_at"] is None


def test_a_late_genuine_callback_completes_a_payment_a_query_settled() -> None:
    """Finding 1: the query won the race; the callback fills in the record, no flag."""
    decision = decide(STATES["succeeded_by_query"], INPUTS["success"])
    assert (decision.kind, decision.events) == (K.APPLIED, (E.UPDATED,))
    assert decision.changes["receipt"] == "R1"
    assert decision.changes["paid_amount"] == Decimal(10)
    assert decision.changes["paid_phone"] == PHONE
    assert "flagged" not in decision.changes
    after = evolve(STATES["succeeded_by_query"], decision)
    assert decide(after, INPUTS["success"]).kind is K.DUPLICATE
    assert decide(after, INPUTS["success_other_receipt"]).events == (E.FLAGGED,)


def test_a_late_callback_that_disagrees_is_flagged() -> None:
    decision = decide(STATES["succeeded_by_query"], INPUTS["success_mismatch"])
    assert decision.events == (E.UPDATED, E.FLAGGED)
    assert "amount 1 differs" in decision.changes["flag_reason"]


def test_a_failed_payment_turns_paid_only_when_a_query_confirms_it() -> None:
    """Finding 3: whoever holds the callback token cannot flip a payment to paid."""
    late = decide(STATES["failed"], INPUTS["success"])
    assert (late.kind, late.status, late.events) == (K.UNVERIFIED, S.FAILED, ())
    assert late.verify
    held = replace(STATES["failed"], evidence=INPUTS["success"], evidence_id="cb_2", verifying=True)
    confirmed = decide(held, INPUTS["query_success"])
    assert confirmed.events == (E.SUCCEEDED, E.CORRECTED)
    assert confirmed.changes["receipt"] == "R1"
    denied = decide(held, INPUTS["query_failure"])
    assert denied.status is S.FAILED
    assert denied.events == (E.FLAGGED,)
    assert "cb_2" in denied.changes["flag_reason"]


def test_an_id_learnt_from_a_callback_is_never_the_basis_of_success() -> None:
    """Finding 2: adopted ids are unverified until a query by that id confirms them."""
    adopted = decide(STATES["unknown"], INPUTS["id_from_callback"])
    assert adopted.changes["checkout_request_id_verified"] is False
    assert adopted.status is S.UNKNOWN and adopted.verify
    state = evolve(STATES["unknown"], adopted)
    assert decide(state, INPUTS["success"]).kind is K.UNVERIFIED
    assert decide(state, INPUTS["failure"]).kind is K.NOOP
    confirmed = decide(state, INPUTS["query_success"])
    assert confirmed.status is S.SUCCEEDED
    assert confirmed.changes["checkout_request_id_verified"] is True


def test_a_push_in_flight_is_never_adopted() -> None:
    assert decide(STATES["created"], INPUTS["id_from_callback"]).kind is K.IGNORED
    assert not orphan_matches(STATES["created"], INPUTS["success"])
    assert orphan_matches(STATES["unknown"], INPUTS["success"])
    assert orphan_matches(STATES["unknown"], INPUTS["success_masked"])
    assert not orphan_matches(STATES["unknown"], INPUTS["success_mismatch"])
    assert not orphan_matches(STATES["unknown"], INPUTS["failure"])


def test_darajas_push_answer_wins_over_an_id_learnt_from_a_callback() -> None:
    decision = decide(STATES["unknown_adopted"], Accepted("ws_REAL", "m-9"))
    assert decision.status is S.PENDING
    assert decision.changes["checkout_request_id"] == "ws_REAL"
    assert decision.changes["checkout_request_id_verified"] is True
    assert decision.changes["evidence_callback_id"] is None, "the evidence was about another id"


def test_an_id_daraja_does_not_know_is_dropped() -> None:
    decision = decide(STATES["unknown_adopted"], IdUnknownToDaraja())
    assert decision.status is S.UNKNOWN
    assert decision.changes["checkout_request_id"] is None
    assert decide(STATES["pending"], IdUnknownToDaraja()).kind is K.IGNORED


def test_an_adopted_payment_whose_query_fails_is_flagged() -> None:
    decision = decide(STATES["unknown_adopted"], INPUTS["query_failure"])
    assert decision.events == (E.FAILED, E.FLAGGED)
    assert "success callback" in decision.changes["flag_reason"]


def test_the_same_flag_twice_is_a_duplicate() -> None:
    first = decide(STATES["succeeded"], INPUTS["failure"])
    again = decide(evolve(STATES["succeeded"], first), INPUTS["failure"])
    assert again.kind is K.DUPLICATE


def test_flags_accumulate_rather_than_hide_each_other() -> None:
    first = decide(STATES["succeeded"], INPUTS["failure"])
    state = evolve(STATES["succeeded"], first)
    second = decide(state, INPUTS["success_other_receipt"])
    assert "1032" in second.changes["flag_reason"] and "R2" in second.changes["flag_reason"]


@pytest.mark.parametrize(
    ("requested", "reported", "match"),
    [
        ("254708374149", "254708374149", True),
        ("254708374149", "0708374149", True),
        ("254708374149", "254708374148", False),
        ("254708374149", "2547****4149", True),
        ("254708374149", "2547****4148", False),
        ("254708374149", "2547****149", True),
        ("254708374149", "2541****149", False),
        ("254110000001", "0110000001", True),
    ],
)
def test_phones_match_tolerates_masking_but_not_different_digits(
    requested: str, reported: str, match: bool
) -> None:
    assert phones_match(requested, reported) is match


inputs = st.sampled_from(list(INPUTS.values()))


@given(st.lists(inputs, max_size=12))
def test_no_sequence_of_inputs_leaves_a_terminal_state_except_late_success(
    sequence: list[LedgerInput],
) -> None:
    """Terminal states only ever move failed → succeeded, and only by Daraja's query;
    succeeded never changes status."""
    state = STATES["created"]
    for item in sequence:
        decision = decide(state, item)
        if state.status in TERMINAL_STATUSES and decision.status != state.status:
            assert (state.status, decision.status) == (S.FAILED, S.SUCCEEDED)
            assert isinstance(item, StkResult) and item.source == "query"
        if decision.status is S.SUCCEEDED and state.status is not S.SUCCEEDED:
            # Paid only by Daraja's query or a fully cross-checked callback.
            assert isinstance(item, StkResult)
            assert item.source == "query" or assess_success(state, item).verdict == "confirmed"
        if state.status is S.SUCCEEDED:
            assert decision.status is S.SUCCEEDED
        if decision.writes:
            state = evolve(state, decision)
            if decision.keep_evidence and isinstance(item, StkResult):
                state = replace(state, evidence=item, evidence_id="cb")
        else:
            assert decision.events == ()


@given(inputs)
def test_repeating_an_applied_input_never_applies_a_status_change_twice(
    item: LedgerInput,
) -> None:
    for start in STATES.values():
        first = decide(start, item)
        if not first.applied:
            continue
        after = evolve(start, first)
        again = decide(after, item)
        assert again.kind is not K.APPLIED or EventType.SUCCEEDED not in again.events
        assert again.status == first.status
