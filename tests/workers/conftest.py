"""Fixtures for the workers' tests: a real ledger (SQLite file, or PostgreSQL when
``PESA_TEST_DATABASE_URL`` is set, in a schema of its own, emptied for reuse), a manual clock,
and a real loopback HTTP receiver for webhooks."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pesa.ledger import Ledger, Payment, async_url
from pesa.testing import FrozenClock

PG_URL = os.environ.get("PESA_TEST_DATABASE_URL")
NO_PG = "PESA_TEST_DATABASE_URL is not set: PostgreSQL workers tests skipped"


class ManualClock(FrozenClock):
    """pesa's frozen clock, starting 2026-11-29 09:00 UTC (shared by ledger and workers)."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 11, 29, 9, 0, tzinfo=UTC))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def _pg_schema_url(schema: str) -> str:
    assert PG_URL is not None
    url = async_url(PG_URL)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


async def _pg_admin(statement: str) -> None:
    assert PG_URL is not None
    engine = create_async_engine(async_url(PG_URL))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema (skips without ``PESA_TEST_DATABASE_URL``)."""
    if PG_URL is None:
        pytest.skip(NO_PG)
    schema = f"pesa_workers_{uuid.uuid4().hex[:16]}"
    await _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield _pg_schema_url(schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


OpenLedger = Callable[..., Awaitable[Ledger]]


@pytest.fixture
async def open_ledger(database_url: str, clock: ManualClock) -> AsyncIterator[OpenLedger]:
    """Open (and later close) migrated ledgers on the test database."""
    opened: list[Ledger] = []

    async def factory(*, endpoints: list[str] | None = None, url: str | None = None) -> Ledger:
        ledger = await Ledger.open(
            url or database_url, webhook_endpoints=endpoints or [], clock=clock
        )
        await ledger.migrate()
        opened.append(ledger)
        return ledger

    yield factory
    for ledger in opened:
        await ledger.close()


async def pending_payment(
    ledger: Ledger, n: int, *, phone: str = "254708374149", amount: int = 10
) -> Payment:
    """A payment that Daraja accepted (status pending), with CheckoutRequestID ws_CO_<n>."""
    payment, _ = await ledger.create_payment(f"order-{n}", phone, amount, f"INV{n}", "Order")
    return await ledger.mark_accepted(payment.id, f"ws_CO_{n:06d}", f"mr-{n}")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A real HTTP server on 127.0.0.1 (a free port) that records webhook POSTs.

    ``statuses`` is consumed one per request (then 200); ``delay`` slows every answer.
    ``max_in_flight`` records the largest number of concurrent requests per delivery id.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: list[int] = []
        self.delay = 0.0
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                delivery = self.headers.get("Pesa-Delivery-Id", "")
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    now = receiver.in_flight.get(delivery, 0) + 1
                    receiver.in_flight[delivery] = now
                    receiver.max_in_flight[delivery] = max(
                        now, receiver.max_in_flight.get(delivery, 0)
                    )
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    receiver.in_flight[delivery] -= 1
                payload = b'{"ok": true}' if status < 300 else b"receiver is down"
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_args: object) -> None:
                return  # keep test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()
