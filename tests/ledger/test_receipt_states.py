"""The receipt and expected-payment rules, pure: who may say that money came in."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pesa.ledger import (
    Cancel,
    Confirmation,
    DecisionKind,
    ExpectedEvent,
    ExpectedState,
    ExpectedStatus,
    MatchCandidate,
    ReceiptEvent,
    ReceiptState,
    ReceiptStatus,
    StatusAnswer,
    Tally,
    VerificationAbandoned,
    choose_expected,
    counts,
    decide_expected,
    decide_receipt,
    new_receipt,
    reference_key,
)

CONFIRMATION = Confirmation("RKL51ZDR4F", Decimal("1500.00"), "600997", "INV-1042", "2547****126")
FOUND = StatusAnswer(
    "0",
    amount=Decimal("1500"),
    transaction_status="Completed",
    credit_party="600997 - Shop",
    receipt_no="RKL51ZDR4F",
)


def state(status: ReceiptStatus = ReceiptStatus.RECEIVED, **changes: object) -> ReceiptState:
    values: dict[str, object] = {
        "status": status,
        "trans_id": "RKL51ZDR4F",
        "amount": Decimal("1500.00"),
        "shortcode": "600997",
        "account_reference": "INV-1042",
        "msisdn": "2547****126",
        "verifying": status is ReceiptStatus.RECEIVED,
    }
    values.update(changes)
    return ReceiptState(**values)  # type: ignore[arg-type]


class TestANewReceipt:
    def test_a_confirmation_is_evidence_asked_about_when_it_can_be(self) -> None:
        decision = new_receipt(CONFIRMATION, verifiable=True)
        assert decision.status is ReceiptStatus.RECEIVED
        assert decision.verify and decision.events == (ReceiptEvent.RECEIVED,)
        assert counts(decision.status) == "pending"

    @pytest.mark.parametrize(("verifiable", "policy"), [(False, "auto"), (True, "never")])
    def test_a_confirmation_nobody_can_check_is_unverified_but_counts(
        self, verifiable: bool, policy: str
    ) -> None:
        decision = new_receipt(CONFIRMATION, verifiable=verifiable, policy=policy)  # type: ignore[arg-type]
        assert decision.status is ReceiptStatus.UNVERIFIED and not decision.verify
        assert counts(decision.status) == "paid"

    def test_a_lookup_creates_a_receipt_only_when_daraja_found_it_completed(self) -> None:
        found = new_receipt(FOUND, verifiable=True)
        assert found.status is ReceiptStatus.CONFIRMED
        assert found.events == (ReceiptEvent.RECEIVED, ReceiptEvent.CONFIRMED)
        assert found.changes["source"] == "lookup"
        for answer in (
            StatusAnswer("2032", "The transaction receipt number does not exist."),
            StatusAnswer("0", amount=Decimal(5), transaction_status="Reversed"),
            StatusAnswer("8006", "The security credential is locked."),
        ):
            assert new_receipt(answer, verifiable=True).kind is DecisionKind.IGNORED


class TestRepeats:
    def test_the_same_confirmation_again_is_a_duplicate(self) -> None:
        for status in ReceiptStatus:
            assert decide_receipt(state(status), CONFIRMATION).kind is DecisionKind.DUPLICATE

    def test_a_repeat_that_disagrees_is_a_flag_never_a_second_receipt(self) -> None:
        forged = Confirmation("RKL51ZDR4F", Decimal("15000.00"), "600997", "INV-1042")
        decision = decide_receipt(state(), forged)
        assert decision.events == (ReceiptEvent.FLAGGED,)
        assert "amount 15000.00 (recorded 1500.00)" in decision.changes["flag_reason"]
        assert "amount" not in decision.changes and "status" not in decision.changes
        # The same disagreement again is not flagged twice.
        flagged = state(flagged=True, flag_reason=decision.changes["flag_reason"])
        assert decide_receipt(flagged, forged).kind is DecisionKind.DUPLICATE

    def test_account_numbers_agree_as_customers_type_them(self) -> None:
        typed = Confirmation("RKL51ZDR4F", Decimal("1500.00"), "600997", " inv-1042 ")
        assert decide_receipt(state(), typed).kind is DecisionKind.DUPLICATE
        assert reference_key(" inv 1042\t") == reference_key("INV-1042") == "INV1042"

    def test_a_confirmation_completes_a_receipt_a_lookup_found(self) -> None:
        found = state(ReceiptStatus.CONFIRMED, source="lookup", msisdn=None, account_reference=None)
        decision = decide_receipt(found, CONFIRMATION)
        assert decision.kind is DecisionKind.APPLIED
        assert decision.events == (ReceiptEvent.UPDATED,)
        assert decision.changes["account_reference"] == "INV-1042"
        assert decision.rematch and decision.status is ReceiptStatus.CONFIRMED


class TestDarajasAnswer:
    def test_a_matching_answer_confirms(self) -> None:
        decision = decide_receipt(state(), FOUND)
        assert decision.status is ReceiptStatus.CONFIRMED
        assert decision.events == (ReceiptEvent.CONFIRMED,)
        assert decision.changes["verify_at"] is None

    @pytest.mark.parametrize(
        ("answer", "reason"),
        [
            (StatusAnswer("2032", "does not exist"), "does not exist"),
            (
                StatusAnswer("0", amount=Decimal(1500), transaction_status="Reversed"),
                "Daraja reports it Reversed",
            ),
            (
                StatusAnswer("0", amount=Decimal(1500), credit_party="600000 - Other"),
                "paid to 600000",
            ),
            (
                StatusAnswer("0", amount=Decimal(1500), receipt_no="OTHER12345"),
                "answered about OTHER12345",
            ),
        ],
    )
    def test_an_answer_that_contradicts_the_confirmation_refutes_it(
        self, answer: StatusAnswer, reason: str
    ) -> None:
        decision = decide_receipt(state(), answer)
        assert decision.status is ReceiptStatus.REFUTED
        assert decision.events == (ReceiptEvent.REFUTED,)
        assert decision.changes["flagged"] and reason in decision.changes["flag_reason"]
        assert counts(decision.status) == "none"

    def test_daraja_amount_wins_over_the_confirmation_and_is_flagged(self) -> None:
        # A forged first copy of a real receipt said 15000: Daraja's 1500 counts.
        inflated = state(amount=Decimal("15000.00"))
        decision = decide_receipt(inflated, FOUND)
        assert decision.status is ReceiptStatus.CONFIRMED
        assert decision.events == (ReceiptEvent.CONFIRMED, ReceiptEvent.FLAGGED)
        assert decision.changes["amount"] == Decimal(1500)
        assert "Daraja's amount is recorded" in decision.changes["flag_reason"]
        later = decide_receipt(state(ReceiptStatus.CONFIRMED, amount=Decimal(99)), FOUND)
        assert later.status is ReceiptStatus.CONFIRMED and "amount" not in later.changes
        assert later.events == (ReceiptEvent.FLAGGED,)

    def test_an_operational_failure_leaves_it_to_be_asked_again(self) -> None:
        decision = decide_receipt(state(), StatusAnswer("8006", "credential locked"))
        assert decision.kind is DecisionKind.NOOP and decision.verify
        no_amount = decide_receipt(state(), StatusAnswer("0", transaction_status="Completed"))
        assert no_amount.kind is DecisionKind.NOOP

    def test_a_later_answer_disagreeing_with_a_confirmation_is_a_flag_not_a_reversal(
        self,
    ) -> None:
        decision = decide_receipt(state(ReceiptStatus.CONFIRMED), StatusAnswer("2032"))
        assert decision.status is ReceiptStatus.CONFIRMED
        assert decision.events == (ReceiptEvent.FLAGGED,)

    def test_a_refuted_receipt_daraja_later_confirms_becomes_confirmed(self) -> None:
        refuted = state(ReceiptStatus.REFUTED, flagged=True, flag_reason="no such receipt")
        decision = decide_receipt(refuted, FOUND)
        assert decision.status is ReceiptStatus.CONFIRMED
        assert "no such receipt" not in decision.changes.get("flag_reason", "")

    def test_an_unverified_receipt_a_lookup_confirms_becomes_confirmed(self) -> None:
        decision = decide_receipt(state(ReceiptStatus.UNVERIFIED, verifying=False), FOUND)
        assert decision.status is ReceiptStatus.CONFIRMED

    def test_no_answer_by_the_deadline_flags_and_keeps_it_pending(self) -> None:
        decision = decide_receipt(state(), VerificationAbandoned("no Result within 900 s"))
        assert decision.status is ReceiptStatus.RECEIVED
        assert decision.events == (ReceiptEvent.FLAGGED,)
        assert decision.changes["verify_at"] is None
        assert counts(decision.status) == "pending"


def test_matching_prefers_the_oldest_open_then_an_overpayment_never_a_cancelled_one() -> None:
    t = [datetime(2026, 12, 1, h, tzinfo=UTC) for h in range(4)]
    open_old = MatchCandidate("exp_1", ExpectedStatus.PARTIALLY_PAID, t[1])
    open_new = MatchCandidate("exp_2", ExpectedStatus.OPEN, t[2])
    paid = MatchCandidate("exp_0", ExpectedStatus.PAID, t[0])
    cancelled = MatchCandidate("exp_3", ExpectedStatus.CANCELLED, t[3])
    assert choose_expected([open_new, paid, open_old])[0] == "exp_1"
    chosen, why = choose_expected([paid, cancelled])
    assert chosen == "exp_0" and "over-payment" in why
    assert choose_expected([cancelled]) == (None, "its expected payment was cancelled")
    assert choose_expected([])[0] is None


class TestExpectedPayments:
    def expected(self, **changes: object) -> ExpectedState:
        values: dict[str, object] = {"status": ExpectedStatus.OPEN, "amount": 1500}
        values.update(changes)
        return ExpectedState(**values)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("paid", "status", "event"),
        [
            (Decimal(500), ExpectedStatus.PARTIALLY_PAID, ExpectedEvent.PARTIALLY_PAID),
            (Decimal(1500), ExpectedStatus.PAID, ExpectedEvent.PAID),
            (Decimal(1600), ExpectedStatus.OVERPAID, ExpectedEvent.OVERPAID),
        ],
    )
    def test_the_money_received_decides_the_status(
        self, paid: Decimal, status: ExpectedStatus, event: ExpectedEvent
    ) -> None:
        decision = decide_expected(self.expected(), Tally(paid, Decimal(0)))
        assert decision.status is status and decision.events == (event,)
        assert decision.changes["paid_amount"] == paid

    def test_money_announced_but_not_confirmed_does_not_pay(self) -> None:
        decision = decide_expected(self.expected(), Tally(Decimal(0), Decimal(1500)))
        assert decision.status is ExpectedStatus.OPEN and decision.events == ()
        assert decision.changes == {"pending_amount": Decimal(1500)}

    def test_every_partial_payment_is_told(self) -> None:
        partial = self.expected(status=ExpectedStatus.PARTIALLY_PAID, paid_amount=Decimal(500))
        decision = decide_expected(partial, Tally(Decimal(1000), Decimal(0)))
        assert decision.events == (ExpectedEvent.PARTIALLY_PAID,)
        same = decide_expected(partial, Tally(Decimal(500), Decimal(0)))
        assert same.kind is DecisionKind.DUPLICATE

    def test_unverified_money_flags_unless_verification_is_off(self) -> None:
        tally = Tally(Decimal(1500), Decimal(0), unverified=("rcp_1",))
        flagged = decide_expected(self.expected(), tally)
        assert flagged.events == (ExpectedEvent.PAID, ExpectedEvent.FLAGGED)
        assert "without Daraja's confirmation" in flagged.changes["flag_reason"]
        more = Tally(Decimal(1600), Decimal(0), unverified=("rcp_1", "rcp_2"))
        state = self.expected(
            status=ExpectedStatus.PAID,
            paid_amount=Decimal(1500),
            flagged=True,
            flag_reason=flagged.changes["flag_reason"],
        )
        assert decide_expected(state, more).events == (ExpectedEvent.OVERPAID,)
        trusted = decide_expected(self.expected(), tally, policy="never")
        assert trusted.events == (ExpectedEvent.PAID,)

    def test_a_refuted_confirmation_flags_the_payment_it_named(self) -> None:
        tally = Tally(Decimal(0), Decimal(0), refuted=("rcp_9",))
        decision = decide_expected(self.expected(pending_amount=Decimal(1500)), tally)
        assert decision.events == (ExpectedEvent.FLAGGED,)
        assert decision.status is ExpectedStatus.OPEN
        assert "possibly forged" in decision.changes["flag_reason"]

    def test_cancelling(self) -> None:
        assert decide_expected(self.expected(), Cancel()).status is ExpectedStatus.CANCELLED
        paid = self.expected(status=ExpectedStatus.PAID, paid_amount=Decimal(1500))
        assert decide_expected(paid, Cancel()).kind is DecisionKind.IGNORED
        cancelled = self.expected(status=ExpectedStatus.CANCELLED)
        assert decide_expected(cancelled, Cancel()).kind is DecisionKind.DUPLICATE
        late = decide_expected(cancelled, Tally(Decimal(1500), Decimal(0)))
        assert late.status is ExpectedStatus.CANCELLED
        assert late.events == (ExpectedEvent.FLAGGED,)
        assert "received after it was cancelled" in late.changes["flag_reason"]
