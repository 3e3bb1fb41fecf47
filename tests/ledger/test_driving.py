"""The rules every storage shares (pesa.ledger._driving): the SQLAlchemy ledger and the Django
app call these, so each is pinned here once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pesa import (
    BadRequestError,
    ConfigurationError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from pesa.daraja import StkQueryResponse
from pesa.ledger import (
    Decision,
    DecisionKind,
    EventType,
    LedgerConflictError,
    OutcomeUnknown,
    Payment,
    PaymentState,
    PaymentStatus,
    Rejected,
    StillPending,
    StkResult,
    callback_status,
    merchant_request_mismatch,
    payment_state,
    push_failure,
    query_input,
    recheck_delay,
    reconcile_deadline,
    refuses_unverified_id,
    request_hash,
    row_changes,
    single_orphan,
    storable_key,
    storable_text,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _payment(**changes: object) -> Payment:
    values: dict[str, object] = {
        "id": "pay_1",
        "status": PaymentStatus.PENDING,
        "phone": "254708374149",
        "amount": 10,
        "account_reference": "A",
        "description": "D",
        "metadata": None,
        "idempotency_key": None,
        "checkout_request_id": "ws_CO_1",
        "merchant_request_id": None,
        "result_code": None,
        "result_desc": None,
        "receipt": None,
        "paid_amount": None,
        "paid_phone": None,
        "transaction_date": None,
        "failure_reason": None,
        "flagged": False,
        "flag_reason": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(changes)
    return Payment(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ValidationError("phone", "bad"), Rejected("validation_error", "phone: bad")),
        (ConfigurationError("no passkey"), Rejected("configuration_error", "no passkey")),
        (
            OutcomeUnknownError("stk_push", {}, "read timeout"),
            OutcomeUnknown("stk_push: outcome unknown, settle by query: read timeout"),
        ),
        (
            TransportError("refused"),
            Rejected("connection_error", "Daraja could not be reached: refused"),
        ),
        (
            RateLimitError(500, "500.003.02", "Spike Arrest", None, ""),
            Rejected("500.003.02", "Spike Arrest"),
        ),
        (
            BadRequestError(400, "400.002.02", "Invalid Amount", None, ""),
            Rejected("400.002.02", "Invalid Amount"),
        ),
        (
            ServerError(500, "500.001.1001", "Unable to lock subscriber", None, ""),
            Rejected("500.001.1001", "Unable to lock subscriber"),
        ),
    ],
)
def test_push_failures_that_prove_nothing_was_processed_are_rejections(
    error: Exception, expected: Rejected | OutcomeUnknown
) -> None:
    assert push_failure(error) == expected


@pytest.mark.parametrize(
    "error",
    [
        ServerError(500, "500.001.1001", "Internal Server Error", None, ""),
        ServerError(503, None, "Service Unavailable", None, ""),
        RuntimeError("a bug"),
    ],
)
def test_any_other_push_failure_is_settled_by_query(error: Exception) -> None:
    assert isinstance(push_failure(error), OutcomeUnknown)


def _query(**fields: object) -> StkQueryResponse:
    return StkQueryResponse.model_validate({"CheckoutRequestID": "ws_CO_1", **fields})


def test_query_answers_become_inputs_and_never_fail_on_a_guess() -> None:
    assert isinstance(query_input(_query(pending=True)), StillPending)
    assert query_input(_query(ResultCode="0", ResultDesc="ok")) == StkResult(
        "0", "ok", source="query"
    )
    assert query_input(_query(ResultCode="1032")) == StkResult("1032", source="query")
    assert isinstance(query_input(_query(ResultCode="987654")), StillPending)  # unknown code


def test_only_an_unverified_id_is_refused_and_only_by_a_request_error() -> None:
    bad = BadRequestError(400, "400.002.02", "Invalid CheckoutRequestID", None, "")
    assert refuses_unverified_id(False, bad)
    assert not refuses_unverified_id(True, bad)
    assert not refuses_unverified_id(False, ServerError(500, None, "x", None, ""))
    assert not refuses_unverified_id(False, BadRequestError(404, "404.001.03", "token", None, ""))


def test_recheck_waits_grow_by_half_up_to_the_cap() -> None:
    assert [recheck_delay(n, 10, 30) for n in (0, 1, 2, 3, 4)] == [10, 10, 15, 22.5, 30]


def test_the_deadline_counts_from_creation_or_from_the_verification() -> None:
    since = NOW + timedelta(minutes=5)
    assert reconcile_deadline("pending", NOW, since, 60) == NOW + timedelta(seconds=60)
    assert reconcile_deadline("failed", NOW, since, 60) == since + timedelta(seconds=60)
    assert reconcile_deadline("failed", NOW, None, 60) == NOW + timedelta(seconds=60)


def test_a_decision_becomes_columns() -> None:
    nairobi = timezone(timedelta(hours=3))
    decision = Decision(
        DecisionKind.APPLIED,
        PaymentStatus.SUCCEEDED,
        (EventType.SUCCEEDED,),
        {
            "status": PaymentStatus.SUCCEEDED,
            "transaction_date": datetime(2026, 1, 1, 12, tzinfo=nairobi),
        },
        verify=True,
        keep_evidence=True,
    )
    changes = row_changes(decision, now=NOW, verify_since=None, callback_id="cb_1")
    assert changes["status"] == "succeeded" and changes["claimed_until"] is None
    assert changes["next_check_at"] is None
    assert changes["verify_at"] == NOW and changes["verify_since"] == NOW
    assert changes["evidence_callback_id"] == "cb_1"
    assert changes["transaction_date"] == datetime(2026, 1, 1, 9, tzinfo=UTC)
    earlier = NOW - timedelta(hours=1)
    assert (
        row_changes(decision, now=NOW, verify_since=earlier, callback_id="cb_1")["verify_since"]
        == earlier
    )
    with pytest.raises(LedgerConflictError, match="evidence"):
        row_changes(decision, now=NOW, verify_since=None)


def test_each_decision_kind_has_its_callback_outcome() -> None:
    labels = {kind: callback_status(Decision(kind, PaymentStatus.PENDING)) for kind in DecisionKind}
    assert labels == {
        DecisionKind.APPLIED: "applied",
        DecisionKind.UNVERIFIED: "unverified",
        DecisionKind.REFUSED: "invalid",
        DecisionKind.NOOP: "ignored",
        DecisionKind.DUPLICATE: "duplicate",
        DecisionKind.IGNORED: "ignored",
    }


def test_the_merchant_request_id_disqualifies_only_when_both_sides_have_one() -> None:
    assert merchant_request_mismatch("a", "b")
    assert merchant_request_mismatch("a", "a") is None
    assert merchant_request_mismatch(None, "b") is None
    assert merchant_request_mismatch("a", None) is None


def test_a_stored_row_becomes_the_state_machines_view() -> None:
    evidence = StkResult("0", receipt="R1", amount=10, phone="254708374149")
    state = payment_state(
        _payment(verify_at=NOW, evidence_callback_id="cb_9"), evidence, evidence_refused=True
    )
    assert state == PaymentState(
        status=PaymentStatus.PENDING,
        amount=10,
        phone="254708374149",
        checkout_request_id="ws_CO_1",
        evidence=evidence,
        evidence_id="cb_9",
        evidence_refused=True,
        verifying=True,
    )


def test_an_ambiguous_orphan_id_is_never_adopted() -> None:
    state = payment_state(_payment(status=PaymentStatus.UNKNOWN, checkout_request_id=None))
    fits = StkResult("0", receipt="R", amount=Decimal(10), phone="254708374149")
    other = StkResult("0", receipt="R", amount=11, phone="254708374149")
    assert single_orphan(state, [("cb_1", "ws_A", fits), ("cb_2", "ws_A", fits)]) == (
        "cb_1",
        "ws_A",
    )
    assert single_orphan(state, [("cb_1", "ws_A", fits), ("cb_2", "ws_B", fits)]) is None
    assert single_orphan(state, [("cb_1", "ws_A", fits), ("cb_2", "ws_B", other)]) == (
        "cb_1",
        "ws_A",
    )
    assert single_orphan(state, [("cb_1", "ws_A", fits)], taken=["ws_A"]) is None


def test_the_idempotency_fingerprint_is_the_whole_request() -> None:
    one = request_hash("254708374149", 10, "A", "D", {"x": 1})
    assert one == request_hash("254708374149", 10, "A", "D", {"x": 1})
    assert one != request_hash("254708374149", 11, "A", "D", {"x": 1})
    assert one != request_hash("254708374149", 10, "A", "D", {"x": 2})


def test_hostile_text_is_made_storable() -> None:
    assert storable_key("ws_CO_1", 128)
    assert not storable_key("ws\x00", 128) and not storable_key("x" * 129, 128)
    assert not storable_key("\u0663", 10) and not storable_key("", 10)
    assert storable_text("a\x00b\ud800", 10) == "a\\x00b\\ud800"
    assert len(storable_text("x" * 5000)) == 1000
