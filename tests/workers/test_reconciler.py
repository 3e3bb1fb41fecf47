"""The reconciler against the real emulator (in-process) and a real ledger."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from pesa import RateLimitError, Settings, ValidationError
from pesa.client import AsyncDaraja
from pesa.daraja import StkQueryResponse
from pesa.emulator import SANDBOX_PASSKEY, Emulator, EmulatorConfig
from pesa.gateway import Backoff, Metrics, Reconciler, ReconcilerOptions
from pesa.ledger import Ledger, Payment, PaymentStatus
from pesa.testing import stk_callback_payload

from .conftest import ManualClock, OpenLedger

# Callbacks go to a closed loopback port: every callback is lost, as in the field.
LOST_CALLBACK_URL = "http://127.0.0.1:9/callbacks/stk"
MIN_AGE = 20.0
DEADLINE = 300.0


class FakeTime:
    """Monotonic time that only moves when the rate bound sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def with_wall(self, wall: ManualClock) -> FakeClock:
        """A clock: ``wall``'s time, and this fake's monotonic seconds."""
        return FakeClock(wall, self)

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await anyio.lowlevel.checkpoint()


@dataclass
class FakeClock:
    """The manual wall clock, with monotonic time that moves only when the bound sleeps."""

    wall: ManualClock
    time: FakeTime

    def now(self) -> datetime:
        return self.wall.now()

    def monotonic(self) -> float:
        return self.time.now


@dataclass
class CountingClient:
    """Wraps the real client; records each STK query and when (in fake time) it left."""

    inner: AsyncDaraja
    time: FakeTime
    queries: list[tuple[str, float]] = field(default_factory=list)

    async def stk_query(self, checkout_request_id: str) -> StkQueryResponse:
        self.queries.append((checkout_request_id, self.time.now))
        return await self.inner.stk_query(checkout_request_id)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(stk_delay=0.0, seed=7)) as running:
        yield running


def daraja_client(emulator: Emulator) -> AsyncDaraja:
    return AsyncDaraja(
        environment="emulator",
        base_url="http://emulator.test",
        consumer_key="workers-test-key",
        consumer_secret="workers-test-secret",
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        callback_url=LOST_CALLBACK_URL,
        max_retries=0,
        transport=httpx.ASGITransport(app=emulator.app),
    )


@pytest.fixture
async def client(emulator: Emulator) -> AsyncIterator[AsyncDaraja]:
    async with daraja_client(emulator) as daraja:
        yield daraja


def reconciler_options(**overrides: object) -> ReconcilerOptions:
    values: dict[str, object] = {
        "interval": 0.05,
        "min_age": MIN_AGE,
        "recheck_interval": 10.0,
        "recheck_cap": 100.0,
        "deadline": DEADLINE,
        "query_rate": 2.0,
        "query_burst": 1,
        "batch_size": 50,
        "lease": 120.0,
        "stale_created_after": 120.0,
        "backoff": Backoff(base=5.0, cap=60.0, jitter=0),
    }
    values.update(overrides)
    return ReconcilerOptions(**values)  # type: ignore[arg-type]  # test-only mixed kwargs


def make_reconciler(
    ledger: Ledger,
    client: AsyncDaraja,
    clock: ManualClock,
    fake: FakeTime | None = None,
    **overrides: object,
) -> tuple[Reconciler, CountingClient, Metrics]:
    fake = fake or FakeTime()
    counting = CountingClient(client, fake)
    metrics = Metrics()
    reconciler = Reconciler(
        ledger,
        counting,
        options=reconciler_options(**overrides),
        metrics=metrics,
        clock=fake.with_wall(clock),
        sleep=fake.sleep,
        rng=random.Random(1),
    )
    return reconciler, counting, metrics


async def push(
    ledger: Ledger, client: AsyncDaraja, emulator: Emulator, phone: str, n: int
) -> Payment:
    """What the gateway does: commit the intent, send the STK push, record the answer."""
    payment, _ = await ledger.create_payment(f"order-{n}", phone, 10, f"INV{n}", "Order")
    answer = await client.stk_push(phone, 10, f"INV{n}", "Order")
    accepted = await ledger.mark_accepted(
        payment.id, answer.checkout_request_id, answer.merchant_request_id
    )
    assert await emulator.wait_idle(10)
    return accepted


async def stored(ledger: Ledger, payment: Payment) -> Payment:
    current = await ledger.get_payment(payment.id)
    assert current is not None
    return current


def phone(n: int) -> str:
    return f"2547080{n:05d}"


async def test_lost_callbacks_are_settled_by_query(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    paid = await push(ledger, client, emulator, phone(1), 1)
    cancelled = await push(ledger, client, emulator, "254700001032", 2)
    broke = await push(ledger, client, emulator, "254700000001", 3)
    reconciler, counting, metrics = make_reconciler(ledger, client, clock)

    # Too young: the callback may still come.
    clock.advance(MIN_AGE - 1)
    assert (await reconciler.run_once()).claimed == 0
    assert counting.queries == []

    clock.advance(1)
    report = await reconciler.run_once()
    assert (report.claimed, report.queried, report.succeeded, report.failed) == (3, 3, 1, 2)

    assert (await stored(ledger, paid)).status is PaymentStatus.SUCCEEDED
    failed = await stored(ledger, cancelled)
    assert (failed.status, failed.result_code) == (PaymentStatus.FAILED, "1032")
    assert (await stored(ledger, broke)).result_code == "1"
    assert metrics.reconciler_queries.value(outcome="succeeded") == 1
    assert metrics.reconciler_queries.value(outcome="failed") == 2
    # Settled payments are never queried again.
    clock.advance(1000)
    assert (await reconciler.run_once()).claimed == 0
    assert len(counting.queries) == 3


async def test_a_reconciler_reads_the_ledgers_clock_unless_given_one(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    # The ledger's frozen clock is days behind the system's: a reconciler on the system
    # clock would find the payment old enough at once. On the ledger's, it waits MIN_AGE.
    ledger = await open_ledger()
    await push(ledger, client, emulator, phone(1), 1)
    reconciler = Reconciler(ledger, client, options=reconciler_options(), rng=random.Random(1))
    assert (await reconciler.run_once()).claimed == 0
    clock.advance(MIN_AGE)
    assert (await reconciler.run_once()).queried == 1


async def test_pending_answer_keeps_the_payment_pending_and_schedules_a_recheck(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    # The customer takes a long time to answer: the query says "being processed".
    emulator.add_rule(phone=phone(1), delay=3600)
    payment, _ = await ledger.create_payment("slow", phone(1), 10, "INV1", "Order")
    answer = await client.stk_push(phone(1), 10, "INV1", "Order")
    payment = await ledger.mark_accepted(payment.id, answer.checkout_request_id, None)
    reconciler, counting, metrics = make_reconciler(ledger, client, clock, deadline=3600.0)

    clock.advance(MIN_AGE)
    report = await reconciler.run_once()
    assert (report.queried, report.still_pending) == (1, 1)
    kept = await ledger.get_payment(payment.id)
    assert kept is not None and kept.status is PaymentStatus.PENDING
    assert kept.next_check_at == clock.now() + timedelta(seconds=10)

    # Not due again before the recheck interval.
    clock.advance(9)
    assert (await reconciler.run_once()).claimed == 0
    clock.advance(1)
    assert (await reconciler.run_once()).still_pending == 1
    assert len(counting.queries) == 2
    assert metrics.reconciler_queries.value(outcome="pending") == 2
    # Each further wait is half as long again (10, 15, 22.5, ...), up to the cap.
    waits = []
    for _ in range(6):
        before = clock.now()
        kept = await stored(ledger, payment)
        assert kept.next_check_at is not None
        waits.append((kept.next_check_at - before).total_seconds())
        clock.advance(waits[-1])
        assert (await reconciler.run_once()).still_pending == 1
    assert waits == [15.0, 22.5, 33.75, 50.625, 75.9375, 100.0]


async def test_deadline_expires_a_payment_with_no_final_answer(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=["python:tests.audit"])
    emulator.add_rule(phone=phone(1), delay=3600)
    payment, _ = await ledger.create_payment("slow", phone(1), 10, "INV1", "Order")
    answer = await client.stk_push(phone(1), 10, "INV1", "Order")
    await ledger.mark_accepted(payment.id, answer.checkout_request_id, None)
    reconciler, counting, metrics = make_reconciler(ledger, client, clock)

    clock.advance(DEADLINE - 5)
    assert (await reconciler.run_once()).still_pending == 1
    # The next check is capped at the deadline, then one last query, then expiry.
    stored = await ledger.get_payment(payment.id)
    assert stored is not None
    assert stored.next_check_at == payment.created_at + timedelta(seconds=DEADLINE)
    clock.advance(5)
    report = await reconciler.run_once()
    assert (report.queried, report.expired) == (1, 1)
    expired = await ledger.get_payment(payment.id)
    assert expired is not None
    assert (expired.status, expired.failure_reason) == (PaymentStatus.FAILED, "expired")
    assert metrics.reconciler_expired.value() == 1
    # The expiry wrote its event in the outbox (read through the deliveries: the event
    # feed on PostgreSQL waits for concurrent transactions, including other test runs).
    deliveries = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=60))
    assert [d.event.type for d in deliveries] == ["payment.pending", "payment.failed"]
    assert len(counting.queries) == 2


async def test_a_callback_landing_during_the_last_query_beats_expiry(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    emulator.add_rule(phone=phone(1), delay=3600)
    payment, _ = await ledger.create_payment("race", phone(1), 10, "INV1", "Order")
    answer = await client.stk_push(phone(1), 10, "INV1", "Order")
    await ledger.mark_accepted(payment.id, answer.checkout_request_id, None)

    class CallbackDuringQuery:
        async def stk_query(self, checkout_request_id: str) -> StkQueryResponse:
            # Daraja still says "being processed", but the success callback lands meanwhile.
            pending = await client.stk_query(checkout_request_id)
            body = stk_callback_payload(
                checkout_request_id=checkout_request_id, amount=10, phone=int(phone(1))
            )
            await ledger.ingest_stk_callback(json.dumps(body).encode(), source_ip="127.0.0.1")
            return pending

    reconciler = Reconciler(
        ledger, CallbackDuringQuery(), options=reconciler_options(), clock=clock
    )
    clock.advance(DEADLINE)
    report = await reconciler.run_once()
    assert (report.queried, report.expired) == (1, 0)
    assert (await stored(ledger, payment)).status is PaymentStatus.SUCCEEDED


async def test_a_final_answer_at_the_deadline_wins_over_expiry(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    paid = await push(ledger, client, emulator, phone(1), 1)
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    clock.advance(DEADLINE + 100)
    report = await reconciler.run_once()
    assert (report.succeeded, report.expired) == (1, 0)
    settled = await ledger.get_payment(paid.id)
    assert settled is not None and settled.status is PaymentStatus.SUCCEEDED


async def test_spike_arrest_pauses_queries_and_hands_the_round_back(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payments = [await push(ledger, client, emulator, phone(n), n) for n in range(3)]
    emulator.add_fault(kind="spike_arrest", path="/mpesa/stkpushquery", times=2)
    fake = FakeTime()
    reconciler, counting, metrics = make_reconciler(ledger, client, clock, fake)

    clock.advance(MIN_AGE)
    first = await reconciler.run_once()
    assert (first.claimed, first.queried, first.rate_limited, first.released) == (3, 1, 1, 3)
    # Nothing was settled and nothing else was queried in that round.
    for payment in payments:
        stored = await ledger.get_payment(payment.id)
        assert stored is not None and stored.status is PaymentStatus.PENDING
        assert stored.next_check_at == clock.now() + timedelta(seconds=5)
    assert metrics.reconciler_rate_limited.value() == 1

    # Handed back until the pause ends.
    assert (await reconciler.run_once()).claimed == 0
    clock.advance(5)
    second = await reconciler.run_once()
    assert second.rate_limited == 1  # the fault answers once more: the pause doubles
    assert fake.slept >= 5
    clock.advance(10)
    third = await reconciler.run_once()
    assert (third.queried, third.succeeded, third.rate_limited) == (3, 3, 0)
    # The bound waited out both pauses (5 s, then 10 s) before querying again.
    assert fake.slept >= 15
    assert len(counting.queries) == 5


async def test_query_rate_is_bounded(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    for n in range(10):
        await push(ledger, client, emulator, phone(n), n)
    fake = FakeTime()
    reconciler, counting, _ = make_reconciler(ledger, client, clock, fake, query_rate=2.0)
    clock.advance(MIN_AGE)
    report = await reconciler.run_once()

    assert report.queried == 10
    assert len(emulator.requests("/mpesa/stkpushquery/v1/query")) == 10
    sent = [at for _, at in counting.queries]
    # Burst 1 at 2 per second: one query, then one every 0.5 s of (fake) time.
    for earlier, later in zip(sent, sent[1:], strict=False):
        assert later - earlier >= 0.5 - 1e-9
    assert fake.slept == pytest.approx(4.5)


async def test_queries_stop_when_too_little_of_the_lease_is_left(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payments = [await push(ledger, client, emulator, phone(n), n) for n in range(3)]
    fake = FakeTime()
    # One query per 100 s, a 120 s lease and 30 s per query: the second query could not
    # finish before the lease ends, so the round hands the rest back instead.
    reconciler, counting, _ = make_reconciler(
        ledger, client, clock, fake, query_rate=0.01, lease=120.0, query_timeout=30.0
    )
    clock.advance(MIN_AGE)
    report = await reconciler.run_once()
    assert (report.claimed, report.queried, report.succeeded, report.released) == (3, 1, 1, 2)
    assert len(counting.queries) == 1
    # Handed back at once: due for the next round (which another process may run).
    again = await ledger.claim_for_reconciliation(
        limit=10, min_age=timedelta(0), lease=timedelta(seconds=60)
    )
    assert sorted(p.id for p in again) == sorted(p.id for p in payments[1:])


async def test_transport_errors_leave_the_payment_for_the_next_round(
    open_ledger: OpenLedger, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    async with daraja_client(emulator) as working:
        payment = await push(ledger, working, emulator, phone(1), 1)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with AsyncDaraja(
        environment="emulator",
        base_url="http://emulator.test",
        consumer_key="k",
        consumer_secret="s",
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        max_retries=0,
        transport=httpx.MockTransport(refuse),
    ) as broken:
        reconciler, _, metrics = make_reconciler(ledger, broken, clock)
        clock.advance(MIN_AGE)
        report = await reconciler.run_once()
    assert (report.queried, report.errors) == (1, 1)
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.PENDING
    assert stored.next_check_at == clock.now() + timedelta(seconds=10)
    assert metrics.reconciler_queries.value(outcome="error") == 1

    # The next round, with Daraja reachable again, settles it.
    async with daraja_client(emulator) as working:
        reconciler, _, _ = make_reconciler(ledger, working, clock)
        clock.advance(10)
        assert (await reconciler.run_once()).succeeded == 1


async def test_daraja_errors_other_than_rate_limits_count_as_no_answer(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment = await push(ledger, client, emulator, phone(1), 1)
    emulator.add_fault(kind="http_500", path="/mpesa/stkpushquery", times=1)
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    clock.advance(MIN_AGE)
    assert (await reconciler.run_once()).errors == 1
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.PENDING


async def test_unknown_payment_without_checkout_id_is_never_queried_and_expires(
    open_ledger: OpenLedger, client: AsyncDaraja, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment, _ = await ledger.create_payment("lost", phone(1), 10, "INV1", "Order")
    await ledger.mark_unknown(payment.id, "read timeout after the push was sent")
    reconciler, counting, _ = make_reconciler(ledger, client, clock)

    clock.advance(MIN_AGE)
    report = await reconciler.run_once()
    assert (report.claimed, report.unqueryable, report.queried) == (1, 1, 0)
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.UNKNOWN
    # Not claimed again until the deadline, then failed as expired.
    clock.advance(DEADLINE - MIN_AGE - 1)
    assert (await reconciler.run_once()).claimed == 0
    clock.advance(1)
    assert (await reconciler.run_once()).expired == 1
    expired = await ledger.get_payment(payment.id)
    assert expired is not None
    assert (expired.status, expired.failure_reason) == (PaymentStatus.FAILED, "expired")
    assert counting.queries == []


async def test_intents_stuck_in_created_become_unknown(
    open_ledger: OpenLedger, client: AsyncDaraja, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment, _ = await ledger.create_payment("crashed", phone(1), 10, "INV1", "Order")
    reconciler, _, metrics = make_reconciler(ledger, client, clock)
    clock.advance(119)
    assert (await reconciler.run_once()).recovered == 0
    clock.advance(1)
    assert (await reconciler.run_once()).recovered == 1
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.UNKNOWN
    assert metrics.reconciler_stale_recovered.value() == 1


async def test_settle_queries_now_and_applies_a_final_answer(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment = await push(ledger, client, emulator, "254700001037", 1)
    reconciler, counting, _ = make_reconciler(ledger, client, clock)
    settled = await reconciler.settle(payment)  # no min_age for an explicit refresh
    assert settled.status is PaymentStatus.FAILED
    assert settled.result_code == "1037"
    # Terminal payments are returned as stored, without a query.
    assert (await reconciler.settle(settled)).status is PaymentStatus.FAILED
    assert len(counting.queries) == 1


async def test_settle_leaves_a_pending_payment_pending(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    emulator.add_rule(phone=phone(1), delay=3600)
    payment, _ = await ledger.create_payment("slow", phone(1), 10, "INV1", "Order")
    answer = await client.stk_push(phone(1), 10, "INV1", "Order")
    payment = await ledger.mark_accepted(payment.id, answer.checkout_request_id, None)
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    assert (await reconciler.settle(payment)).status is PaymentStatus.PENDING


async def test_settle_raises_on_spike_arrest(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment = await push(ledger, client, emulator, phone(1), 1)
    emulator.add_fault(kind="spike_arrest", path="/mpesa/stkpushquery", times=1)
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    with pytest.raises(RateLimitError):
        await reconciler.settle(payment)
    assert reconciler.bucket.wait_time() > 0


def test_options_come_from_settings() -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings init option
        reconcile_min_age=7,
        reconcile_deadline=99,
        reconcile_query_rate=0.5,
        reconcile_backoff_base=1,
        reconcile_backoff_cap=4,
        timeout=12,
    )
    options = ReconcilerOptions.from_settings(settings)
    assert (options.min_age, options.deadline, options.query_rate) == (7, 99, 0.5)
    assert options.backoff == Backoff(base=1, cap=4)
    assert options.query_timeout == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"deadline": 0}, "deadline"),
        ({"min_age": -1}, "min_age"),
        ({"batch_size": 0}, "batch_size"),
        ({"query_timeout": 200.0}, "query_timeout"),
        ({"recheck_cap": 5.0}, "recheck_cap"),
    ],
)
def test_bad_options_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        reconciler_options(**overrides)
    assert info.value.field == message


async def test_run_settles_in_the_background_until_stopped(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment = await push(ledger, client, emulator, phone(1), 1)
    clock.advance(MIN_AGE)
    reconciler = Reconciler(ledger, client, options=reconciler_options(), clock=clock)
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reconciler.run, stop)
        with anyio.fail_after(10):
            while True:
                stored = await ledger.get_payment(payment.id)
                assert stored is not None
                if stored.status is PaymentStatus.SUCCEEDED:
                    break
                await anyio.sleep(0.02)
        stop.set()


@pytest.mark.postgres
async def test_two_reconcilers_never_query_the_same_payment_twice(
    postgres_url: str, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledgers = [await Ledger.open(postgres_url, clock=clock) for _ in range(2)]
    try:
        await ledgers[0].migrate()
        for n in range(24):
            await push(ledgers[0], client, emulator, phone(n), n)
        clock.advance(MIN_AGE)
        reconcilers = [
            make_reconciler(ledger, client, clock, batch_size=5, query_rate=1000.0, query_burst=5)
            for ledger in ledgers
        ]
        claimed = [0, 0]

        async def drain(index: int) -> None:
            while True:
                report = await reconcilers[index][0].run_once()
                claimed[index] += report.claimed
                if report.claimed == 0:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, 0)
            tg.start_soon(drain, 1)
    finally:
        for ledger in ledgers:
            await ledger.close()

    queried = [cid for r in reconcilers for cid, _ in r[1].queries]
    assert len(queried) == 24
    assert len(set(queried)) == 24, "a payment was queried twice"
    assert all(claimed), f"one reconciler did all the work: {claimed}"


async def test_run_survives_a_failed_round(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    payment = await push(ledger, client, emulator, phone(1), 1)
    clock.advance(MIN_AGE)

    class FlakyLedger:
        failures = 1

        def __getattr__(self, name: str) -> object:
            return getattr(ledger, name)

        async def claim_for_reconciliation(self, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("database is unreachable")
            return await ledger.claim_for_reconciliation(**kwargs)

    flaky = FlakyLedger()
    reconciler = Reconciler(
        flaky,  # type: ignore[arg-type]  # a proxy with the ledger's methods
        client,
        options=reconciler_options(),
        clock=clock,
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reconciler.run, stop)
        with anyio.fail_after(10):
            while (await stored(ledger, payment)).status is not PaymentStatus.SUCCEEDED:
                await anyio.sleep(0.02)
        stop.set()
    assert flaky.failures == 0


# -- issue 8: verification of evidence, ids learnt from callbacks, the query log -----------


def _callback(cid: str, merchant: str | None, *, amount: int, phone_number: str) -> bytes:
    body = stk_callback_payload(
        checkout_request_id=cid,
        merchant_request_id=merchant or "29115-34620561-1",
        amount=amount,
        receipt="FAKE000001",
        phone=int(phone_number),
    )
    return json.dumps(body).encode()


async def test_a_success_for_a_failed_payment_is_asked_of_daraja_and_flagged_when_denied(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    cancelled = await push(ledger, client, emulator, "254700001032", 1)
    reconciler, counting, _ = make_reconciler(ledger, client, clock)
    clock.advance(MIN_AGE)
    assert (await reconciler.run_once()).failed == 1
    assert cancelled.checkout_request_id is not None
    body = _callback(
        cancelled.checkout_request_id,
        cancelled.merchant_request_id,
        amount=10,
        phone_number="254700001032",
    )
    outcome = await ledger.ingest_stk_callback(body, source_ip=None)
    assert outcome.status == "unverified"
    # Queried in the next round whatever its status, and Daraja says 1032: flagged.
    report = await reconciler.run_once()
    assert (report.claimed, report.queried) == (1, 1)
    final = await stored(ledger, cancelled)
    assert final.status is PaymentStatus.FAILED and final.receipt is None
    assert final.flagged and outcome.callback_id in (final.flag_reason or "")
    assert final.verify_at is None
    clock.advance(1000)
    assert (await reconciler.run_once()).claimed == 0
    assert len(counting.queries) == 2
    log = await ledger.list_stk_queries(cancelled.id)
    assert [q.outcome for q in log] == ["failed", "failed"]
    assert [q.result_code for q in log] == ["1032", "1032"]


async def test_evidence_daraja_never_confirms_is_flagged_after_the_deadline(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    cancelled = await push(ledger, client, emulator, "254700001032", 1)
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    clock.advance(MIN_AGE)
    await reconciler.run_once()
    assert cancelled.checkout_request_id is not None
    body = _callback(
        cancelled.checkout_request_id,
        cancelled.merchant_request_id,
        amount=10,
        phone_number="254700001032",
    )
    assert (await ledger.ingest_stk_callback(body, source_ip=None)).status == "unverified"
    emulator.add_fault(kind="http_500", path="/mpesa/stkpushquery")
    clock.advance(1)
    assert (await reconciler.run_once()).errors == 1
    clock.advance(DEADLINE)
    report = await reconciler.run_once()
    assert report.abandoned == 1
    final = await stored(ledger, cancelled)
    assert final.status is PaymentStatus.FAILED
    assert final.flagged and "could not be confirmed" in (final.flag_reason or "")
    assert [q.outcome for q in await ledger.list_stk_queries(cancelled.id)][-2:] == [
        "error",
        "error",
    ]


async def test_an_unverified_id_daraja_refuses_is_dropped_and_the_genuine_one_settles(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    """A push whose answer was lost; a forger's callback first, the genuine one second."""
    ledger = await open_ledger()
    payment, _ = await ledger.create_payment("lost", phone(7), 10, "INV7", "Order")
    answer = await client.stk_push(phone(7), 10, "INV7", "Order")  # its answer "never came"
    assert await emulator.wait_idle(10)
    await ledger.mark_unknown(payment.id, "read timeout after the push was sent")
    forged = _callback("ws_CO_FORGED0001", None, amount=10, phone_number=phone(7))
    assert (await ledger.ingest_stk_callback(forged, source_ip=None)).status == "unverified"
    genuine = _callback(
        answer.checkout_request_id, answer.merchant_request_id, amount=10, phone_number=phone(7)
    )
    assert (await ledger.ingest_stk_callback(genuine, source_ip=None)).status == ("unknown_payment")
    reconciler, counting, _ = make_reconciler(ledger, client, clock)
    report = await reconciler.run_once()  # evidence: no min_age wait
    assert (report.dropped, report.adopted, report.succeeded) == (1, 1, 1)
    final = await stored(ledger, payment)
    assert final.status is PaymentStatus.SUCCEEDED
    assert final.checkout_request_id == answer.checkout_request_id
    assert final.checkout_request_id_verified
    assert [q for q, _ in counting.queries] == ["ws_CO_FORGED0001", answer.checkout_request_id]
    assert [q.outcome for q in await ledger.list_stk_queries(payment.id)] == [
        "refused",
        "succeeded",
    ]


async def test_an_unknown_payment_adopts_a_stored_callback_when_the_reconciler_looks(
    open_ledger: OpenLedger, client: AsyncDaraja, emulator: Emulator, clock: ManualClock
) -> None:
    """The callback arrived while the push was in flight (not adoptable then)."""
    ledger = await open_ledger()
    payment, _ = await ledger.create_payment("slow-push", phone(8), 10, "INV8", "Order")
    answer = await client.stk_push(phone(8), 10, "INV8", "Order")
    assert await emulator.wait_idle(10)
    genuine = _callback(
        answer.checkout_request_id, answer.merchant_request_id, amount=10, phone_number=phone(8)
    )
    # Stored while the payment is still created: never adopted then.
    assert (await ledger.ingest_stk_callback(genuine, source_ip=None)).status == ("unknown_payment")
    held = await stored(ledger, payment)
    assert held.checkout_request_id is None
    clock.advance(120)  # the process died: recovered as unknown, and the orphan adopted
    reconciler, _, _ = make_reconciler(ledger, client, clock)
    report = await reconciler.run_once()
    assert report.recovered == 1
    final = await stored(ledger, payment)
    if final.status is not PaymentStatus.SUCCEEDED:
        await reconciler.run_once()
        final = await stored(ledger, payment)
    assert final.status is PaymentStatus.SUCCEEDED
    assert final.receipt == "FAKE000001", "the adopted callback's receipt, confirmed by query"
