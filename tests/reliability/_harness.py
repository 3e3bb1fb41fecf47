"""Building blocks of the reliability scenarios: sizes, loopback servers, callback and
webhook receivers that count what they see."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pesa import verify_webhook
from pesa.ledger import Ledger

SOAK = os.environ.get("PESA_SOAK", "") not in ("", "0")
WEBHOOK_SECRET = "whsec_reliability_suite_secret_0123456789"


def size(ci: int, soak: int) -> int:
    """The scenario size: ``soak`` under ``make soak`` (``PESA_SOAK=1``), else ``ci``."""
    return soak if SOAK else ci


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 (for servers in other processes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port, on the running loop.

    Yields the base URL (``http://127.0.0.1:<port>``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@dataclass
class CallbackSink:
    """Daraja's side of a callback route: stores each STK callback through the ledger.

    It answers 200 only after ``ingest_stk_callback`` returned (the commit happened), as the
    gateway must. ``outcomes`` counts the ledger's verdicts; ``acknowledged`` lists the
    bodies answered 200.
    """

    ledger: Ledger
    outcomes: Counter[str] = field(default_factory=Counter)
    acknowledged: list[bytes] = field(default_factory=list)

    def app(self) -> Starlette:
        async def stk(request: Request) -> Response:
            body = await request.body()
            host = request.client.host if request.client else None
            outcome = await self.ledger.ingest_stk_callback(body, source_ip=host)
            self.outcomes[outcome.status] += 1
            if outcome.status in ("applied", "unverified", "duplicate", "ignored"):
                self.acknowledged.append(body)
                return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})
            return JSONResponse({"ResultCode": 1, "ResultDesc": outcome.status}, status_code=400)

        return Starlette(routes=[Route("/callbacks/stk", stk, methods=["POST"])])


@dataclass
class WebhookSink:
    """A webhook receiver that verifies signatures and counts deliveries per event id."""

    secret: str = WEBHOOK_SECRET
    by_event: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            try:
                verify_webhook(body, request.headers.get("pesa-signature", ""), self.secret)
            except Exception:
                with self._lock:
                    self.bad_signatures += 1
                return Response(b"bad signature", status_code=400)
            event = json.loads(body)
            with self._lock:
                self.by_event[event["id"]] += 1
                self.types[event["type"]] += 1
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/hooks", hook, methods=["POST"])])

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first, per event."""
        return sum(n - 1 for n in self.by_event.values() if n > 1)


async def bounded_gather(jobs: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run ``jobs`` with at most ``concurrency`` in flight; results in job order."""
    limiter = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with limiter:
            return await job()

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def phone_for(index: int) -> str:
    """A distinct, valid Safaricom number per index (never an emulator scenario phone)."""
    return f"2547{11_000_000 + index:08d}"


TERMINAL_EVENTS = ("payment.succeeded", "payment.failed", "payment.rejected")


@dataclass
class Audit:
    """Everything the ledger holds, reduced to what the pass conditions need."""

    payments: dict[str, Any]
    events: dict[str, Counter[str]]
    event_ids: list[str]

    @property
    def applied_twice(self) -> int:
        """Payments with the same event twice, or two final transitions without a
        correction event explaining the second."""
        twice = 0
        for counts in self.events.values():
            repeated = any(n > 1 for n in counts.values())
            finals = sum(counts[t] for t in TERMINAL_EVENTS)
            if repeated or finals > 1 + counts["payment.corrected"]:
                twice += 1
        return twice

    def count(self, event_type: str) -> int:
        """How many events of this type the outbox holds."""
        return sum(c[event_type] for c in self.events.values())


async def audit(ledger: Ledger) -> Audit:
    """Read every payment and every event of the ledger."""
    payments: dict[str, Any] = {}
    cursor: str | None = None
    while True:
        page = await ledger.list_payments(cursor=cursor, limit=500)
        payments.update((p.id, p) for p in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    events: dict[str, Counter[str]] = {}
    ids: list[str] = []
    after: str | None = None
    while True:
        epage = await ledger.list_events(after=after, limit=1000)
        for event in epage.items:
            events.setdefault(event.payment_id, Counter())[event.type] += 1
            ids.append(event.id)
        after = epage.next_cursor
        if not epage.has_more:
            break
    return Audit(payments, events, ids)
