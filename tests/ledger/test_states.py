"""The pure state machine: every (state, input) pair, plus properties that must always hold."""

from __future__ import annotations

from dataclasses import dataclass
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
    LedgerInput,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    decide,
    phones_match,
    stk_code,
)

PHONE = "254708374149"
S = PaymentStatus
K = DecisionKind

STATES: dict[str, PaymentState] = {
    "created": PaymentState(S.CREATED, 10, PHONE),
    "pending": PaymentState(S.PENDING, 10, PHONE, checkout_request_id="ws_X"),
    "unknown": PaymentState(S.UNKNOWN, 10, PHONE),
    "succeeded": PaymentState(
        S.SUCCEEDED, 10, PHONE, checkout_request_id="ws_X", result_code="0", receipt="R1"
    ),
    "failed": PaymentState(S.FAILED, 10, PHONE, checkout_request_id="ws_X", result_code="1032"),
    "rejected": PaymentState(S.REJECTED, 10, PHONE, result_code="400.002.02"),
}

INPUTS: dict[str, LedgerInput] = {
    "accepted": Accepted("ws_X", "m-1"),
    "accepted_other": Accepted("ws_Y", "m-2"),
    "rejected": Rejected("400.002.02", "Bad Request - Invalid PhoneNumber"),
    "unknown": OutcomeUnknown("read timeout after send"),
    "success": StkResult("0", "ok", receipt="R1", amount=10, phone=PHONE),
    "success_other_receipt": StkResult("0", "ok", receipt="R2", amount=10, phone=PHONE),
    "query_success": StkResult("0", "ok", source="query"),
    "failure": StkResult("1032", "Request cancelled by user"),
    "still_pending": StillPending(),
    "expired": Expired(),
}

# (state, input) -> (decision kind, status afterwards, events written)
EXPECTED: dict[tuple[str, str], tuple[DecisionKind, PaymentStatus, tuple[EventType, ...]]] = {
    ("created", "accepted"): (K.APPLIED, S.PENDING, (EventType.PENDING,)),
    ("created", "accepted_other"): (K.APPLIED, S.PENDING, (EventType.PENDING,)),
    ("created", "rejected"): (K.APPLIED, S.REJECTED, (EventType.REJECTED,)),
    ("created", "unknown"): (K.APPLIED, S.UNKNOWN, (EventType.UNKNOWN,)),
    ("created", "success"): (K.IGNORED, S.CREATED, ()),
    ("created", "success_other_receipt"): (K.IGNORED, S.CREATED, ()),
    ("created", "query_success"): (K.IGNORED, S.CREATED, ()),
    ("created", "failure"): (K.IGNORED, S.CREATED, ()),
    ("created", "still_pending"): (K.IGNORED, S.CREATED, ()),
    ("created", "expired"): (K.IGNORED, S.CREATED, ()),
    ("pending", "accepted"): (K.DUPLICATE, S.PENDING, ()),
    ("pending", "accepted_other"): (K.IGNORED, S.PENDING, ()),
    ("pending", "rejected"): (K.IGNORED, S.PENDING, ()),
    ("pending", "unknown"): (K.IGNORED, S.PENDING, ()),
    ("pending", "success"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("pending", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("pending", "query_success"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("pending", "failure"): (K.APPLIED, S.FAILED, (EventType.FAILED,)),
    ("pending", "still_pending"): (K.NOOP, S.PENDING, ()),
    ("pending", "expired"): (K.APPLIED, S.FAILED, (EventType.FAILED,)),
    ("unknown", "accepted"): (K.APPLIED, S.PENDING, (EventType.PENDING,)),
    ("unknown", "accepted_other"): (K.APPLIED, S.PENDING, (EventType.PENDING,)),
    ("unknown", "rejected"): (K.APPLIED, S.REJECTED, (EventType.REJECTED,)),
    ("unknown", "unknown"): (K.DUPLICATE, S.UNKNOWN, ()),
    ("unknown", "success"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("unknown", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("unknown", "query_success"): (K.APPLIED, S.SUCCEEDED, (EventType.SUCCEEDED,)),
    ("unknown", "failure"): (K.APPLIED, S.FAILED, (EventType.FAILED,)),
    ("unknown", "still_pending"): (K.NOOP, S.UNKNOWN, ()),
    ("unknown", "expired"): (K.APPLIED, S.FAILED, (EventType.FAILED, EventType.FLAGGED)),
    ("succeeded", "accepted"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "accepted_other"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "rejected"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "unknown"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "success"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "success_other_receipt"): (K.APPLIED, S.SUCCEEDED, (EventType.FLAGGED,)),
    ("succeeded", "query_success"): (K.DUPLICATE, S.SUCCEEDED, ()),
    ("succeeded", "failure"): (K.APPLIED, S.SUCCEEDED, (EventType.FLAGGED,)),
    ("succeeded", "still_pending"): (K.IGNORED, S.SUCCEEDED, ()),
    ("succeeded", "expired"): (K.IGNORED, S.SUCCEEDED, ()),
    ("failed", "accepted"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "accepted_other"): (K.IGNORED, S.FAILED, ()),
    ("failed", "rejected"): (K.IGNORED, S.FAILED, ()),
    ("failed", "unknown"): (K.IGNORED, S.FAILED, ()),
    ("failed", "success"): (
        K.APPLIED,
        S.SUCCEEDED,
        (EventType.SUCCEEDED, EventType.CORRECTED),
    ),
    ("failed", "success_other_receipt"): (
        K.APPLIED,
        S.SUCCEEDED,
        (EventType.SUCCEEDED, EventType.CORRECTED),
    ),
    ("failed", "query_success"): (K.APPLIED, S.FAILED, (EventType.FLAGGED,)),
    ("failed", "failure"): (K.DUPLICATE, S.FAILED, ()),
    ("failed", "still_pending"): (K.IGNORED, S.FAILED, ()),
    ("failed", "expired"): (K.IGNORED, S.FAILED, ()),
    ("rejected", "accepted"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "accepted_other"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "rejected"): (K.DUPLICATE, S.REJECTED, ()),
    ("rejected", "unknown"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "success_other_receipt"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "query_success"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "failure"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "still_pending"): (K.IGNORED, S.REJECTED, ()),
    ("rejected", "expired"): (K.IGNORED, S.REJECTED, ()),
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
    if kind is not K.APPLIED:
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


@pytest.mark.parametrize("start", ["pending", "unknown"])
def test_a_code_the_catalogue_calls_not_final_leaves_the_payment_open(start: str) -> None:
    decision = decide(STATES[start], StkResult("4999", "Something odd"), lookup=lookup)
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
    assert decision.changes == {"status": S.FAILED, "failure_reason": "expired"}


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
def test_success_with_a_different_amount_or_phone_is_applied_but_flagged(
    amount: int | Decimal, phone: str, reason_part: str
) -> None:
    result = StkResult("0", receipt="R9", amount=amount, phone=phone)
    decision = decide(STATES["pending"], result)
    assert decision.status is S.SUCCEEDED
    assert decision.events == (EventType.SUCCEEDED, EventType.FLAGGED)
    assert decision.changes["flagged"] is True
    assert reason_part in decision.changes["flag_reason"]


def test_a_decimal_amount_equal_to_the_request_is_not_a_mismatch() -> None:
    result = StkResult("0", receipt="R9", amount=Decimal("10.00"), phone=PHONE)
    assert "flagged" not in decide(STATES["pending"], result).changes


def test_late_success_after_failure_is_flagged_too_when_the_amount_differs() -> None:
    result = StkResult("0", receipt="R9", amount=1, phone=PHONE)
    decision = decide(STATES["failed"], result)
    assert decision.events == (EventType.SUCCEEDED, EventType.CORRECTED, EventType.FLAGGED)


def test_the_same_flag_twice_is_a_duplicate() -> None:
    flagged = PaymentState(
        S.FAILED,
        10,
        PHONE,
        checkout_request_id="ws_X",
        flagged=True,
        flag_reason="success reported after failure without a receipt; verify",
    )
    assert decide(flagged, INPUTS["query_success"]).kind is K.DUPLICATE


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
    """Terminal states only ever move failed → succeeded; succeeded never changes status."""
    state = STATES["created"]
    for item in sequence:
        decision = decide(state, item)
        if state.status in TERMINAL_STATUSES and decision.status != state.status:
            assert (state.status, decision.status) == (S.FAILED, S.SUCCEEDED)
        if state.status is S.SUCCEEDED:
            assert decision.status is S.SUCCEEDED
        if decision.applied:
            changes = decision.changes
            state = PaymentState(
                decision.status,
                state.amount,
                state.phone,
                checkout_request_id=changes.get("checkout_request_id", state.checkout_request_id),
                result_code=changes.get("result_code", state.result_code),
                receipt=changes.get("receipt", state.receipt),
                flagged=changes.get("flagged", state.flagged),
                flag_reason=changes.get("flag_reason", state.flag_reason),
            )
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
        changes = first.changes
        after = PaymentState(
            first.status,
            start.amount,
            start.phone,
            checkout_request_id=changes.get("checkout_request_id", start.checkout_request_id),
            result_code=changes.get("result_code", start.result_code),
            receipt=changes.get("receipt", start.receipt),
            flagged=changes.get("flagged", start.flagged),
            flag_reason=changes.get("flag_reason", start.flag_reason),
        )
        again = decide(after, item)
        assert again.kind is not K.APPLIED or EventType.SUCCEEDED not in again.events
        assert again.status == first.status
