"""The payout and refund state machine (pure): who may say money moved, and never twice."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pesa.ledger import (
    DecisionKind,
    TransferAccepted,
    TransferEvent,
    TransferExpired,
    TransferInput,
    TransferNotFound,
    TransferOutcomeUnknown,
    TransferRefused,
    TransferResult,
    TransferState,
    TransferStatus,
    TransferTimedOut,
    decide_transfer,
    initiator_code,
    status_outcome,
)
from pesa.ledger._payout_states import is_placeholder_receipt

S = TransferStatus
CID = "AG_20261129_0001"
OCID = "po_01TEST"


def state(status: S = S.PENDING, **fields: object) -> TransferState:
    base: dict[str, object] = {
        "status": status,
        "amount": 1500,
        "attempts": 1,
        "originator_conversation_id": OCID,
        "conversation_id": CID if status is not S.CREATED else None,
        "phone": "254708374149",
    }
    base.update(fields)
    return TransferState(**base)  # type: ignore[arg-type]


def paid(**fields: object) -> TransferResult:
    base: dict[str, object] = {
        "result_code": "0",
        "result_desc": "The service request is processed successfully.",
        "conversation_id": CID,
        "originator_conversation_id": OCID,
        "receipt": "SG632NMUAB",
        "amount": Decimal(1500),
        "counterparty": "254708374149 - JOHN DOE",
    }
    base.update(fields)
    return TransferResult(**base)  # type: ignore[arg-type]


def found(status: str = "Completed", **fields: object) -> TransferResult:
    base: dict[str, object] = {
        "result_code": "0",
        "source": "status",
        "transaction_status": status,
        "originator_conversation_id": OCID,
        "receipt": "SG632NMUAB",
        "amount": Decimal(1500),
    }
    base.update(fields)
    return TransferResult(**base)  # type: ignore[arg-type]


def decide(s: TransferState, event: TransferInput, **kw: object) -> object:
    return decide_transfer(s, event, lookup=initiator_code, **kw)  # type: ignore[arg-type]


class TestSend:
    def test_accepted_makes_it_pending_with_daraja_s_id(self) -> None:
        d = decide_transfer(state(S.CREATED), TransferAccepted(CID, OCID))
        assert d.status is S.PENDING
        assert d.events == (TransferEvent.PENDING,)
        assert d.changes["conversation_id"] == CID and d.changes["ids_verified"] is True

    def test_refused_on_the_first_send_is_rejected(self) -> None:
        d = decide_transfer(state(S.CREATED), TransferRefused("400.002.02", "Invalid PartyB"))
        assert d.status is S.REJECTED
        assert d.events == (TransferEvent.REJECTED,)

    def test_a_refused_re_send_proves_nothing_so_it_is_never_rejected(self) -> None:
        d = decide_transfer(
            state(S.CREATED, attempts=2), TransferRefused("400.002.02", "Invalid PartyB")
        )
        assert d.status is S.UNKNOWN
        d = decide_transfer(state(S.UNKNOWN, attempts=2), TransferRefused("401", "token"))
        assert d.kind is DecisionKind.NOOP and d.status is S.UNKNOWN

    def test_a_duplicate_refusal_means_an_earlier_send_arrived(self) -> None:
        d = decide_transfer(
            state(S.CREATED, attempts=2),
            TransferRefused("500.002.1001", "Duplicate OriginatorConversationID.", True),
        )
        assert d.status is S.UNKNOWN and d.verify
        d = decide_transfer(
            state(S.UNKNOWN), TransferRefused("500.002.1001", "Duplicate", duplicate=True)
        )
        assert d.kind is DecisionKind.NOOP and d.verify

    def test_no_answer_is_unknown_and_asks_for_status(self) -> None:
        d = decide_transfer(state(S.CREATED), TransferOutcomeUnknown("ReadTimeout"))
        assert d.status is S.UNKNOWN and d.verify
        assert d.events == (TransferEvent.UNKNOWN,)


class TestResults:
    def test_a_result_naming_daraja_s_id_with_receipt_and_amount_succeeds(self) -> None:
        d = decide_transfer(state(), paid())
        assert d.status is S.SUCCEEDED
        assert d.changes["receipt"] == "SG632NMUAB"
        assert d.changes["counterparty"] == "254708374149 - JOHN DOE"

    @pytest.mark.parametrize(
        ("result", "why"),
        [
            (paid(receipt=None), "no receipt"),
            (paid(amount=None), "no amount"),
            (paid(conversation_id=None), "ConversationID"),
        ],
    )
    def test_a_success_that_cannot_be_cross_checked_is_evidence(
        self, result: TransferResult, why: str
    ) -> None:
        d = decide_transfer(state(), result)
        assert d.kind is DecisionKind.UNVERIFIED and d.status is S.PENDING
        assert d.verify and d.keep_evidence
        assert why in d.detail

    def test_when_the_answer_was_lost_even_a_perfect_result_waits_for_status(self) -> None:
        d = decide_transfer(state(S.UNKNOWN, conversation_id=None), paid())
        assert d.kind is DecisionKind.UNVERIFIED and d.verify

    @pytest.mark.parametrize(
        "result",
        [paid(amount=Decimal(1)), paid(counterparty="254700000001 - MALLORY")],
    )
    def test_a_success_that_contradicts_the_payout_is_refused(self, result: TransferResult) -> None:
        d = decide_transfer(state(), result)
        assert d.kind is DecisionKind.REFUSED and d.status is S.PENDING and d.verify

    def test_a_result_with_another_conversation_id_changes_nothing(self) -> None:
        d = decide_transfer(state(), paid(conversation_id="AG_forged"))
        assert d.kind is DecisionKind.REFUSED and not d.verify and not d.changes

    def test_a_failure_naming_daraja_s_id_fails(self) -> None:
        d = decide(state(), TransferResult("1", "insufficient", conversation_id=CID))
        assert d.status is S.FAILED  # type: ignore[attr-defined]
        assert "insufficient" in d.changes["failure_reason"]  # type: ignore[attr-defined]

    def test_a_failure_that_cannot_name_daraja_s_id_is_evidence(self) -> None:
        d = decide(state(S.UNKNOWN, conversation_id=None), TransferResult("1", "x"))
        assert d.kind is DecisionKind.UNVERIFIED  # type: ignore[attr-defined]
        assert d.status is S.UNKNOWN  # type: ignore[attr-defined]

    def test_a_code_not_known_to_be_final_is_never_a_failure(self) -> None:
        d = decide(state(), TransferResult("100000000", "cached", conversation_id=CID))
        assert d.kind is DecisionKind.NOOP and d.verify  # type: ignore[attr-defined]

    def test_a_replay_is_a_duplicate(self) -> None:
        s = state(S.SUCCEEDED, receipt="SG632NMUAB")
        assert decide_transfer(s, paid()).kind is DecisionKind.DUPLICATE

    def test_a_second_receipt_or_a_failure_after_success_is_flagged_never_unpaid(self) -> None:
        s = state(S.SUCCEEDED, receipt="SG632NMUAB")
        for event in (paid(receipt="OTHER12345"), TransferResult("1", conversation_id=CID)):
            d = decide_transfer(s, event)
            assert d.status is S.SUCCEEDED and d.changes["flagged"] is True

    def test_a_success_reported_for_a_failed_payout_waits_for_status(self) -> None:
        d = decide_transfer(state(S.FAILED), paid())
        assert d.kind is DecisionKind.UNVERIFIED and d.status is S.FAILED and d.verify

    def test_a_queue_timeout_makes_a_pending_payout_unknown(self) -> None:
        d = decide_transfer(state(), TransferTimedOut())
        assert d.status is S.UNKNOWN and d.verify
        assert decide_transfer(state(S.SUCCEEDED), TransferTimedOut()).kind is (
            DecisionKind.IGNORED
        )


class TestTransactionStatus:
    def test_completed_settles_an_unknown_payout_with_its_receipt(self) -> None:
        d = decide_transfer(state(S.UNKNOWN, conversation_id=None), found())
        assert d.status is S.SUCCEEDED and d.changes["receipt"] == "SG632NMUAB"
        assert not d.changes.get("flagged")

    def test_completed_keeps_the_evidence_s_details(self) -> None:
        s = state(S.UNKNOWN, conversation_id=None, evidence=paid(), evidence_id="cb_1")
        d = decide_transfer(s, found(receipt=None))
        assert d.status is S.SUCCEEDED
        assert d.changes["counterparty"] == "254708374149 - JOHN DOE"

    def test_completed_corrects_a_failed_payout_and_flags_it(self) -> None:
        d = decide_transfer(state(S.FAILED, verifying=True), found())
        assert d.status is S.SUCCEEDED
        assert TransferEvent.CORRECTED in d.events and TransferEvent.FLAGGED in d.events

    def test_a_different_amount_is_applied_and_flagged(self) -> None:
        d = decide_transfer(state(), found(amount=Decimal(15)))
        assert d.status is S.SUCCEEDED and d.changes["flagged"] is True

    def test_a_final_failure_word_fails_it(self) -> None:
        d = decide_transfer(state(S.UNKNOWN), found("Declined"))
        assert d.status is S.FAILED

    def test_not_found_re_sends_an_unknown_payout_daraja_never_accepted(self) -> None:
        s = state(S.UNKNOWN, conversation_id=None)
        d = decide_transfer(s, TransferNotFound(), resend=True)
        assert d.resend and d.status is S.UNKNOWN
        assert not decide_transfer(s, TransferNotFound(), resend=False).resend
        assert not decide_transfer(s, TransferNotFound(), kind="refund", resend=True).resend
        spent = dataclasses.replace(s, attempts=3)
        assert not decide_transfer(spent, TransferNotFound(), resend=True).resend

    def test_not_found_never_re_sends_what_daraja_accepted(self) -> None:
        d = decide_transfer(state(S.UNKNOWN), TransferNotFound(), resend=True)
        assert not d.resend

    def test_not_found_with_a_failure_result_fails_it(self) -> None:
        failure = TransferResult("1", "insufficient", originator_conversation_id=OCID)
        s = state(S.UNKNOWN, conversation_id=None, evidence=failure, evidence_id="cb_1")
        assert decide_transfer(s, TransferNotFound(), resend=True).status is S.FAILED

    def test_another_request_s_status_is_flagged(self) -> None:
        d = decide_transfer(state(), found(originator_conversation_id="po_other"))
        assert d.status is S.PENDING and d.changes["flagged"] is True


class TestDeadline:
    @pytest.mark.parametrize("status", [S.CREATED, S.PENDING, S.UNKNOWN])
    def test_an_open_payout_is_flagged_and_stays_unknown_never_failed(self, status: S) -> None:
        d = decide_transfer(state(status), TransferExpired())
        assert d.status is S.UNKNOWN
        assert d.changes["flagged"] is True
        assert "before sending it again" in d.changes["flag_reason"]
        assert d.events[-1] is TransferEvent.FLAGGED

    def test_a_final_payout_does_not_expire(self) -> None:
        assert decide_transfer(state(S.SUCCEEDED), TransferExpired()).kind is DecisionKind.IGNORED


def test_status_words() -> None:
    assert status_outcome("Completed") == "succeeded"
    assert status_outcome("declined") == "failed"
    assert status_outcome("Authorized") == "pending"
    assert status_outcome(None) == "pending"


@pytest.mark.parametrize("value", [None, "", "OAK0000000", "XXXXXXXXXX", "0000"])
def test_placeholder_receipts_are_not_receipts(value: str | None) -> None:
    assert is_placeholder_receipt(value)


def test_a_real_receipt_is_a_receipt() -> None:
    assert not is_placeholder_receipt("SG632NMUAB")


_inputs = st.one_of(
    st.builds(TransferAccepted, st.sampled_from([CID, "AG_other"])),
    st.builds(
        TransferRefused,
        st.sampled_from(["400.002.02", "500.002.1001"]),
        st.just("x"),
        st.booleans(),
    ),
    st.builds(TransferOutcomeUnknown, st.just("timeout")),
    st.just(TransferTimedOut()),
    st.just(TransferNotFound()),
    st.builds(
        TransferResult,
        st.sampled_from(["0", "1", "2001", "100000000"]),
        conversation_id=st.sampled_from([CID, None, "AG_forged"]),
        originator_conversation_id=st.sampled_from([OCID, None]),
        receipt=st.sampled_from(["SG632NMUAB", None, "OTHER12345"]),
        amount=st.sampled_from([Decimal(1500), None, Decimal(1)]),
        source=st.just("callback"),
    ),
    st.builds(found, st.sampled_from(["Completed", "Declined", "Pending"])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_inputs, max_size=12), st.sampled_from([S.CREATED, S.PENDING]))
def test_no_sequence_of_inputs_unpays_or_fails_what_status_confirmed(
    events: list[TransferInput], start: S
) -> None:
    """Whatever arrives, in any order: a payout Transaction Status says completed is never
    failed afterwards, and succeeded is never left except by nothing."""
    s = state(start)
    confirmed = False
    for event in events:
        d = decide_transfer(s, event, lookup=initiator_code, resend=True)
        if d.writes and "status" in d.changes:
            new = d.changes["status"]
            if s.status is S.SUCCEEDED:
                pytest.fail(f"succeeded left for {new} on {event!r}")
            if confirmed:
                assert new is S.SUCCEEDED
        if (
            isinstance(event, TransferResult)
            and event.source == "status"
            and d.status is (S.SUCCEEDED)
        ):
            confirmed = True
        s = dataclasses.replace(
            s,
            status=d.status,
            conversation_id=d.changes.get("conversation_id", s.conversation_id),
            receipt=d.changes.get("receipt", s.receipt),
            flagged=d.changes.get("flagged", s.flagged),
            flag_reason=d.changes.get("flag_reason", s.flag_reason),
        )
