"""Large ledgers (issue 12): the read queries that must not slow down as the ledger grows
use an index, on PostgreSQL.

Each query is the one the :class:`~pesa.ledger.Ledger` API sends (caught as it runs), then
EXPLAINed in the same schema with ``enable_seqscan = off``: the planner then avoids a
sequential scan wherever an index can serve, so a ``Seq Scan`` left in the plan means no
index can, at any size. A listing must also read its index in the page's order (no
``Sort`` of every matching row): that is what keeps a page's cost independent of how
many rows match (``benchmarks/_ledger_bench.py`` times them at 10,000 and 1,000,000
payments). The ledger is seeded with a few thousand payments and ANALYZEd, so the plans
are also what the planner picks on real statistics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from pesa.ledger import Ledger

from .conftest import ManualClock

pytestmark = pytest.mark.postgres

HOT = "254700000001"

_SEED = """
INSERT INTO payments (id, idempotency_key, request_hash, status, phone, amount,
    account_reference, description, checkout_request_id, flagged, version, created_at,
    updated_at, check_count, checkout_request_id_verified, verify_at)
SELECT 'pay_' || lpad(g::text, 26, '0'), 'seed-' || g, md5(g::text),
       CASE WHEN g % 100 = 1 THEN 'pending' WHEN g % 10 = 3 THEN 'failed'
            ELSE 'succeeded' END,
       CASE WHEN g % 100 = 0 THEN '254700000001'
            ELSE '2547' || lpad((10000000 + g % 500)::text, 8, '0') END,
       100, 'INV' || g % 100, 'Order', 'ws_CO_' || g, false, 2,
       CAST(:now AS timestamptz) - (4000 - g) * interval '1 minute',
       CAST(:now AS timestamptz) - (4000 - g) * interval '1 minute',
       0, true, CASE WHEN g % 500 = 2 THEN CAST(:now AS timestamptz) - interval '1 minute' END
FROM generate_series(1, 4000) AS g
"""


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


async def _plans(ledger: Ledger, call: Callable[[], Awaitable[Any]]) -> list[dict[str, Any]]:
    """The plans (JSON) of the SELECTs that ``call`` sends, with sequential scans off."""
    caught: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            caught.append((statement, params))

    engine = ledger.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        await call()
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert caught, "the call sent no SELECT"
    plans = []
    async with ledger.engine.connect() as conn:
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_sort = off"))
        raw = await conn.get_raw_connection()
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        for statement, params in caught:
            await cursor.execute("EXPLAIN (FORMAT JSON) " + statement, params)
            row = await cursor.fetchone()
            assert row is not None
            plans.append(row[0][0]["Plan"])
        await conn.rollback()
    return plans


def _seq_scans(plans: list[dict[str, Any]]) -> list[str]:
    return [
        node.get("Relation Name", "?")
        for plan in plans
        for node in _nodes(plan)
        if node["Node Type"] == "Seq Scan"
    ]


def _sorts(plans: list[dict[str, Any]]) -> list[str]:
    return [
        node["Node Type"] for plan in plans for node in _nodes(plan) if "Sort" in node["Node Type"]
    ]


@pytest.fixture
async def seeded(ledger: Ledger, backend: str, clock: ManualClock) -> Ledger:
    if backend != "postgresql":
        pytest.skip("query plans are checked on PostgreSQL")
    async with ledger.engine.begin() as conn:
        await conn.execute(text(_SEED), {"now": clock.now()})
    async with ledger.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("ANALYZE payments"))
    return ledger


_MIDDLE = f"pay_{2000:026d}"

# Each listing, and the index it must read in the page's order.
LISTINGS: dict[str, tuple[Callable[[Ledger], Awaitable[Any]], str]] = {
    "payments, first page": (lambda ledger: ledger.list_payments(limit=50), "pk_payments"),
    "payments of one phone": (
        lambda ledger: ledger.list_payments(phone=HOT, limit=50),
        "ix_payments_phone_id",
    ),
    "payments, a page from the middle": (
        lambda ledger: ledger.list_payments(cursor=_MIDDLE, limit=50),
        "pk_payments",
    ),
    "payments of one phone, a later page": (
        lambda ledger: ledger.list_payments(phone=HOT, cursor=_MIDDLE, limit=50),
        "ix_payments_phone_id",
    ),
    "payouts, first page": (lambda ledger: ledger.payouts.page(limit=50), "pk_payouts"),
    "payouts of one phone": (
        lambda ledger: ledger.payouts.page(phone=HOT, limit=50),
        "ix_payouts_phone_id",
    ),
    "payouts, a later page": (
        lambda ledger: ledger.payouts.page(cursor="pyo_01ZZZZZZZZZZZZZZZZZZZZZZZZ", limit=50),
        "pk_payouts",
    ),
    "receipts, first page": (lambda ledger: ledger.receipts.list_receipts(limit=50), "pk_receipts"),
    "receipts, a later page": (
        lambda ledger: ledger.receipts.list_receipts(
            cursor="rcp_01ZZZZZZZZZZZZZZZZZZZZZZZZ", limit=50
        ),
        "pk_receipts",
    ),
}


def _indexes(plans: list[dict[str, Any]]) -> set[str]:
    return {node["Index Name"] for plan in plans for node in _nodes(plan) if "Index Name" in node}


@pytest.mark.parametrize("name", list(LISTINGS))
async def test_a_listing_reads_an_index_in_page_order(seeded: Ledger, name: str) -> None:
    call, index = LISTINGS[name]
    plans = await _plans(seeded, lambda: call(seeded))
    assert _seq_scans(plans) == [], plans
    assert _sorts(plans) == [], plans
    assert index in _indexes(plans), plans


async def test_the_reconcilers_claim_reads_only_the_open_payments(seeded: Ledger) -> None:
    """The claim's two SELECTs use (status, next_check_at) and verify_at; the routine one
    sorts what it found, which is the open set (pending and unknown), not the history."""

    async def claim() -> None:
        await seeded.claim_for_reconciliation(
            limit=50, min_age=timedelta(seconds=30), lease=timedelta(minutes=1)
        )

    plans = await _plans(seeded, claim)
    assert len(plans) == 2
    assert _seq_scans(plans) == [], plans
    assert {"ix_payments_verify_at", "ix_payments_status_next_check_at"} <= _indexes(plans)
