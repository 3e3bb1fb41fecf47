"""The webhook dispatcher against a real ledger and a real loopback receiver."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from pesa import ConfigurationError, Settings, ValidationError, verify_webhook
from pesa.gateway import Backoff, Metrics, WebhookDispatcher, delivery_endpoints, handler_endpoint
from pesa.gateway._dispatcher import DispatcherOptions
from pesa.ledger import Event, Ledger
from pesa.ledger._schema import webhook_deliveries

from .conftest import ManualClock, OpenLedger, Receiver, pending_payment

SECRET = "whsec_dispatcher_test"


def options(**overrides: object) -> DispatcherOptions:
    values: dict[str, object] = {
        "max_attempts": 5,
        "timeout": 5.0,
        "backoff": Backoff(base=10, cap=100, jitter=0),
        "batch_size": 50,
        "concurrency": 4,
        "lease": 60.0,
        "interval": 0.05,
    }
    values.update(overrides)
    return DispatcherOptions(**values)  # type: ignore[arg-type]  # test-only mixed kwargs


async def delivery_counts(ledger: Ledger) -> dict[str, int]:
    return dict((await ledger.stats()).deliveries)


async def test_webhook_arrives_signed_and_verifies(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    payment = await pending_payment(ledger, 1)
    metrics = Metrics()
    async with WebhookDispatcher(
        ledger, secret=SECRET, options=options(), clock=clock, metrics=metrics
    ) as dispatcher:
        report = await dispatcher.run_once()

    assert (report.claimed, report.delivered) == (1, 1)
    [request] = receiver.requests
    assert request.path == "/hooks"
    assert request.headers["Content-Type"] == "application/json"
    event = verify_webhook(
        request.body, request.headers["Pesa-Signature"], SECRET, now=clock.now().timestamp()
    )
    assert event["type"] == "payment.pending"
    assert event["data"]["payment"]["id"] == payment.id
    assert request.headers["Pesa-Event-Id"] == event["id"]
    assert request.headers["Pesa-Event-Type"] == "payment.pending"
    assert request.headers["Pesa-Delivery-Attempt"] == "1"
    assert request.headers["User-Agent"].startswith("pesa-webhooks/")
    # Signed with the dispatcher's clock: the header's timestamp is the manual clock's.
    assert request.headers["Pesa-Signature"].startswith(f"t={int(clock.now().timestamp())},")
    assert (await delivery_counts(ledger))["delivered"] == 1
    assert metrics.webhook_attempts.value(kind="webhook", outcome="delivered") == 1


async def test_rotation_signs_with_both_secrets(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(
        ledger, secret=["whsec_new", "whsec_old"], options=options(), clock=clock
    ) as dispatcher:
        await dispatcher.run_once()
    [request] = receiver.requests
    header = request.headers["Pesa-Signature"]
    assert header.count("v1=") == 2
    for secret in ("whsec_new", "whsec_old"):
        verify_webhook(request.body, header, secret, now=clock.now().timestamp())


async def test_failing_receiver_is_retried_with_backoff_then_succeeds(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    receiver.statuses = [500, 503]
    async with WebhookDispatcher(
        ledger, secret=SECRET, options=options(), clock=clock
    ) as dispatcher:
        first = await dispatcher.run_once()
        assert (first.claimed, first.retrying) == (1, 1)
        # Not due before its backoff (10 s for the first retry, jitter off).
        clock.advance(9)
        assert (await dispatcher.run_once()).claimed == 0
        clock.advance(1)
        second = await dispatcher.run_once()
        assert second.retrying == 1
        clock.advance(19)
        assert (await dispatcher.run_once()).claimed == 0
        clock.advance(1)
        third = await dispatcher.run_once()
        assert third.delivered == 1

    assert [r.headers["Pesa-Delivery-Attempt"] for r in receiver.requests] == ["1", "2", "3"]
    # Every attempt carries the same event: receivers de-duplicate on its id.
    assert len({json.loads(r.body)["id"] for r in receiver.requests}) == 1
    assert await delivery_counts(ledger) == {"pending": 0, "delivered": 1, "failed": 0}


async def test_gives_up_after_max_attempts_and_records_it(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    receiver.statuses = [500] * 10
    metrics = Metrics()
    async with WebhookDispatcher(
        ledger, secret=SECRET, options=options(max_attempts=3), clock=clock, metrics=metrics
    ) as dispatcher:
        reports = []
        for _ in range(5):
            reports.append(await dispatcher.run_once())
            clock.advance(1000)

    assert [r.claimed for r in reports] == [1, 1, 1, 0, 0]
    assert reports[2].gave_up == 1
    assert len(receiver.requests) == 3
    assert await delivery_counts(ledger) == {"pending": 0, "delivered": 0, "failed": 1}
    assert metrics.webhook_gave_up.value(kind="webhook") == 1
    assert metrics.webhook_attempts.value(kind="webhook", outcome="failed") == 3
    # The give-up is recorded on the delivery with the receiver's last answer.
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    webhook_deliveries.c.status,
                    webhook_deliveries.c.attempts,
                    webhook_deliveries.c.last_status_code,
                    webhook_deliveries.c.last_error,
                )
            )
        ).one()
    assert tuple(row) == ("failed", 3, 500, "HTTP 500: receiver is down")


async def test_unreachable_receiver_counts_as_a_failed_attempt(
    open_ledger: OpenLedger, clock: ManualClock
) -> None:
    # Port 9 on loopback: nothing listens there (connection refused).
    ledger = await open_ledger(endpoints=["http://127.0.0.1:9/hooks"])
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(
        ledger, secret=SECRET, options=options(max_attempts=1), clock=clock
    ) as dispatcher:
        report = await dispatcher.run_once()
    assert report.gave_up == 1
    assert (await delivery_counts(ledger))["failed"] == 1


async def test_slow_receiver_times_out(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    receiver.delay = 1.0
    async with WebhookDispatcher(
        ledger, secret=SECRET, options=options(timeout=0.2, lease=30.0), clock=clock
    ) as dispatcher:
        report = await dispatcher.run_once()
    assert report.retrying == 1


async def test_missing_secret_fails_the_attempt_instead_of_sending_unsigned(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(ledger, options=options(), clock=clock) as dispatcher:
        report = await dispatcher.run_once()
    assert report.retrying == 1
    assert receiver.requests == []


async def test_python_handlers_are_called_and_retried_independently(
    open_ledger: OpenLedger, clock: ManualClock
) -> None:
    seen_sync: list[str] = []
    seen_async: list[str] = []
    seen_all: list[str] = []
    failures = {"left": 1}

    def on_pending(event: Event) -> None:
        seen_sync.append(event.type)

    async def flaky_on_pending(event: Event) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("database is down")
        seen_async.append(event.id)

    def on_everything(event: Event) -> None:
        seen_all.append(event.type)

    def on_succeeded(event: Event) -> None:
        raise AssertionError(f"called for {event.type}")

    handlers = {
        "payment.pending": [on_pending, flaky_on_pending],
        "payment.succeeded": on_succeeded,
        "*": on_everything,
    }
    endpoints = delivery_endpoints([], handlers)
    assert endpoints == [
        handler_endpoint(on_pending),
        handler_endpoint(flaky_on_pending),
        handler_endpoint(on_succeeded),
        handler_endpoint(on_everything),
    ]
    ledger = await open_ledger(endpoints=endpoints)
    await pending_payment(ledger, 1)
    metrics = Metrics()
    async with WebhookDispatcher(
        ledger, handlers=handlers, options=options(), clock=clock, metrics=metrics
    ) as dispatcher:
        first = await dispatcher.run_once()
        assert (first.claimed, first.delivered, first.retrying) == (4, 3, 1)
        clock.advance(10)
        second = await dispatcher.run_once()
        assert (second.claimed, second.delivered) == (1, 1)

    assert seen_sync == ["payment.pending"]
    assert len(seen_async) == 1
    assert seen_all == ["payment.pending"]
    assert metrics.webhook_attempts.value(kind="handler", outcome="failed") == 1
    assert await delivery_counts(ledger) == {"pending": 0, "delivered": 4, "failed": 0}


async def test_handler_not_registered_in_this_process_is_retried_then_given_up(
    open_ledger: OpenLedger, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=["python:shop.hooks.on_paid"])
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(
        ledger, options=options(max_attempts=2), clock=clock
    ) as dispatcher:
        assert (await dispatcher.run_once()).retrying == 1
        clock.advance(10)
        assert (await dispatcher.run_once()).gave_up == 1


async def test_handlers_the_ledger_writes_no_deliveries_for_are_refused(
    open_ledger: OpenLedger,
) -> None:
    def on_paid(event: Event) -> None:
        del event

    ledger = await open_ledger(endpoints=["https://shop.example/hooks"])
    with pytest.raises(ConfigurationError, match="delivery_endpoints"):
        WebhookDispatcher(ledger, handlers={"payment.succeeded": on_paid})


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"concurrency": 0}, "concurrency"),
        ({"batch_size": 0}, "batch_size"),
        ({"timeout": 60.0, "lease": 60.0}, "timeout"),
        ({"interval": 0}, "interval"),
    ],
)
def test_bad_options_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        options(**overrides)
    assert info.value.field == field


def test_two_different_handlers_with_one_name_are_refused() -> None:
    def make() -> object:
        def on_paid(event: Event) -> None:
            del event

        return on_paid

    first, second = make(), make()
    with pytest.raises(ValidationError, match="share the endpoint name"):
        delivery_endpoints([], {"payment.succeeded": [first, second]})  # type: ignore[list-item]  # plain callables


def test_a_misspelt_event_type_is_refused_naming_the_valid_ones() -> None:
    def on_paid(event: Event) -> None:
        del event

    with pytest.raises(ValidationError, match="payment.succeeded") as info:
        delivery_endpoints([], {"payment.succeded": on_paid})
    assert info.value.field == "handlers"
    with pytest.raises(ValidationError, match="callable"):
        delivery_endpoints([], {"payment.failed": ["not a function"]})  # type: ignore[list-item]  # misuse on purpose


class Ticking:
    """A clock: the manual clock's wall time, monotonic seconds read from ``ticks``."""

    def __init__(self, wall: ManualClock, ticks: Iterator[float]) -> None:
        self.wall, self.ticks = wall, ticks

    def now(self) -> datetime:
        return self.wall.now()

    def monotonic(self) -> float:
        return next(self.ticks)


async def test_a_delivery_with_too_little_lease_left_is_not_started(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    ticks = iter([0.0, 100.0, 100.0])
    async with WebhookDispatcher(
        ledger,
        secret=SECRET,
        options=options(),
        clock=Ticking(clock, ticks),
    ) as dispatcher:
        report = await dispatcher.run_once()
    assert (report.claimed, report.skipped, report.delivered) == (1, 1, 0)
    assert receiver.requests == []
    # The claim still holds until its lease ends; then the delivery is due again.
    clock.advance(61)
    assert await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=60))


async def test_run_delivers_in_the_background_until_stopped(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    stop = anyio.Event()
    async with (
        WebhookDispatcher(ledger, secret=SECRET, options=options(), clock=clock) as dispatcher,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(dispatcher.run, stop)
        await pending_payment(ledger, 1)
        with anyio.fail_after(10):
            while not receiver.requests:
                await anyio.sleep(0.02)
        stop.set()
    assert len(receiver.requests) == 1


@pytest.mark.postgres
async def test_two_dispatchers_never_send_one_delivery_twice_at_once(
    postgres_url: str, receiver: Receiver, clock: ManualClock
) -> None:
    ledgers = [
        await Ledger.open(postgres_url, webhook_endpoints=[receiver.url], clock=clock)
        for _ in range(2)
    ]
    try:
        await ledgers[0].migrate()
        for n in range(40):
            await pending_payment(ledgers[0], n)
        receiver.delay = 0.01
        dispatchers = [
            WebhookDispatcher(
                ledger,
                secret=SECRET,
                options=options(batch_size=7, concurrency=3),
                clock=clock,
                rng=random.Random(n),
            )
            for n, ledger in enumerate(ledgers)
        ]
        claimed = [0, 0]

        async def drain(index: int) -> None:
            while True:
                report = await dispatchers[index].run_once()
                claimed[index] += report.claimed
                if report.claimed == 0:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain, 0)
            tg.start_soon(drain, 1)
        for dispatcher in dispatchers:
            await dispatcher.aclose()
    finally:
        for ledger in ledgers:
            await ledger.close()

    ids = [r.headers["Pesa-Delivery-Id"] for r in receiver.requests]
    assert len(ids) == 40
    assert len(set(ids)) == 40, "a delivery was sent twice"
    assert max(receiver.max_in_flight.values()) == 1
    assert sum(claimed) == 40
    assert all(claimed), f"one dispatcher did all the work: {claimed}"


async def test_built_from_settings_signs_with_the_current_and_previous_secret(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings init option
        webhook_urls=[receiver.url],
        webhook_secret="whsec_current",
        webhook_previous_secret="whsec_previous",
        webhook_max_attempts=4,
        webhook_backoff_base=2,
        webhook_backoff_cap=8,
    )
    ledger = await open_ledger(endpoints=delivery_endpoints(settings.webhook_urls))
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(ledger, settings=settings, clock=clock) as dispatcher:
        assert dispatcher.options.max_attempts == 4
        assert dispatcher.options.backoff == Backoff(base=2, cap=8)
        await dispatcher.run_once()
    [request] = receiver.requests
    header = request.headers["Pesa-Signature"]
    now = clock.now().timestamp()
    verify_webhook(request.body, header, "whsec_current", now=now)
    verify_webhook(request.body, header, "whsec_previous", now=now)


class FlakyLedger:
    """A ledger whose first ``claim_deliveries`` fails, as when the database blips."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.failures = 1

    def __getattr__(self, name: str) -> object:
        return getattr(self._ledger, name)

    async def claim_deliveries(self, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("database is unreachable")
        return await self._ledger.claim_deliveries(**kwargs)


async def test_run_survives_a_failed_round(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    flaky = FlakyLedger(ledger)
    stop = anyio.Event()
    async with (
        WebhookDispatcher(
            flaky,  # type: ignore[arg-type]  # a proxy with the ledger's methods
            secret=SECRET,
            options=options(),
            clock=clock,
        ) as dispatcher,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(dispatcher.run, stop)
        with anyio.fail_after(10):
            while not receiver.requests:
                await anyio.sleep(0.02)
        stop.set()
    assert flaky.failures == 0
    assert len(receiver.requests) == 1


class HangingReceiver:
    """A real HTTP server that accepts webhook POSTs and never answers them."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks"
        self.accepted: list[float] = []
        self._held: list[object] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self._held.append(conn)  # read nothing, answer nothing, keep it open

    def close(self) -> None:
        self.sock.close()
        for conn in self._held:
            conn.close()  # type: ignore[attr-defined]  # sockets


async def test_a_hanging_receiver_does_not_delay_a_healthy_one(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    """Issue 8 finding 9: a slow endpoint costs only itself (no head-of-line blocking).

    Both endpoints get the same events. Every healthy delivery must be done before the
    hanging receiver's first attempt has even timed out.
    """
    hanging = HangingReceiver()
    timeout = 3.0
    ledger = await open_ledger(endpoints=[hanging.url, receiver.url])
    for n in range(6):
        await pending_payment(ledger, n, phone=f"2547083741{n:02d}")
    stop = anyio.Event()
    done_at: float | None = None
    try:
        async with (
            WebhookDispatcher(
                ledger,
                secret=SECRET,
                options=options(concurrency=2, timeout=timeout, lease=30.0),
                clock=clock,
            ) as dispatcher,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(dispatcher.run, stop)
            with anyio.fail_after(60):
                while len(receiver.requests) < 6:
                    await anyio.sleep(0.01)
                done_at = time.monotonic()
                while not hanging.accepted:
                    await anyio.sleep(0.01)
            stop.set()
    finally:
        hanging.close()
    assert len(receiver.requests) == 6
    # The hanging endpoint was tried (its lane is busy waiting on it) ...
    assert hanging.accepted
    # ... and yet the healthy endpoint finished before one hanging attempt could time out.
    assert done_at is not None and done_at < hanging.accepted[0] + timeout
