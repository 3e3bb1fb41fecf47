"""Benchmark: four worker processes on one PostgreSQL share one token and one query rate.

Set-up (not timed): ``pesa emulator --stk-delay 0 --token-lifetime 12`` with a rule that
drops every STK callback; N STK pushes recorded as ``pending`` in a fresh PostgreSQL ledger
(as the reconciler benchmark does). Then four ``pesa worker`` processes with
``PESA_SHARED_STATE=database`` and ``PESA_RECONCILE_QUERY_RATE=R`` settle them.

Measured from the emulator's request log, independently of the workers: the OAuth calls
the workers made (one per token lifetime is the target, not one per process) and the STK
query rate of the four together (R is the target, within 10%, not 4 x R).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from benchmarks._client_bench import _drive_async, _Errors
from benchmarks._daraja import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    PASSKEY,
    SHORTCODE,
    control,
    drop_callbacks,
    emulator,
    phone,
)
from benchmarks._gateway_bench import postgres_database
from benchmarks._harness import Section, Sizes, Target

__all__ = ["run"]

OAUTH = "/oauth/v1/generate"
QUERY = "/mpesa/stkpushquery/v1/query"
WORKERS = 4
TOKEN_LIFETIME = 12  # seconds; pesa uses a token for half its life when that is under 120 s
TOKEN_USE = TOKEN_LIFETIME / 2
_PAYMENTS = {"tiny": 24, "quick": 120, "default": 240, "issue": 480}


def _stamps(server: Any, path: str) -> list[datetime]:
    with control(server) as client:
        answer = client.get("/requests", params={"path": path})
        answer.raise_for_status()
    return sorted(datetime.fromisoformat(r["received_at"]) for r in answer.json())


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """Four ``pesa worker`` processes settle N lost-callback payments at one global rate."""
    n = _PAYMENTS.get(sizes.name.split()[0], 240)
    rate = 4.0 if n <= 24 else 8.0
    section = Section(
        key="shared",
        title="Many processes: one token, one query rate (PostgreSQL)",
        what=(
            f"{WORKERS} `pesa worker` processes with `PESA_SHARED_STATE=database` settle {n} "
            f"pending payments whose callbacks were lost, with `PESA_RECONCILE_QUERY_RATE="
            f"{rate:g}`, against one `pesa emulator` issuing {TOKEN_LIFETIME} s tokens."
        ),
        baseline=(
            f"one OAuth call per token lifetime ({TOKEN_USE:g} s of use); {rate:g} queries/s "
            f"in all (each process alone would send {rate:g}/s: {WORKERS * rate:g}/s)"
        ),
    )
    database = os.environ.get("PESA_TEST_DATABASE_URL")
    if not database:
        section.skipped = "PESA_TEST_DATABASE_URL not set: the four-process run needs PostgreSQL"
        return section
    extra = ["--token-lifetime", str(TOKEN_LIFETIME)]
    with (
        postgres_database(database) as db,
        emulator(stk_delay=0, extra=extra) as server,
        tempfile.TemporaryDirectory(prefix="pesa-bench-shared-") as tmp,
    ):
        drop_callbacks(server, "stk")
        _setup(db.url, server.url, n, log)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
        env.update(
            {
                "PESA_ENV": "emulator",
                "PESA_BASE_URL": server.url,
                "PESA_DATABASE_URL": db.url,
                "PESA_SHARED_STATE": "database",
                "PESA_CONSUMER_KEY": CONSUMER_KEY,
                "PESA_CONSUMER_SECRET": CONSUMER_SECRET,
                "PESA_SHORTCODE": SHORTCODE,
                "PESA_PASSKEY": PASSKEY,
                "PESA_RECONCILE_QUERY_RATE": str(rate),
                "PESA_RECONCILE_MIN_AGE": "0",
                "PESA_RECONCILE_INTERVAL": "0.2",
                # Small claims: each worker keeps part of the backlog, so one is always
                # waiting for the budget (a single worker queries one at a time).
                "PESA_RECONCILE_BATCH_SIZE": "4",
                "PESA_LOG": "warning",
            }
        )
        started = datetime.now().astimezone()
        workers = []
        logs = []
        try:
            for index in range(WORKERS):
                sink = (Path(tmp) / f"worker-{index}.log").open("wb")
                logs.append(sink)
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "pesa", "worker"],
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=tmp,
                    )
                )
            deadline = time.monotonic() + 60 + 3 * n / rate
            queries: list[datetime] = []
            while time.monotonic() < deadline:
                queries = _stamps(server, QUERY)
                if len(queries) >= n:
                    break
                time.sleep(0.5)
            oauth = [t for t in _stamps(server, OAUTH) if t >= started]
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
            for sink in logs:
                sink.close()
    if len(queries) < 2 or not oauth:
        section.skipped = f"the workers sent {len(queries)} queries, {len(oauth)} OAuth calls"
        return section
    first, last = queries[0], queries[-1]
    window = [q for q in queries if _seconds(first, q) > 1 and _seconds(q, last) > 1]
    measured = (len(window) - 1) / _seconds(window[0], window[-1])
    span = _seconds(oauth[0], last)
    lifetimes = span / TOKEN_USE + 1
    gaps = [_seconds(a, b) for a, b in zip(oauth, oauth[1:], strict=False)]
    shortest = min(gaps) if gaps else float("inf")
    gap_text = f"shortest gap {shortest:.1f} s" if gaps else "a single call"
    log(
        f"  {len(queries)} queries, {measured:.2f}/s in the steady window; "
        f"{len(oauth)} OAuth calls in {span:.1f} s ({gap_text})"
    )
    section.columns = [
        "processes",
        "payments",
        "query rate setting /s",
        "measured /s",
        "vs setting",
        "seconds",
        "OAuth calls",
        "token lifetimes (of use) elapsed",
        "shortest gap between OAuth calls, s",
    ]
    section.rows = [
        [
            WORKERS,
            n,
            rate,
            round(measured, 2),
            round(measured / rate, 3),
            round(_seconds(first, last), 1),
            len(oauth),
            round(span / TOKEN_USE, 1),
            round(shortest, 1) if gaps else "-",
        ]
    ]
    section.targets.append(
        Target(
            name="scale-out: one OAuth call per token lifetime (4 processes)",
            target="one per lifetime, not one per process",
            measured=(
                f"{len(oauth)} calls over {span:.1f} s = {span / TOKEN_USE:.1f} lifetimes of "
                f"{TOKEN_USE:g} s; {gap_text}"
            ),
            met=len(oauth) <= lifetimes and shortest >= TOKEN_USE - 0.1,
        )
    )
    section.targets.append(
        Target(
            name="scale-out: global query rate (4 processes)",
            target=f"{rate:g}/s within 10%",
            measured=f"{measured:.2f}/s ({measured / rate:.3f}x the setting)",
            met=abs(measured / rate - 1) <= 0.10,
        )
    )
    section.notes.append(
        "The payout pace (`PESA_PAYOUT_RATE`) is the same kind of budget (a row of "
        "`rate_budgets`, one GCRA for every bucket); tests/workers/test_shared_state.py "
        "checks four processes spending one budget on SQLite, PostgreSQL and Redis."
    )
    section.data = {"queries": len(queries), "rate": measured, "oauth": len(oauth)}
    return section


def _setup(url: str, base_url: str, n: int, log: Callable[[str], None]) -> None:
    """N pending payments whose callbacks the emulator drops."""
    from pesa import AsyncDaraja
    from pesa.ledger import Ledger

    async def main() -> None:
        ledger = await Ledger.open(url)
        await ledger.migrate()
        async with AsyncDaraja(
            base_url=base_url,
            consumer_key=CONSUMER_KEY,
            consumer_secret=CONSUMER_SECRET,
            shortcode=SHORTCODE,
            passkey=PASSKEY,
            callback_url="https://merchant.example/callbacks/stk",
        ) as mpesa:
            errors = _Errors()

            async def create(index: int) -> None:
                number = phone(71, index)
                payment, _ = await ledger.create_payment(
                    f"shared-{index}", number, 10, "INV42", "Bench"
                )
                push = await mpesa.stk_push(number, 10, "INV42", "Bench")
                await ledger.mark_accepted(
                    payment.id, push.checkout_request_id, push.merchant_request_id
                )

            t0 = time.perf_counter()
            await _drive_async(create, list(range(n)), 16, errors)
            log(f"  set-up: {n} pending payments in {time.perf_counter() - t0:.1f} s")
            if errors.count:
                raise RuntimeError(f"set-up failed {errors.count} times: {errors.first}")
        await ledger.close()

    anyio.run(main)
