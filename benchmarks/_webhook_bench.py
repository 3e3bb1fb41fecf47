"""Benchmark "event to webhook": from a transition's commit to the merchant's receiver.

Pending payments are seeded in a fresh ledger; the gateway (``pesa serve``, and on
PostgreSQL also ``pesa serve --no-workers`` beside a ``pesa worker`` process) delivers
webhooks to a bare receiver process that records when each arrives (``time.time()``). STK
success callbacks are POSTed one at a time at a steady pace, so the figure is the
dispatcher's latency, not a queue's. The commit time is the payment's ``updated_at`` (the
ledger's clock, read just before the transition's UPDATE, so slightly before the commit:
the latency is, if anything, overstated). The poll interval is left at its default
(``PESA_WEBHOOK_INTERVAL`` 1 s): the dispatcher is woken by the commit.

A last run turns the wake-up off (``PESA_WEBHOOK_NOTIFY=false`` between two processes) to
show what polling alone gives: the baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks._daraja import phone
from benchmarks._gateway_bench import (
    Database,
    _applied_at,
    _databases,
    _read_webhooks,
    gateway,
    gateway_env,
    postgres_database,
    sqlite_database,
)
from benchmarks._harness import REPO, Section, Sizes, Target, percentile, start_server

__all__ = ["run"]

# Seconds between two callbacks: a steady trickle, far below what the gateway ingests.
_GAP = 0.025
_WARMUP = 10
_TARGET_P50 = 0.050
_TARGET_P99 = 0.250
_SECRET = "bench-webhook-secret-0123456789"


@dataclass(frozen=True)
class Arrangement:
    """How the gateway runs for one row."""

    label: str
    database: str  # "sqlite" or "postgres"
    separate_worker: bool
    notify: bool = True


async def _seed(url: str, n: int) -> list[tuple[str, bytes]]:
    """``n`` pending payments; their ids and STK success callbacks."""
    from pesa.ledger import Ledger
    from pesa.testing import stk_callback_payload

    ledger = await Ledger.open(url)
    await ledger.migrate()
    seeded: list[tuple[str, bytes]] = []
    try:
        for index in range(n):
            number = phone(86, index)
            payment, _ = await ledger.create_payment(f"hook-{index}", number, 10, "INV42", "Hook")
            cid = f"ws_CO_hook{index:08d}{uuid.uuid4().hex[:6]}"
            await ledger.mark_accepted(payment.id, cid, f"hook-{index}")
            body = stk_callback_payload(
                checkout_request_id=cid,
                merchant_request_id=f"hook-{index}",
                amount=10,
                receipt=f"HKB{index:07d}",
                phone=int(number),
            )
            seeded.append((payment.id, json.dumps(body).encode()))
    finally:
        await ledger.close()
    return seeded


@contextlib.contextmanager
def _worker(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``pesa worker`` in its own process (no port: it is ready when its dispatcher runs)."""
    full = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PESA_")},
        **env,
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "pesa", "worker"],
        cwd=REPO,
        env=full,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        reader.join(5)


def _wait_arrived(record: Path, ids: list[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    arrived = _read_webhooks(record, "w")
    while time.monotonic() < deadline and not set(ids) <= set(arrived):
        time.sleep(0.05)
        arrived = _read_webhooks(record, "w")
    return arrived


def _measure(
    arrangement: Arrangement, db: Database, n: int, log: Callable[[str], None]
) -> dict[str, Any]:
    seeded = anyio.run(_seed, db.url, n + _WARMUP)
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="pesa-bench-") as tmp, contextlib.ExitStack() as stack:
        record = Path(tmp) / "webhooks.jsonl"
        sink = stack.enter_context(
            start_server("webhook-sink", ["bare", "sink", "--record", str(record)])
        )
        hooks = {
            "PESA_WEBHOOK_URLS": f"{sink.url}/webhooks",
            "PESA_WEBHOOK_SECRET": _SECRET,
            "PESA_WEBHOOK_NOTIFY": "true" if arrangement.notify else "false",
        }
        env = gateway_env(db.url, token, **hooks)
        if arrangement.separate_worker:
            gw = stack.enter_context(gateway({**env, "PESA_RUN_WORKERS": "false"}, "--no-workers"))
            worker_env = {**env, "PESA_GATEWAY_PORT": gw.url.rsplit(":", 1)[1]}
            stack.enter_context(_worker(worker_env))
        else:
            gw = stack.enter_context(gateway(env))
        with httpx.Client(base_url=gw.url, timeout=60) as client:

            def post(body: bytes) -> None:
                response = client.post(
                    f"/callbacks/{token}/stk",
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 200:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

            # Warm-up (not measured): the worker is running and every path is hot.
            warm = seeded[:_WARMUP]
            for _, body in warm:
                post(body)
            _wait_arrived(record, [pid for pid, _ in warm], 120.0)
            measured = seeded[_WARMUP:]
            start = time.monotonic()
            for index, (_, body) in enumerate(measured):
                post(body)
                pause = start + (index + 1) * _GAP - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            ids = [pid for pid, _ in measured]
            arrived = _wait_arrived(record, ids, 60.0)
    applied = anyio.run(_applied_at, db.url)
    latencies = [arrived[pid] - applied[pid] for pid in ids if pid in arrived and pid in applied]
    result = {
        "label": arrangement.label,
        "n": n,
        "delivered": sum(1 for pid in ids if pid in arrived),
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
    }
    log(
        f"  {arrangement.label}: p50 {result['p50'] * 1000:.1f} ms, "
        f"p99 {result['p99'] * 1000:.1f} ms, {result['delivered']}/{n} delivered"
    )
    return result


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """Commit to webhook received, p50 / p99, on SQLite and PostgreSQL."""
    n = sizes.webhook_events
    kinds, pg_url = _databases()
    section = Section(
        key="webhook",
        title="7. Event to webhook: from a transition's commit to the merchant's receiver",
        what=(
            f"{n} STK success callbacks (after {_WARMUP} not measured) POSTed one every "
            f"{_GAP * 1000:g} ms to the gateway for as many pending payments; each commits a "
            "transition whose `payment.succeeded` webhook goes to a receiver process. "
            "Latency: the payment's `updated_at` (just before the commit) to the webhook's "
            "arrival, both wall clock on this machine. Poll interval left at its default "
            "(1 s)."
        ),
        baseline=(
            "the same between two processes with the wake-up turned off "
            "(`PESA_WEBHOOK_NOTIFY=false`): polling alone, as before issue 12"
        ),
    )
    arrangements = [Arrangement("SQLite, `pesa serve` (workers in process)", "sqlite", False)]
    if pg_url:
        arrangements += [
            Arrangement("PostgreSQL, `pesa serve` (workers in process)", "postgres", False),
            Arrangement(
                "PostgreSQL, `pesa serve --no-workers` + `pesa worker` (LISTEN/NOTIFY)",
                "postgres",
                True,
            ),
            Arrangement(
                "PostgreSQL, two processes, polling only (baseline)", "postgres", True, False
            ),
        ]
    section.columns = ["arrangement", "events", "delivered", "p50 ms", "p90 ms", "p99 ms", "max ms"]
    results: list[dict[str, Any]] = []
    for arrangement in arrangements:
        factory = (
            sqlite_database()
            if arrangement.database == "sqlite"
            else postgres_database(pg_url or "")
        )
        with factory as db:
            result = _measure(arrangement, db, n, log)
        results.append(result)
        section.rows.append(
            [
                result["label"],
                n,
                result["delivered"],
                round(result["p50"] * 1000, 1),
                round(result["p90"] * 1000, 1),
                round(result["p99"] * 1000, 1),
                round(result["max"] * 1000, 1),
            ]
        )
    by_db: dict[str, dict[str, Any]] = {}
    for arrangement, result in zip(arrangements, results, strict=True):
        if arrangement.notify:
            # The target is judged on the slowest arrangement of each database.
            name = "SQLite" if arrangement.database == "sqlite" else "PostgreSQL"
            worst = by_db.get(name)
            if worst is None or result["p99"] > worst["p99"]:
                by_db[name] = result
    for name in ("SQLite", "PostgreSQL"):
        result = by_db.get(name)
        if result is None:
            section.targets.append(
                Target(
                    name=f"event to webhook on {name}, p50 / p99",
                    target="<= 50 ms / <= 250 ms",
                    measured="PESA_TEST_DATABASE_URL not set: PostgreSQL not measured",
                    met=None,
                )
            )
            continue
        met = (
            result["p50"] <= _TARGET_P50
            and result["p99"] <= _TARGET_P99
            and result["delivered"] == result["n"]
        )
        section.targets.append(
            Target(
                name=f"event to webhook on {name}, p50 / p99",
                target="<= 50 ms / <= 250 ms",
                measured=(
                    f"p50 {result['p50'] * 1000:.0f} ms, p99 {result['p99'] * 1000:.0f} ms "
                    f"({result['label'].split(', ', 1)[1]}; {result['delivered']} of "
                    f"{result['n']} delivered)"
                ),
                met=met,
                note="" if met else _why(result),
            )
        )
    section.notes.append(
        "How the dispatcher is woken (docs/workers.md): a commit that writes delivery rows "
        "fires an in-process signal once the connection is back in the pool; on PostgreSQL "
        "the same transaction sends `NOTIFY pesa_outbox`, which a `pesa worker` LISTENs for "
        "on a connection of its own. Polling (`PESA_WEBHOOK_INTERVAL`) stays as the safety "
        "net."
    )
    section.notes.append(
        "What the latency still holds: the claim (one transaction: select, lease update, "
        "read the event), the signed POST to the receiver on a kept-alive connection, and "
        "the scheduling of three processes (gateway, receiver, benchmark) and the database "
        "on two cores."
    )
    section.notes.append(
        "SQLite's tail, when it misses: the gateway's reconciler starts querying the seeded "
        "payments still pending once they pass `PESA_RECONCILE_MIN_AGE` (20 s) during the "
        "run, and its writes join the callbacks' and the dispatcher's on SQLite's one write "
        "lock. SQLite's busy handler makes a waiting writer sleep (up to 100 ms a try) while "
        "newer writers take the lock, so a dispatcher claim can wait a second or more. "
        "Measured on 2026-12-04 with the same run but `PESA_RECONCILE_MIN_AGE=3600` (the "
        "reconciler idle): SQLite p50 8 ms, p99 45 ms. What would close it: writers in one "
        "process queued first-come first-served on an in-process lock ahead of `BEGIN "
        "IMMEDIATE`, instead of racing in the busy handler; or PostgreSQL, whose row locks "
        "do not serialise unrelated writes."
    )
    section.data = {"results": results}
    return section


def _why(result: dict[str, Any]) -> str:
    if result["delivered"] != result["n"]:
        return f"{result['n'] - result['delivered']} webhooks did not arrive"
    parts = []
    if result["p50"] > _TARGET_P50:
        parts.append(f"p50 {result['p50'] / _TARGET_P50:.1f}x the target")
    if result["p99"] > _TARGET_P99:
        parts.append(f"p99 {result['p99'] / _TARGET_P99:.1f}x the target")
    return "; ".join(parts) + " (see the section's notes)"
