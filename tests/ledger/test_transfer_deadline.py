"""The one rule every checker follows for a payout's or refund's deadline (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pesa.ledger import (
    flag_late_transfer,
    next_transfer_check,
    transfer_deadline,
    transfer_grace,
)

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
HOUR = 3600.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class TestDeadline:
    def test_counts_from_the_first_send_not_the_creation(self) -> None:
        deadline = transfer_deadline(
            created_at=T0, first_sent_at=at(900), verify_since=None, settled=False, seconds=HOUR
        )
        assert deadline == at(900 + HOUR)

    def test_an_open_transfer_awaiting_verification_still_counts_from_its_send(self) -> None:
        deadline = transfer_deadline(
            created_at=T0, first_sent_at=at(5), verify_since=at(50), settled=False, seconds=HOUR
        )
        assert deadline == at(5 + HOUR)

    def test_a_settled_transfer_awaiting_verification_counts_from_when_it_was_asked(
        self,
    ) -> None:
        deadline = transfer_deadline(
            created_at=T0, first_sent_at=at(5), verify_since=at(50), settled=True, seconds=HOUR
        )
        assert deadline == at(50 + HOUR)

    def test_never_sent_counts_from_the_creation(self) -> None:
        deadline = transfer_deadline(
            created_at=T0, first_sent_at=None, verify_since=None, settled=False, seconds=30
        )
        assert deadline == at(30)

    @given(
        queued=st.floats(min_value=0, max_value=10 * HOUR),
        seconds=st.floats(min_value=1, max_value=HOUR),
    )
    def test_a_late_send_never_brings_the_deadline_forward(
        self, queued: float, seconds: float
    ) -> None:
        sent = transfer_deadline(
            created_at=T0,
            first_sent_at=at(queued),
            verify_since=None,
            settled=False,
            seconds=seconds,
        )
        assert sent >= transfer_deadline(
            created_at=T0, first_sent_at=None, verify_since=None, settled=False, seconds=seconds
        )


@pytest.mark.parametrize(("status_after", "grace"), [(0, 10), (2, 10), (30, 30), (600, 60)])
def test_the_last_answer_gets_status_after_within_10_to_60_seconds(
    status_after: float, grace: float
) -> None:
    assert transfer_grace(status_after) == grace


class TestLateDecision:
    deadline = at(HOUR)
    grace = 10.0

    def flag(
        self, now: datetime, asked_at: datetime | None, outcome: str | None, **kw: bool
    ) -> bool:
        return flag_late_transfer(
            now, self.deadline, grace=self.grace, asked_at=asked_at, asked_outcome=outcome, **kw
        )

    def test_never_asked_since_the_deadline_asks_once_more(self) -> None:
        assert not self.flag(self.deadline, None, None)
        # The last question was asked before the deadline, even if it was answered.
        assert not self.flag(at(HOUR + 5), at(HOUR - 1), "answered")

    @pytest.mark.parametrize("outcome", ["answered", "timed_out"])
    def test_an_answer_to_the_question_asked_at_the_deadline_flags(self, outcome: str) -> None:
        assert self.flag(at(HOUR + 1), self.deadline, outcome)

    def test_a_question_at_the_deadline_gets_its_grace_before_the_flag(self) -> None:
        assert not self.flag(at(HOUR + 9), self.deadline, "sent")
        assert self.flag(at(HOUR + 10), self.deadline, "sent")

    @pytest.mark.parametrize("outcome", ["error", "rate_limited"])
    def test_a_question_daraja_did_not_take_asks_again(self, outcome: str) -> None:
        assert not self.flag(at(HOUR + 60), at(HOUR + 1), outcome)

    def test_silence_long_after_the_deadline_flags(self) -> None:
        assert not self.flag(at(HOUR + 299), at(HOUR + 1), "error")
        assert self.flag(at(HOUR + 300), at(HOUR + 1), "error")
        assert self.flag(at(HOUR + 300), None, None)
        long = flag_late_transfer(
            at(HOUR + 599), self.deadline, grace=60, asked_at=None, asked_outcome=None
        )
        assert not long  # 10 x grace when that is longer than 300 s

    def test_nothing_to_ask_by_flags_at_the_deadline(self) -> None:
        assert self.flag(self.deadline, None, None, askable=False)


class TestNextCheck:
    def test_before_the_deadline_no_later_than_the_deadline(self) -> None:
        assert next_transfer_check(at(0), at(100), wait=30, grace=10) == at(30)
        assert next_transfer_check(at(90), at(100), wait=30, grace=10) == at(100)

    def test_past_the_deadline_after_the_grace(self) -> None:
        assert next_transfer_check(at(100), at(100), wait=30, grace=10) == at(110)
