"""The retry schedule (``Backoff``) and the query-rate bound (``TokenBucket``)."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pesa import ValidationError
from pesa.gateway import Backoff, TokenBucket


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


class TestBackoff:
    def test_doubles_from_base_until_the_cap(self) -> None:
        backoff = Backoff(base=5, cap=60, jitter=0)
        assert [backoff.delay(n) for n in range(1, 7)] == [5, 10, 20, 40, 60, 60]

    def test_jitter_only_shortens_the_delay(self) -> None:
        backoff = Backoff(base=10, cap=100, jitter=0.5)
        assert backoff.delay(2, FixedRandom(0.0)) == 20
        assert backoff.delay(2, FixedRandom(0.999)) == pytest.approx(10.01)

    def test_huge_attempt_numbers_do_not_overflow(self) -> None:
        assert Backoff(base=1, cap=3600, jitter=0).delay(10_000) == 3600

    @given(
        attempt=st.integers(min_value=1, max_value=500),
        base=st.floats(min_value=0.001, max_value=100),
        spread=st.floats(min_value=1, max_value=1000),
        jitter=st.floats(min_value=0, max_value=0.99),
        draw=st.floats(min_value=0, max_value=0.9999),
    )
    def test_delay_stays_within_bounds(
        self, attempt: int, base: float, spread: float, jitter: float, draw: float
    ) -> None:
        backoff = Backoff(base=base, cap=base * spread, jitter=jitter)
        delay = backoff.delay(attempt, FixedRandom(draw))
        assert base * (1 - jitter) * (1 - 1e-9) <= delay <= backoff.cap
        assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"base": 0}, "base"),
            ({"base": 10, "cap": 5}, "cap"),
            ({"factor": 0.5}, "factor"),
            ({"jitter": 1.0}, "jitter"),
            ({"jitter": -0.1}, "jitter"),
        ],
    )
    def test_bad_parameters_name_the_field(self, kwargs: dict[str, float], field: str) -> None:
        with pytest.raises(ValidationError) as info:
            Backoff(**kwargs)
        assert info.value.field == field

    def test_attempt_zero_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="attempt"):
            Backoff().delay(0)


class FakeTime:
    """A monotonic clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.t, UTC)

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds
        await anyio.lowlevel.checkpoint()


class TestTokenBucket:
    async def test_burst_then_steady_rate(self) -> None:
        fake = FakeTime()
        bucket = TokenBucket(rate=4, burst=2, clock=fake, sleep=fake.sleep)
        for _ in range(10):
            await bucket.acquire()
        # Two free tokens, then eight at 4 per second: two seconds of (fake) waiting.
        assert fake.t - 1000.0 == pytest.approx(2.0)

    async def test_rate_bound_holds_for_concurrent_callers(self) -> None:
        fake = FakeTime()
        bucket = TokenBucket(rate=2, burst=1, clock=fake, sleep=fake.sleep)
        stamps: list[float] = []

        async def worker() -> None:
            for _ in range(5):
                await bucket.acquire()
                stamps.append(fake.t)

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
        assert len(stamps) == 20
        stamps.sort()
        # Any window of length w holds at most burst + rate * w acquisitions.
        for i, start in enumerate(stamps):
            in_window = [s for s in stamps[i:] if s - start < 1.0 - 1e-9]
            assert len(in_window) <= 1 + 2 * 1.0

    async def test_pause_blocks_every_token_until_it_ends(self) -> None:
        fake = FakeTime()
        bucket = TokenBucket(rate=10, burst=5, clock=fake, sleep=fake.sleep)
        await bucket.acquire()
        bucket.pause(30)
        assert not bucket.try_acquire()
        assert bucket.wait_time() == pytest.approx(30)
        await bucket.acquire()
        assert fake.t - 1000.0 == pytest.approx(30)
        # The saved-up burst was dropped: the next token comes at the steady rate.
        assert not bucket.try_acquire()
        assert bucket.wait_time() == pytest.approx(0.1)

    def test_try_acquire_never_waits(self) -> None:
        fake = FakeTime()
        bucket = TokenBucket(rate=1, burst=1, clock=fake, sleep=fake.sleep)
        assert bucket.try_acquire()
        assert not bucket.try_acquire()
        fake.t += 1
        assert bucket.try_acquire()

    @pytest.mark.parametrize(("rate", "burst", "field"), [(0, 1, "rate"), (1, 0, "burst")])
    def test_bad_parameters_name_the_field(self, rate: float, burst: int, field: str) -> None:
        with pytest.raises(ValidationError) as info:
            TokenBucket(rate=rate, burst=burst)
        assert info.value.field == field


@given(
    rate=st.floats(min_value=0.1, max_value=50),
    burst=st.integers(min_value=1, max_value=5),
    gaps=st.lists(st.floats(min_value=0, max_value=3), min_size=1, max_size=40),
)
def test_no_window_ever_holds_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=rate, burst=burst, clock=fake, sleep=fake.sleep)
    granted: list[float] = []

    async def scenario() -> None:
        for gap in gaps:
            fake.t += gap  # the caller does other work between queries
            await bucket.acquire()
            granted.append(fake.t)

    anyio.run(scenario)
    for i, start in enumerate(granted):
        for j in range(i, len(granted)):
            window = granted[j] - start
            assert j - i + 1 <= burst + rate * window + 1e-6
