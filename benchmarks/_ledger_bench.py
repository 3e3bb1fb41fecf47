"""Benchmark 8: large ledgers. The read queries at 10,000 and 1,000,000 payments (PostgreSQL).

A fresh PostgreSQL database (created under ``PESA_TEST_DATABASE_URL``, dropped afterwards)
is migrated and seeded in SQL (``INSERT ... SELECT generate_series``, seconds for a
million rows): a history of settled payments (succeeded, failed, rejected), one customer
who pays often (1 in 100 payments) and many who pay now and then, and a fixed set of open
payments (pending, unknown, waiting for a verification), because the open set is what is
in flight now, not a share of the history. After ``ANALYZE``, each query is timed through
the :class:`~pesa.ledger.Ledger` API (what ``GET /v1/payments`` and the reconciler call):

- the first page of the payments list (newest first);
- the first page of one frequent customer's payments (``?phone=``);
- a page from the middle of the ledger (``?cursor=``: cursor pagination, deep);
- the reconciler's claim (due payments, ``FOR UPDATE SKIP LOCKED``; the claims are
  released after each timing so that every run claims the same rows).

A second ledger of the large size (the same shape, more history) is timed the same way,
the runs interleaved: the ratio large/small is the target (at most 2x). The storage of each table
per row is measured too (docs/scaling.md uses it).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from benchmarks._harness import Section, Sizes, Target

__all__ = ["run"]

_SMALL = 10_000
_LARGE = {"tiny": 20_000, "quick": 200_000}  # default and issue: 1,000,000
_RUNS = 15
_OPEN = {"pending": 200, "unknown": 20, "verifying": 20}
_HOT_PHONE = "254700000001"
_CLAIM = 50

# History rows k+1..k+n (ids and created_at follow k, oldest first). ``:start`` is the
# first number, ``:stop`` the last; ids sort as numbers do (zero-padded, below any real
# ULID), and created_at is one second apart, ending :ago seconds before now.
_SEED_HISTORY = """
INSERT INTO payments (id, idempotency_key, request_hash, status, phone, amount,
    account_reference, description, checkout_request_id, merchant_request_id,
    result_code, result_desc, receipt, paid_amount, paid_phone, failure_reason,
    flagged, version, created_at, updated_at, check_count, checkout_request_id_verified)
SELECT 'pay_' || lpad(g::text, 26, '0'),
       'bench-' || g,
       md5(g::text),
       CASE WHEN g % 10 = 3 THEN 'failed' WHEN g % 50 = 7 THEN 'rejected'
            ELSE 'succeeded' END,
       CASE WHEN g % 100 = 0 THEN CAST(:hot AS varchar)
            ELSE '2547' || lpad((10000000 + g % 50000)::text, 8, '0') END,
       10 + g % 990,
       'INV' || g % 1000,
       'Order ' || g,
       'ws_CO_' || lpad(g::text, 20, '0'),
       '29115-' || g,
       CASE WHEN g % 10 = 3 THEN '1032' WHEN g % 50 = 7 THEN NULL ELSE '0' END,
       'The service request is processed successfully.',
       CASE WHEN g % 10 = 3 OR g % 50 = 7 THEN NULL ELSE 'BNC' || lpad(g::text, 7, '0') END,
       CASE WHEN g % 10 = 3 OR g % 50 = 7 THEN NULL ELSE 10 + g % 990 END,
       NULL, NULL, false, 3,
       now() - (CAST(:ago AS bigint) + CAST(:stop AS bigint) - g) * interval '1 second',
       now() - (CAST(:ago AS bigint) + CAST(:stop AS bigint) - g) * interval '1 second',
       0, true
FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g
"""

# The open set: payments waiting for Daraja now (newest ids).
_SEED_OPEN = """
INSERT INTO payments (id, idempotency_key, request_hash, status, phone, amount,
    account_reference, description, checkout_request_id, flagged, version, created_at,
    updated_at, check_count, checkout_request_id_verified, verify_at, verify_since,
    next_check_at)
SELECT 'pay_' || lpad((CAST(:base AS bigint) + g)::text, 26, '0'),
       'open-' || CAST(:kind AS varchar) || g, md5(g::text),
       CAST(:status AS varchar), '2547' || lpad((20000000 + g)::text, 8, '0'), 100, 'INV1', 'Open',
       CASE WHEN CAST(:status AS varchar) = 'unknown' THEN NULL
            ELSE 'ws_CO_open_' || CAST(:kind AS varchar) || g END,
       false, 2, now() - interval '10 minutes', now() - interval '10 minutes', 0,
       true,
       CASE WHEN CAST(:kind AS varchar) = 'verifying' THEN now() - interval '1 minute' END,
       CASE WHEN CAST(:kind AS varchar) = 'verifying' THEN now() - interval '2 minutes' END,
       NULL
FROM generate_series(1, CAST(:n AS bigint)) AS g
"""


async def _seed_history(url: str, start: int, stop: int) -> float:
    from sqlalchemy import text

    from pesa.ledger import Ledger

    ledger = await Ledger.open(url)
    try:
        t0 = time.perf_counter()
        async with ledger.engine.begin() as conn:
            await conn.execute(
                text(_SEED_HISTORY),
                {"hot": _HOT_PHONE, "start": start, "stop": stop, "ago": 3600},
            )
        async with ledger.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE payments"))
        return time.perf_counter() - t0
    finally:
        await ledger.close()


async def _seed_open(url: str) -> None:
    from sqlalchemy import text

    from pesa.ledger import Ledger

    ledger = await Ledger.open(url)
    await ledger.migrate()
    base = 10**15  # above every history id
    try:
        async with ledger.engine.begin() as conn:
            for n, (kind, count) in enumerate(_OPEN.items()):
                await conn.execute(
                    text(_SEED_OPEN),
                    {
                        "base": base + n * 10_000,
                        "kind": kind,
                        "status": "pending" if kind != "unknown" else "unknown",
                        "n": count,
                    },
                )
    finally:
        await ledger.close()


class _Queries:
    """The timed queries against one ledger of ``size`` history payments."""

    def __init__(self, ledger: Any, size: int) -> None:
        self.ledger = ledger
        self.middle = f"pay_{size // 2:026d}"
        self.seen: dict[str, Any] = {}

    async def list(self) -> None:
        self.seen["list"] = len((await self.ledger.list_payments(limit=50)).items)

    async def phone(self) -> None:
        page = await self.ledger.list_payments(phone=_HOT_PHONE, limit=50)
        self.seen["phone"] = len(page.items)

    async def cursor(self) -> None:
        page = await self.ledger.list_payments(cursor=self.middle, limit=50)
        self.seen["cursor"] = len(page.items)

    async def claim(self) -> None:
        from datetime import timedelta

        claimed = await self.ledger.claim_for_reconciliation(
            limit=_CLAIM, min_age=timedelta(seconds=30), lease=timedelta(minutes=1)
        )
        self.seen["claim"] = len(claimed)

    async def release(self) -> None:
        """Undo the claims (not timed), so that every run claims the same rows."""
        from sqlalchemy import update

        from pesa.ledger._schema import payments

        async with self.ledger.engine.begin() as conn:
            await conn.execute(
                update(payments)
                .where(payments.c.claimed_until.is_not(None), payments.c.status != "succeeded")
                .values(claimed_until=None, check_count=0)
            )

    async def server_ms(self, name: str) -> float:
        """PostgreSQL's own execution time of the query's SELECTs (EXPLAIN ANALYZE)."""
        from sqlalchemy import event

        caught: list[tuple[str, Any]] = []

        def seen(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
            caught.append((statement, params))

        engine = self.ledger.engine.sync_engine
        event.listen(engine, "before_cursor_execute", seen)
        try:
            await getattr(self, name)()
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        await self.release()
        total = 0.0
        async with self.ledger.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
            for statement, params in caught:
                if not statement.lstrip().upper().startswith("SELECT"):
                    continue
                await cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params)
                plan = (await cursor.fetchone())[0][0]
                total += float(plan["Execution Time"])
            await conn.rollback()
        await self.release()
        return total


async def _measure(small_url: str, large_url: str, large: int) -> dict[str, Any]:
    """Each query's median seconds on both ledgers, the runs interleaved (small, large,
    small, ...) so that a change in the machine's load touches both alike."""
    from sqlalchemy import text

    from pesa.ledger import Ledger

    ledgers = [await Ledger.open(small_url), await Ledger.open(large_url)]
    try:
        queries = [_Queries(ledgers[0], _SMALL), _Queries(ledgers[1], large)]
        rows = []
        for ledger in ledgers:
            async with ledger.engine.connect() as conn:
                rows.append(
                    int((await conn.execute(text("SELECT count(*) FROM payments"))).scalar_one())
                )
        times: dict[str, list[list[float]]] = {name: [[], []] for name in _QUERIES}
        for run in range(_RUNS + 3):
            for name in _QUERIES:
                for side, query in enumerate(queries):
                    t0 = time.perf_counter()
                    await getattr(query, name)()
                    elapsed = time.perf_counter() - t0
                    if name == "claim":
                        await query.release()
                    if run >= 3:
                        times[name][side].append(elapsed)
        server = {name: [await query.server_ms(name) for query in queries] for name in _QUERIES}
        return {
            "rows": rows,
            "median": {
                name: [statistics.median(side) for side in pair] for name, pair in times.items()
            },
            "server_ms": server,
            "seen": [query.seen for query in queries],
        }
    finally:
        for ledger in ledgers:
            await ledger.close()


async def _storage(url: str) -> dict[str, float]:
    """Bytes per payment row on disk (heap, TOAST and indexes)."""
    from sqlalchemy import text

    from pesa.ledger import Ledger

    ledger = await Ledger.open(url)
    try:
        async with ledger.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE payments"))
            row = (
                await conn.execute(
                    text(
                        "SELECT pg_total_relation_size('payments'), "
                        "pg_indexes_size('payments'), count(*) FROM payments"
                    )
                )
            ).one()
        total, indexes, count = (int(v) for v in row)
        return {"total": total / count, "indexes": indexes / count}
    finally:
        await ledger.close()


_QUERIES = {
    "list": "payments list, first page (50, newest first)",
    "phone": "one customer's payments (?phone=, 1 in 100 payments), first page",
    "cursor": "cursor pagination: a page from the middle of the ledger",
    "claim": f"reconciler's claim ({_CLAIM} due of {sum(_OPEN.values())} open, SKIP LOCKED)",
}


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """Time the ledger's read queries at 10,000 payments and at a large size."""
    large = _LARGE.get(sizes.name.split()[0], 1_000_000)
    section = Section(
        key="ledger",
        title=f"Large ledgers: the read queries at 10,000 and at {large:,} payments (PostgreSQL)",
        what=(
            f"Two PostgreSQL ledgers seeded in SQL, one with {_SMALL:,} settled payments, one "
            f"with {large:,}; in both the open set is {sum(_OPEN.values())} payments (pending, "
            "unknown, waiting for a verification), as in a live ledger where only the "
            "history grows. Each query runs through the `Ledger` API (what the REST API and "
            f"the reconciler call), median of {_RUNS} runs after 3 not timed, the two "
            "ledgers' runs interleaved. The PostgreSQL column is the server's own execution "
            "time (EXPLAIN ANALYZE) of the query's SELECTs: the rest is the driver, "
            "SQLAlchemy and the machine's load."
        ),
        baseline=f"the same query on the ledger of {_SMALL:,} payments",
    )
    pg_url = os.environ.get("PESA_TEST_DATABASE_URL")
    if not pg_url:
        section.skipped = "PESA_TEST_DATABASE_URL not set: PostgreSQL not measured"
        return section
    from benchmarks._gateway_bench import postgres_database

    section.columns = [
        "query",
        f"ms at {_SMALL:,}",
        f"ms at {large:,}",
        "ratio",
        "PostgreSQL ms (small / large)",
        "rows returned",
    ]
    with postgres_database(pg_url) as small_db, postgres_database(pg_url) as large_db:
        for db in (small_db, large_db):
            anyio.run(_seed_open, db.url)
        seeded = anyio.run(_seed_history, small_db.url, 1, _SMALL)
        log(f"  seeded {_SMALL:,} payments in {seeded:.1f} s")
        seeded = anyio.run(_seed_history, large_db.url, 1, large)
        log(f"  seeded {large:,} payments in {seeded:.1f} s")
        result = anyio.run(_measure, small_db.url, large_db.url, large)
        storage = anyio.run(_storage, large_db.url)
    rate = large / seeded
    for key, label in _QUERIES.items():
        small_s, large_s = result["median"][key]
        ratio = large_s / small_s
        server = result["server_ms"][key]
        log(f"  {key}: {small_s * 1e3:.2f} ms -> {large_s * 1e3:.2f} ms ({ratio:.2f}x)")
        section.rows.append(
            [
                label,
                round(small_s * 1e3, 2),
                round(large_s * 1e3, 2),
                round(ratio, 2),
                f"{server[0]:.2f} / {server[1]:.2f}",
                result["seen"][1][key],
            ]
        )
        section.targets.append(
            Target(
                name=f"large ledger: {label} at {large:,} vs {_SMALL:,} payments",
                target="<= 2x",
                measured=f"{ratio:.2f}x",
                met=ratio <= 2.0,
            )
        )
    section.notes.append(
        f"Storage at {result['rows'][1]:,} payments: {storage['total']:.0f} bytes per payment "
        f"row (heap and indexes, of which indexes {storage['indexes']:.0f}); seeding by "
        f"INSERT ... SELECT wrote {rate:,.0f} rows/s with every index in place."
    )
    section.notes.append(
        "Each query reads an index in its ORDER BY's order and stops after the page: the "
        "list and the cursor page walk the primary key backwards from the cursor, a "
        "customer's page walks (phone, id) (migration 0007; on phone alone PostgreSQL read "
        "and sorted every payment of that customer), the claim reads "
        "(status, next_check_at) and verify_at, which only hold the open set's rows among "
        "their first entries. tests/ledger/test_large_ledger_plans.py checks the plans."
    )
    section.data = {**result, "storage": storage}
    return section
