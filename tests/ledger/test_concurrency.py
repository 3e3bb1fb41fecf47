"""Concurrent inputs apply once; claims never overlap; a failed write leaves nothing behind."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from pesa.ledger import Ledger, PaymentStatus
from pesa.ledger._ledger import Ledger as _LedgerImpl
from pesa.ledger._schema import callbacks, payment_events, payments

from .conftest import ManualClock, stk_callback

PHONE = "254708374149"


async def _count(ledger: Ledger, table: Any, *where: Any) -> int:
    async with ledger.engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
        )


async def test_concurrent_duplicate_callbacks_apply_once(ledger: Ledger) -> None:
    """Eight copies of one callback, sent at once on separate connections: one applies."""
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    await ledger.mark_accepted(payment.id, "ws_CO_1", "29115-34620561-1")
    body = stk_callback("ws_CO_1")
    outcomes = await asyncio.gather(
        *(ledger.ingest_stk_callback(body, source_ip=None) for _ in range(8))
    )
    assert sorted(o.status for o in outcomes) == ["applied"] + ["duplicate"] * 7
    assert await _count(ledger, callbacks) == 8
    assert await _count(ledger, payment_events, payment_events.c.type == "payment.succeeded") == 1
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.SUCCEEDED
    assert stored.version == 3  # created, pending, succeeded: nothing applied twice


async def test_concurrent_callback_and_query_result_apply_once(ledger: Ledger) -> None:
    from pesa.ledger import StkResult

    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    await ledger.mark_accepted(payment.id, "ws_CO_1", None)
    results = await asyncio.gather(
        ledger.ingest_stk_callback(stk_callback("ws_CO_1", 1032), source_ip=None),
        *(ledger.apply_stk_result("ws_CO_1", StkResult("1032", "cancelled")) for _ in range(4)),
    )
    assert sorted(r.status for r in results) == ["applied"] + ["duplicate"] * 4
    assert await _count(ledger, payment_events, payment_events.c.type == "payment.failed") == 1


async def test_concurrent_creates_with_one_key_make_one_payment(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(ledger.create_payment("same-key", PHONE, 10, "INV", "Order") for _ in range(6))
    )
    assert len({payment.id for payment, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert await _count(ledger, payments) == 1


async def test_concurrent_claimers_never_share_a_payment(
    database_url: str, clock: ManualClock
) -> None:
    """Four workers (separate engines, like separate processes) claim at once: disjoint sets."""
    setup = await Ledger.open(database_url, clock=clock)
    workers = [await Ledger.open(database_url, clock=clock) for _ in range(4)]
    try:
        await setup.migrate()
        for n in range(20):
            payment, _ = await setup.create_payment(None, PHONE, 10, "INV", "Order")
            await setup.mark_accepted(payment.id, f"ws_CO_{n}", None)
        batches = await asyncio.gather(
            *(
                w.claim_for_reconciliation(
                    limit=5, min_age=timedelta(0), lease=timedelta(minutes=1)
                )
                for w in workers
            )
        )
        claimed = [p.id for batch in batches for p in batch]
        assert len(claimed) == len(set(claimed))
        # Whatever was not claimed in the race is claimable now, and nothing twice.
        rest = await setup.claim_for_reconciliation(
            limit=100, min_age=timedelta(0), lease=timedelta(minutes=1)
        )
        assert len(claimed) + len(rest) == 20
        assert not set(claimed) & {p.id for p in rest}
    finally:
        for ledger in (setup, *workers):
            await ledger.close()


@pytest.mark.postgres
async def test_claims_skip_rows_another_worker_has_locked(
    ledger: Ledger, backend: str, database_url: str
) -> None:
    """FOR UPDATE SKIP LOCKED: a row locked by another transaction is skipped, not waited on."""
    if backend != "postgresql":
        pytest.skip("row locks are a PostgreSQL feature; SQLite serialises writers instead")
    ids = []
    for n in range(3):
        payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
        await ledger.mark_accepted(payment.id, f"ws_CO_{n}", None)
        ids.append(payment.id)
    other = create_async_engine(ledger.engine.url)
    try:
        async with other.connect() as conn, conn.begin():
            await conn.execute(
                text("SELECT id FROM payments WHERE id = :id FOR UPDATE"), {"id": ids[0]}
            )
            claimed = await asyncio.wait_for(
                ledger.claim_for_reconciliation(
                    limit=10, min_age=timedelta(0), lease=timedelta(minutes=1)
                ),
                timeout=30,
            )
            assert sorted(p.id for p in claimed) == sorted(ids[1:])
    finally:
        await other.dispose()
    assert database_url


async def test_event_write_failure_rolls_back_the_transition(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status change and its events are one transaction: no event, no change.

    The event row is made unstorable (no type: NOT NULL), so the database itself refuses
    it after the payment's UPDATE ran, in the same transaction (on PostgreSQL, the same
    statement: see ``Ledger._ingest_fast``).
    """
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    await ledger.mark_accepted(payment.id, "ws_CO_1", None)
    before = await ledger.get_payment(payment.id)
    outbox_rows = _LedgerImpl._outbox_rows

    def unstorable(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows, deliveries = outbox_rows(self, *args, **kwargs)
        return [{**row, "type": None} for row in rows], deliveries

    monkeypatch.setattr(_LedgerImpl, "_outbox_rows", unstorable)
    with pytest.raises(IntegrityError):
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip="196.201.214.200")
    assert await ledger.get_payment(payment.id) == before
    # ... and the raw callback is still kept, marked as an error, for replay and audit.
    async with ledger.engine.connect() as conn:
        row = (await conn.execute(select(callbacks))).one()._mapping
    assert row["outcome"] == "error"
    assert row["body"] == stk_callback("ws_CO_1")
    assert row["checkout_request_id"] == "ws_CO_1"


@pytest.mark.postgres
async def test_the_event_feed_never_skips_an_event_committed_out_of_order(
    ledger: Ledger, backend: str
) -> None:
    """seq 6 commits while seq 5 is in flight: a cursor taken then must still see seq 5.

    T_old gets its transaction id first but inserts its event last (higher seq); T_new
    inserts first (lower seq) and commits last. Ordering by seq alone would hand out a
    cursor past T_new's event before it is visible, and the poller would never see it.
    """
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: seq order is commit order there")
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    start = (await ledger.list_events()).next_cursor
    insert_event = text(
        "INSERT INTO payment_events (id, payment_id, type, payload, created_at) "
        "VALUES (:id, :pid, 'payment.test', '{}', now()) RETURNING seq"
    )
    engine = create_async_engine(ledger.engine.url)
    try:
        async with engine.connect() as old, engine.connect() as new:
            await old.begin()
            await new.begin()
            # Like every ledger write, each locks its payment row first; T_old takes its
            # transaction id first...
            lock = text("SELECT id FROM payments WHERE id = :id FOR SHARE")
            await old.execute(lock, {"id": payment.id})
            await old.execute(text("SELECT pg_current_xact_id()"))
            await new.execute(lock, {"id": payment.id})
            await new.execute(text("SELECT pg_current_xact_id()"))
            # ...but T_new inserts first (lower seq) and stays open.
            seq_new = (
                await new.execute(insert_event, {"id": "evt_new", "pid": payment.id})
            ).scalar_one()
            seq_old = (
                await old.execute(insert_event, {"id": "evt_old", "pid": payment.id})
            ).scalar_one()
            assert seq_new < seq_old
            await old.commit()
            seen = await ledger.list_events(after=start)
            assert [e.id for e in seen.items] == ["evt_old"]
            await new.commit()
            later = await ledger.list_events(after=seen.next_cursor)
            assert [e.id for e in later.items] == ["evt_new"]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_the_event_feed_hides_events_behind_a_running_transaction(
    ledger: Ledger, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: seq order is commit order there")
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    other, _ = await ledger.create_payment(None, PHONE, 11, "INV", "Order")
    engine = create_async_engine(ledger.engine.url)
    try:
        async with engine.connect() as unrelated, engine.connect() as running:
            # A write transaction that never touches this ledger does not hold the feed.
            await unrelated.begin()
            await unrelated.execute(text("SELECT pg_current_xact_id()"))
            await ledger.mark_accepted(payment.id, "ws_CO_1", None)
            assert [e.type for e in (await ledger.list_events()).items] == ["payment.pending"]
            # A ledger write still in flight (it locked a payment) holds back newer events.
            await running.begin()
            await running.execute(
                text("SELECT id FROM payments WHERE id = :id FOR SHARE"), {"id": other.id}
            )
            await running.execute(text("SELECT pg_current_xact_id()"))
            await ledger.expire(payment.id)
            assert [e.type for e in (await ledger.list_events()).items] == ["payment.pending"]
            await running.rollback()
            await unrelated.rollback()
        shown = await ledger.list_events()
        assert [e.type for e in shown.items] == ["payment.pending", "payment.failed"]
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_callback_whose_payment_moves_after_the_read_is_decided_again(
    ledger: Ledger, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL's one-statement callback path reads without a lock: when another writer
    moves the payment between that read and the write, the version guard matches no row,
    nothing at all is written (no event, no raw callback), and the callback is read and
    decided again: applied once, stored once."""
    if backend != "postgresql":
        pytest.skip("the one-statement callback path is PostgreSQL's")
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    await ledger.mark_accepted(payment.id, "ws_CO_1", "29115-34620561-1")
    other = create_async_engine(ledger.engine.url)
    plan = _LedgerImpl._plan
    calls: list[int] = []

    async def move() -> None:
        async with other.begin() as conn:
            await conn.execute(
                text("UPDATE payments SET version = version + 1 WHERE id = :id"),
                {"id": payment.id},
            )

    def plan_then_move(self: Any, current: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(current.version)
        return plan(self, current, *args, **kwargs)

    async def ingest() -> Any:
        return await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)

    monkeypatch.setattr(_LedgerImpl, "_plan", plan_then_move)
    read = _LedgerImpl._evidence_state

    def read_then_move(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not calls:
            # Between the read and the write: another writer moves the row (in a thread,
            # on its own connection, since this hook is synchronous).
            import threading

            thread = threading.Thread(target=asyncio.run, args=(move(),))
            thread.start()
            thread.join()
        return read(self, *args, **kwargs)

    monkeypatch.setattr(_LedgerImpl, "_evidence_state", read_then_move)
    try:
        outcome = await ingest()
    finally:
        await other.dispose()
    assert outcome.status == "applied"
    assert calls == [2, 3]  # decided at version 2, refused by the guard, decided at 3
    assert await _count(ledger, callbacks) == 1
    assert await _count(ledger, payment_events, payment_events.c.type == "payment.succeeded") == 1
    stored = await ledger.get_payment(payment.id)
    assert stored is not None and stored.status is PaymentStatus.SUCCEEDED
    assert stored.version == 4
