"""State shared by many processes: the access token and the global rate budgets.

Each "process" here is its own engine (its own connections) or its own Redis client, its
own client and bucket: what they share is only what goes through the database or Redis.
The real-process version (four ``pesa worker`` processes) is
tests/workers/test_many_processes.py.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from pesa import AsyncDaraja
from pesa._bucket import SharedBucketState, TokenBucket, gcra
from pesa.client import SharedTokenStore
from pesa.config import Settings
from pesa.daraja import SANDBOX_PASSKEY
from pesa.emulator import Emulator, EmulatorConfig
from pesa.gateway._shared import shared_state
from pesa.ledger import DatabaseBucketState, DatabaseTokenStore, Ledger, create_engine

from .conftest import PG_URL, _pg_admin, _pg_schema_url

OAUTH = "/oauth/v1/generate"


def _redis_up() -> str | None:
    try:
        import redis  # noqa: F401
    except ModuleNotFoundError:
        return "the redis package is not installed (pip install 'pesa[redis]'): Redis skipped"
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
    except OSError:
        return "no Redis at 127.0.0.1:6379: Redis tests skipped"
    return None


REDIS_SKIP = _redis_up()


# -- the arithmetic --------------------------------------------------------------------


def test_gcra_reserves_burst_then_steady_slots() -> None:
    tat, paused, waits = 0.0, 0.0, []
    for _ in range(5):
        grant = gcra(tat, paused, 100.0, interval=0.5, tolerance=0.5)
        tat, paused = grant.tat, grant.paused_until
        waits.append(grant.wait)
    assert waits == [0.0, 0.0, 0.5, 1.0, 1.5]


def test_gcra_pause_drops_the_burst_and_a_conditional_take_does_not_reserve() -> None:
    grant = gcra(0.0, 0.0, 100.0, interval=0.1, tolerance=0.4, pause=30.0, take=False)
    assert grant.paused_until == 130.0 and not grant.taken
    refused = gcra(
        grant.tat, grant.paused_until, 110.0, interval=0.1, tolerance=0.4, conditional=True
    )
    assert not refused.taken and refused.tat == grant.tat
    first = gcra(grant.tat, grant.paused_until, 130.0, interval=0.1, tolerance=0.4)
    second = gcra(first.tat, first.paused_until, 130.0, interval=0.1, tolerance=0.4)
    assert (first.wait, second.wait) == (0.0, pytest.approx(0.1))


# -- the states --------------------------------------------------------------------------


StateFactory = Callable[[str], Awaitable[SharedBucketState]]


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def states(
    request: pytest.FixtureRequest, tmp_path: Any, postgres_url_or_none: str | None
) -> AsyncIterator[StateFactory]:
    """Makes one budget's state as a separate process would see it (its own connections)."""
    closers: list[Callable[[], Awaitable[None]]] = []
    prefix = uuid.uuid4().hex[:8]
    if request.param == "redis":
        if REDIS_SKIP:
            pytest.skip(REDIS_SKIP)
        from pesa.gateway._redis import RedisBucketState, redis_client

        async def make_redis(name: str) -> SharedBucketState:
            client = redis_client("redis://127.0.0.1:6379/0")
            closers.append(client.aclose)
            return RedisBucketState(client, f"test-{prefix}-{name}")

        yield make_redis
    else:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'shared.db'}"
        else:
            if postgres_url_or_none is None:
                pytest.skip("PESA_TEST_DATABASE_URL is not set: PostgreSQL skipped")
            url = postgres_url_or_none
        ledger = await Ledger.open(url)
        await ledger.migrate()
        closers.append(ledger.close)

        async def make_db(name: str) -> SharedBucketState:
            engine = create_engine(url)
            closers.append(engine.dispose)
            return DatabaseBucketState(engine, name)

        yield make_db
    for close in closers:
        await close()


@pytest.fixture
async def postgres_url_or_none() -> AsyncIterator[str | None]:
    """A fresh PostgreSQL schema, or ``None`` without ``PESA_TEST_DATABASE_URL``."""
    if PG_URL is None:
        yield None
        return
    schema = f"pesa_shared_{uuid.uuid4().hex[:16]}"
    await _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield _pg_schema_url(schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


async def test_four_processes_share_one_rate(states: StateFactory) -> None:
    rate, seconds = 20.0, 3.0
    buckets = [TokenBucket(rate, 1, shared=await states("queries")) for _ in range(4)]
    stamps: list[float] = []
    started = time.monotonic()

    async def spend(bucket: TokenBucket) -> None:
        while time.monotonic() - started < seconds:
            await bucket.acquire()
            stamps.append(time.monotonic())

    async with anyio.create_task_group() as tg:
        for bucket in buckets:
            tg.start_soon(spend, bucket)
    stamps = sorted(s for s in stamps if s - started < seconds)
    # One per 1/rate across all four (each alone would take `rate` a second: 4x).
    measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert measured <= rate * 1.1, measured
    assert measured >= rate * 0.5, measured  # each waits its slot; none starves the budget


async def test_a_pause_in_one_process_pauses_the_others(states: StateFactory) -> None:
    one = TokenBucket(10, 1, shared=await states("payouts"))
    other = TokenBucket(10, 1, shared=await states("payouts"))
    await one.acquire()
    started = time.monotonic()
    one.pause(0.6)
    await one.flush()  # the pause starts in the shared state, at or after `started`
    await other.acquire()
    assert time.monotonic() - started >= 0.55
    assert other.pause_remaining() == 0.0


async def test_a_new_budget_starts_full(states: StateFactory) -> None:
    bucket = TokenBucket(0.01, 3, shared=await states(f"fresh-{uuid.uuid4().hex[:6]}"))
    started = time.monotonic()
    for _ in range(3):
        await bucket.acquire()
    assert time.monotonic() - started < 5  # not 100 s: the burst was there
    assert bucket.wait_time() > 50


# -- the token ---------------------------------------------------------------------------


TokenStoreFactory = Callable[[], Awaitable[SharedTokenStore]]


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def token_stores(
    request: pytest.FixtureRequest, tmp_path: Any, postgres_url_or_none: str | None
) -> AsyncIterator[TokenStoreFactory]:
    closers: list[Callable[[], Awaitable[None]]] = []
    if request.param == "redis":
        if REDIS_SKIP:
            pytest.skip(REDIS_SKIP)
        from pesa.gateway._redis import RedisTokenStore, redis_client

        async def make_redis() -> SharedTokenStore:
            client = redis_client("redis://127.0.0.1:6379/0")
            closers.append(client.aclose)
            return RedisTokenStore(client)

        yield make_redis
    else:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'tokens.db'}"
        else:
            if postgres_url_or_none is None:
                pytest.skip("PESA_TEST_DATABASE_URL is not set: PostgreSQL skipped")
            url = postgres_url_or_none
        ledger = await Ledger.open(url)
        await ledger.migrate()
        closers.append(ledger.close)

        async def make_db() -> SharedTokenStore:
            engine = create_engine(url)
            closers.append(engine.dispose)
            return DatabaseTokenStore(engine)

        yield make_db
    for close in closers:
        await close()


def _client(emulator: Emulator, store: Any, key: str, secret: str = "shared-secret") -> AsyncDaraja:
    return AsyncDaraja(
        environment="emulator",
        base_url="http://emulator.test",
        consumer_key=key,
        consumer_secret=secret,
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        callback_url="https://example.com/cb",
        max_retries=0,
        token_store=store,
        transport=httpx.ASGITransport(app=emulator.app),
    )


async def test_four_clients_fetch_one_token(token_stores: TokenStoreFactory) -> None:
    key = f"shared-{uuid.uuid4().hex[:8]}"
    async with Emulator(EmulatorConfig(stk_delay=0.0, seed=3)) as emulator:
        clients = [_client(emulator, await token_stores(), key) for _ in range(4)]
        try:
            async with anyio.create_task_group() as tg:
                for client in clients:
                    for _ in range(3):
                        tg.start_soon(client.access_token)
            tokens = {(await c.access_token()).value for c in clients}
        finally:
            for client in clients:
                await client.aclose()
        assert len(tokens) == 1
        assert len(emulator.requests(OAUTH)) == 1


async def test_a_refused_token_is_replaced_once_for_everyone(
    token_stores: TokenStoreFactory,
) -> None:
    key = f"refused-{uuid.uuid4().hex[:8]}"
    config = EmulatorConfig(stk_delay=0.0, seed=4, invalidate_old_tokens=True)
    async with Emulator(config) as emulator:
        first = _client(emulator, await token_stores(), key)
        second = _client(emulator, await token_stores(), key)
        try:
            await first.access_token()
            await second.access_token()
            assert len(emulator.requests(OAUTH)) == 1
            # Another app instance (not sharing the store) revokes the shared token.
            async with _client(emulator, None, key) as outsider:
                await outsider.access_token()
            assert len(emulator.requests(OAUTH)) == 2
            await first.stk_push(phone="254708374149", amount=1, account_reference="A1")
            await second.stk_push(phone="254708374149", amount=1, account_reference="A2")
        finally:
            await first.aclose()
            await second.aclose()
        # One refetch after the refusal, shared: not one per process.
        assert len(emulator.requests(OAUTH)) == 3


async def test_the_stored_token_is_sealed(token_stores: TokenStoreFactory) -> None:
    key = f"sealed-{uuid.uuid4().hex[:8]}"
    async with Emulator(EmulatorConfig(stk_delay=0.0, seed=5)) as emulator:
        store = await token_stores()
        async with _client(emulator, store, key) as client:
            token = (await client.access_token()).value
            stored = await store.load(client.auth.key)
        assert stored is not None and token not in stored.sealed
        # Another secret cannot open it: that client fetches its own.
        async with _client(emulator, await token_stores(), key, secret="rotated") as other:
            assert (await other.access_token()).value != token


async def test_auto_is_database_on_postgres_and_process_on_sqlite(tmp_path: Any) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'auto.db'}")
    try:
        assert shared_state(Settings(), ledger).kind == "process"
        chosen = shared_state(Settings(shared_state="database"), ledger)
        assert chosen.kind == "database" and chosen.budget("queries") is not None
        assert shared_state(Settings(), ledger).budget("queries") is None
    finally:
        await ledger.close()


def test_each_default_is_written_once() -> None:
    from pesa.gateway._dispatcher import DispatcherOptions
    from pesa.gateway._reconciler import ReconcilerOptions
    from pesa.gateway._transfers import TransferOptions

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert DispatcherOptions() == DispatcherOptions.from_settings(settings)
    assert ReconcilerOptions() == ReconcilerOptions.from_settings(settings)
    assert TransferOptions() == TransferOptions.from_settings(settings)


async def test_a_plain_function_is_refused_as_a_clock_naming_the_field(tmp_path: Any) -> None:
    # What Ledger.open(clock=...) took before the clock had two readings: refused when the
    # ledger, a worker or the emulator is built, not at the first write.
    from datetime import UTC, datetime

    from pesa import ValidationError
    from pesa.gateway import Reconciler

    def old_style() -> datetime:
        return datetime.now(UTC)

    with pytest.raises(ValidationError, match=r"^clock: must be a clock with now\(\)"):
        await Ledger.open(f"sqlite:///{tmp_path / 'clock.db'}", clock=old_style)  # type: ignore[arg-type]
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'clock.db'}")
    try:
        with pytest.raises(ValidationError, match="^clock:"):
            Reconciler(ledger, object(), clock=old_style)  # type: ignore[arg-type]
    finally:
        await ledger.close()
    with pytest.raises(ValidationError, match="^clock:"):
        Emulator(clock=old_style)  # type: ignore[arg-type]


async def test_an_unreachable_store_costs_a_token_fetch_not_the_request() -> None:
    # Nothing listens on port 1: every read of the shared store fails.
    engine = create_engine(
        "postgresql://pesa@127.0.0.1:1/pesa", connect_args={"connect_timeout": 2}
    )
    try:
        async with Emulator(EmulatorConfig(stk_delay=0.0, seed=6)) as emulator:
            async with _client(emulator, DatabaseTokenStore(engine), "down") as client:
                await client.stk_push(phone="254708374149", amount=1, account_reference="D1")
                await client.stk_push(phone="254708374150", amount=1, account_reference="D2")
            # Fetched once, then kept in this process.
            assert len(emulator.requests(OAUTH)) == 1
    finally:
        await engine.dispose()


async def test_every_state_steps_as_gcra_does(states: StateFactory) -> None:
    # PostgreSQL takes in one UPDATE ... RETURNING: the same arithmetic as gcra().
    state = await states(f"steps-{uuid.uuid4().hex[:6]}")
    step = {"interval": 10.0, "tolerance": 10.0, "pause": 0.0, "conditional": False}
    waits = [(await state.astep(**step, take=True))[0].wait for _ in range(4)]
    assert waits[:2] == [0.0, 0.0]
    assert waits[2] == pytest.approx(10.0, abs=1.0)
    assert waits[3] == pytest.approx(20.0, abs=1.0)
    peek, _ = await state.astep(**step, take=False)
    assert not peek.taken and peek.wait == pytest.approx(30.0, abs=1.0)
