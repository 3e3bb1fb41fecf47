"""Migrations: shipped in the package, run on an empty database, idempotent, match the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from pesa import ConfigurationError
from pesa.ledger import Ledger, async_url, current_revision, head_revision
from pesa.ledger._migrate import HEAD_REVISION, MIGRATIONS_DIR
from pesa.ledger._schema import metadata

from .conftest import ManualClock


def _schema_diff(conn: Connection) -> list[object]:
    """What Alembic's autogenerate finds between the database and the code's tables."""
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrate_creates_every_table_on_an_empty_database(empty_database_url: str) -> None:
    ledger = await Ledger.open(empty_database_url)
    try:
        assert await current_revision(ledger.engine) is None
        await ledger.migrate()
        assert await current_revision(ledger.engine) == head_revision()
        async with ledger.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert {"payments", "payment_events", "callbacks", "webhook_deliveries"} <= tables
    finally:
        await ledger.close()


async def test_migrate_again_is_a_no_op_that_keeps_data(
    empty_database_url: str, clock: ManualClock
) -> None:
    ledger = await Ledger.open(empty_database_url, clock=clock)
    try:
        await ledger.migrate()
        payment, _ = await ledger.create_payment(None, "0708374149", 10, "INV", "Order")
        await ledger.migrate()
        await ledger.migrate()
        assert await ledger.get_payment(payment.id) == payment
        async with ledger.engine.connect() as conn:
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
        assert [v[0] for v in versions] == [head_revision()]
    finally:
        await ledger.close()


async def test_migrations_match_the_tables_the_code_uses(empty_database_url: str) -> None:
    ledger = await Ledger.open(empty_database_url)
    try:
        await ledger.migrate()
        async with ledger.engine.connect() as conn:
            assert await conn.run_sync(_schema_diff) == []
    finally:
        await ledger.close()


def test_the_head_constant_is_the_head_alembic_finds() -> None:
    # upgrade() skips Alembic when the database is at HEAD_REVISION: a new migration must
    # move the constant with it, or a database one migration behind would not be upgraded.
    assert head_revision() == HEAD_REVISION


async def test_a_database_one_migration_behind_is_upgraded(empty_database_url: str) -> None:
    from alembic import command

    from pesa.ledger._migrate import alembic_config

    ledger = await Ledger.open(empty_database_url)
    try:
        await ledger.migrate()

        def step_back(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "-1")

        async with ledger.engine.begin() as conn:
            await conn.run_sync(step_back)
        assert await current_revision(ledger.engine) not in (None, HEAD_REVISION)
        await ledger.migrate()
        assert await current_revision(ledger.engine) == HEAD_REVISION
        async with ledger.engine.connect() as conn:
            assert await conn.run_sync(_schema_diff) == []
    finally:
        await ledger.close()


async def test_a_database_at_head_starts_without_loading_alembic(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'at-head.db'}"
    ledger = await Ledger.open(url)
    try:
        await ledger.migrate()
    finally:
        await ledger.close()
    probe = (
        "import anyio, sys\n"
        "from pesa.ledger import Ledger\n"
        "async def main():\n"
        f"    ledger = await Ledger.open({url!r})\n"
        "    try:\n"
        "        await ledger.migrate()\n"
        "    finally:\n"
        "        await ledger.close()\n"
        "anyio.run(main)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_migrations_ship_inside_the_package() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert MIGRATIONS_DIR.is_relative_to(Path(__file__).parents[2] / "src" / "pesa" / "ledger")
    assert list((MIGRATIONS_DIR / "versions").glob("v*.py"))


async def test_migrate_runs_without_an_alembic_ini_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ledger = await Ledger.open("sqlite:///relative.db")
    try:
        await ledger.migrate()
    finally:
        await ledger.close()
    assert (tmp_path / "relative.db").is_file()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    ledger = await Ledger.open(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        await ledger.migrate()
        async with ledger.engine.connect() as conn:
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
        assert mode == "wal"
        assert busy > 0
    finally:
        await ledger.close()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///pesa.db", "sqlite+aiosqlite:///pesa.db"),
        ("sqlite+aiosqlite:///pesa.db", "sqlite+aiosqlite:///pesa.db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_sync_urls_map_to_async_drivers(given: str, expected: str) -> None:
    assert async_url(given).render_as_string() == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_urls_raise_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="PESA_DATABASE_URL"):
        async_url(url)


async def test_migrations_downgrade_to_empty_and_upgrade_again(empty_database_url: str) -> None:
    from alembic import command

    from pesa.ledger._migrate import alembic_config

    ledger = await Ledger.open(empty_database_url)
    try:
        await ledger.migrate()

        def downgrade(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "base")

        async with ledger.engine.begin() as conn:
            await conn.run_sync(downgrade)
        async with ledger.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "payments" not in tables
        await ledger.migrate()
        assert await current_revision(ledger.engine) == head_revision()
    finally:
        await ledger.close()


async def test_0009_backfills_first_sent_at_from_created_at_for_sent_rows_and_downgrades(
    empty_database_url: str,
) -> None:
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import insert, select

    from pesa.ledger._migrate import alembic_config, upgrade
    from pesa.ledger._schema import payouts, refunds

    created = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    common = {
        "request_hash": "0" * 64,
        "amount": 100,
        "flagged": False,
        "version": 1,
        "check_count": 0,
        "created_at": created,
        "updated_at": created,
    }
    payout = {"phone": "254708374149", "command_id": "BusinessPayment", "remarks": "Pay"}
    payout |= {"account": "default", "shortcode": "600000"}
    refund = {"original_receipt": "SG632NMUAB", "receiver_party": "174379", "remarks": "Back"}
    ledger = await Ledger.open(empty_database_url)
    try:
        await upgrade(ledger.engine, "0008")
        # Rows as 0008 stored them (first_sent_at, which has no default, is not written).
        async with ledger.engine.begin() as conn:
            for id_, status, attempts in (("po_sent", "pending", 2), ("po_queued", "created", 0)):
                row = {**common, **payout, "id": id_, "status": status, "attempts": attempts}
                await conn.execute(insert(payouts).values(**row))
            await conn.execute(
                insert(refunds).values(
                    **common,
                    **refund,
                    id="rf_sent",
                    source_id="pay_1",
                    status="unknown",
                    attempts=1,
                )
            )
        await ledger.migrate()
        async with ledger.engine.connect() as conn:
            sent = dict((await conn.execute(select(payouts.c.id, payouts.c.first_sent_at))).all())
            refunded = (await conn.execute(select(refunds.c.first_sent_at))).scalar_one()
        assert sent == {"po_sent": created, "po_queued": None}
        assert refunded == created

        def downgrade(conn: Connection) -> None:
            command.downgrade(alembic_config(conn), "0008")

        async with ledger.engine.begin() as conn:
            await conn.run_sync(downgrade)
        async with ledger.engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in _TWO}
            )
            kept = (await conn.execute(text("SELECT id, attempts FROM payouts ORDER BY id"))).all()
        assert all("first_sent_at" not in names for names in columns.values())
        assert [tuple(r) for r in kept] == [("po_queued", 0), ("po_sent", 2)]
        await ledger.migrate()
        assert await current_revision(ledger.engine) == head_revision()
    finally:
        await ledger.close()


_TWO = ("payouts", "refunds")
