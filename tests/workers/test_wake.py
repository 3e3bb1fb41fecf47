"""Waking the dispatcher on commit: the in-process signal, NOTIFY/LISTEN, and polling.

Every dispatcher here polls once an hour, so a webhook that arrives within the test's
timeout was sent because something woke the dispatcher, never because the poll came round.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import psycopg
import pytest

from pesa.gateway import WebhookDispatcher
from pesa.gateway._dispatcher import DispatcherOptions
from pesa.gateway._rounds import pause
from pesa.gateway._wake import LISTENER_APPLICATION_NAME, listen_for_outbox
from pesa.ledger import Ledger, LedgerReports, OutboxSignal
from pesa.testing import stk_callback_payload

from .conftest import ManualClock, OpenLedger, Receiver, pending_payment
from .test_dispatcher import SECRET, options

HOUR = 3600.0
# Generous: the figure is "before the hourly poll", not a latency bound.
PATIENCE = 30.0


def paid(n: int) -> bytes:
    """Daraja's success callback for :func:`pending_payment` ``n``."""
    body = stk_callback_payload(
        checkout_request_id=f"ws_CO_{n:06d}",
        merchant_request_id=f"mr-{n}",
        amount=10,
        phone=254708374149,
        receipt=f"RCP{n:07d}",
    )
    return json.dumps(body).encode()


async def arrived(receiver: Receiver, count: int, within: float = PATIENCE) -> None:
    with anyio.fail_after(within):
        while len(receiver.requests) < count:
            await anyio.sleep(0.01)


@asynccontextmanager
async def dispatching(
    ledger: Ledger, clock: ManualClock, **overrides: object
) -> AsyncIterator[WebhookDispatcher]:
    stop = anyio.Event()
    async with (
        WebhookDispatcher(
            ledger, secret=SECRET, options=options(**overrides), clock=clock
        ) as dispatcher,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(dispatcher.run, stop)
        try:
            yield dispatcher
        finally:
            stop.set()


def test_the_signal_wakes_a_waiter_taken_before_it_fired() -> None:
    async def main() -> None:
        signal = OutboxSignal()
        waiter = signal.waiter()
        assert signal.waiter() is waiter  # one event until it fires
        signal.notify()  # fires before anyone waits: not lost
        assert waiter.is_set()
        assert signal.waiter() is not waiter
        assert signal.notified == 1

    asyncio.run(main())


def test_the_signal_may_fire_from_another_thread() -> None:
    async def main() -> None:
        signal = OutboxSignal()
        waiter = signal.waiter()
        await anyio.to_thread.run_sync(signal.notify)
        with anyio.fail_after(5):
            await waiter.wait()

    asyncio.run(main())


async def test_pause_ends_on_stop_on_wake_or_after_its_time() -> None:
    stop = anyio.Event()
    woken = asyncio.Event()
    woken.set()
    with anyio.fail_after(5):
        await pause(stop, HOUR, woken)  # already woken: returns at once
        await pause(stop, 0.01, asyncio.Event())  # nothing happens: its time runs out
        stop.set()
        await pause(stop, HOUR, asyncio.Event())  # stopped


async def test_a_commit_in_this_process_wakes_the_dispatcher(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    async with dispatching(ledger, clock, interval=HOUR):
        await arrived(receiver, 1)  # the first round, at start
        before = ledger.outbox_signal.notified
        await pending_payment(ledger, 2)
        assert ledger.outbox_signal.notified > before
        await arrived(receiver, 2)  # woken: the next poll is an hour away
        await pending_payment(ledger, 3)
        await arrived(receiver, 3)


async def test_a_callback_wakes_the_dispatcher(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    # On PostgreSQL a callback for a known payment takes the one-statement AUTOCOMMIT path,
    # which no COMMIT hook sees: the wake-up must come from the statement itself.
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    async with dispatching(ledger, clock, interval=HOUR):
        await arrived(receiver, 1)
        before = ledger.outbox_signal.notified
        outcome = await ledger.ingest_stk_callback(paid(1), source_ip="196.201.214.200")
        assert outcome.status == "applied"
        assert ledger.outbox_signal.notified > before
        await arrived(receiver, 2)  # woken: the next poll is an hour away
    assert json.loads(receiver.requests[1].body)["type"] == "payment.succeeded"


async def test_a_write_without_deliveries_does_not_signal(open_ledger: OpenLedger) -> None:
    ledger = await open_ledger(endpoints=[])  # no endpoint: events but no delivery rows
    await pending_payment(ledger, 1)
    assert ledger.outbox_signal.notified == 0


async def test_a_redelivery_wakes_the_dispatcher(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    payment = await pending_payment(ledger, 1)
    async with dispatching(ledger, clock, interval=HOUR):
        await arrived(receiver, 1)
        with anyio.fail_after(PATIENCE):
            while (await ledger.stats()).deliveries["delivered"] < 1:
                await anyio.sleep(0.01)
        [record] = await LedgerReports(ledger).payment_deliveries(payment.id)
        await ledger.redeliver(record.id)
        await arrived(receiver, 2)


# -- PostgreSQL: NOTIFY from another ledger (as another process would) -----------------------


@asynccontextmanager
async def listening_apart(
    postgres_url: str, receiver: Receiver, clock: ManualClock
) -> AsyncIterator[Ledger]:
    """A reader ledger whose dispatcher polls hourly and wakes only on ``NOTIFY`` (as in a
    process of its own); yields the writer ledger, once the reader's LISTEN is connected.
    Two ledgers on one database share nothing in memory: only the NOTIFY connects them."""
    writer = await Ledger.open(postgres_url, webhook_endpoints=[receiver.url], clock=clock)
    reader = await Ledger.open(postgres_url, webhook_endpoints=[receiver.url], clock=clock)
    try:
        await writer.migrate()
        connected = anyio.Event()
        stop = anyio.Event()
        async with (
            WebhookDispatcher(
                reader, secret=SECRET, options=options(interval=HOUR, listen=False), clock=clock
            ) as dispatcher,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(dispatcher.run, stop)
            tg.start_soon(lambda: listen_for_outbox(reader, stop, connected=connected))
            with anyio.fail_after(PATIENCE):
                await connected.wait()
            try:
                yield writer
            finally:
                stop.set()
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.postgres
async def test_a_notify_from_another_ledger_wakes_the_dispatcher(
    postgres_url: str, receiver: Receiver, clock: ManualClock
) -> None:
    async with listening_apart(postgres_url, receiver, clock) as writer:
        await pending_payment(writer, 1)
        await arrived(receiver, 1)
        await pending_payment(writer, 2)
        await arrived(receiver, 2)
        assert writer.outbox_signal.notified >= 2  # its own process's signal fired too


@pytest.mark.postgres
async def test_a_callback_in_another_process_notifies_the_listener(
    postgres_url: str, receiver: Receiver, clock: ManualClock
) -> None:
    async with listening_apart(postgres_url, receiver, clock) as writer:
        await pending_payment(writer, 1)
        await arrived(receiver, 1)
        outcome = await writer.ingest_stk_callback(paid(1), source_ip="196.201.214.200")
        assert outcome.status == "applied"
        await arrived(receiver, 2)  # only the NOTIFY reached the reader's process


@pytest.mark.postgres
async def test_a_lost_notification_is_delivered_by_polling(
    postgres_url: str, receiver: Receiver, clock: ManualClock
) -> None:
    writer = await Ledger.open(
        postgres_url, webhook_endpoints=[receiver.url], clock=clock, notify=False
    )
    reader = await Ledger.open(postgres_url, webhook_endpoints=[receiver.url], clock=clock)
    try:
        await writer.migrate()
        async with dispatching(reader, clock, interval=0.5):
            await anyio.sleep(0.2)  # past the first round: only a poll can find the next
            await pending_payment(writer, 1)  # commits without NOTIFY: nobody is told
            await arrived(receiver, 1)
    finally:
        await writer.close()
        await reader.close()


@pytest.mark.postgres
async def test_the_listener_reconnects_after_its_connection_is_killed(
    postgres_url: str, receiver: Receiver, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"{LISTENER_APPLICATION_NAME}-{id(receiver)}"
    url = f"{postgres_url}&application_name={name}"
    writer = await Ledger.open(postgres_url, webhook_endpoints=[receiver.url], clock=clock)
    reader = await Ledger.open(url, webhook_endpoints=[receiver.url], clock=clock)
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]
    try:
        await writer.migrate()
        async with dispatching(reader, clock, interval=HOUR):

            async def listeners() -> list[int]:
                async with await psycopg.AsyncConnection.connect(
                    admin_url, autocommit=True
                ) as admin:
                    cursor = await admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                        "AND query LIKE 'LISTEN%%'",
                        (name,),
                    )
                    return [row[0] for row in await cursor.fetchall()]

            async def wait_for(check: Callable[[list[int]], bool]) -> list[int]:
                with anyio.fail_after(PATIENCE):
                    while not check(found := await listeners()):
                        await anyio.sleep(0.05)
                return found

            [pid] = await wait_for(lambda pids: len(pids) == 1)
            async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as admin:
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            [again] = await wait_for(lambda pids: len(pids) == 1 and pids[0] != pid)
            assert again != pid
            await pending_payment(writer, 1)
            await arrived(receiver, 1)  # woken through the new connection
        assert "outbox listener lost its PostgreSQL connection" in caplog.text
    finally:
        await writer.close()
        await reader.close()


def test_options_from_settings_carry_the_notify_setting() -> None:
    from pesa import Settings

    settings = Settings(_env_file=None, webhook_notify=False)  # type: ignore[call-arg]
    assert DispatcherOptions.from_settings(settings).listen is False
    assert DispatcherOptions.from_settings(Settings(_env_file=None)).listen is True  # type: ignore[call-arg]
