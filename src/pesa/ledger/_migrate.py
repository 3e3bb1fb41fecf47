"""Run the ledger's Alembic migrations from inside the package (no ``alembic.ini`` needed).

Alembic is imported only when a migration has to run: a process that starts against a
database already at :data:`HEAD_REVISION` (every ``pesa serve`` after the first, every
``pesa worker``) checks that with one query and never loads Alembic or the migration
scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pesa._exceptions import ConfigurationError
from pesa.ledger._engine import BEGIN_MODE

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "HEAD_REVISION",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

HEAD_REVISION: Final = "0009"
"""The newest migration shipped with this version of pesa (a test holds it equal to the
head Alembic finds in :data:`MIGRATIONS_DIR`; update both together)."""

# Arbitrary constant key for pg_advisory_xact_lock: two gateways starting together must not
# run the same migration at once.
_PG_MIGRATION_LOCK = 0x7065_7361_6C65_6467  # "pesaledg"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic :class:`Config` pointing at the packaged migrations.

    When ``connection`` is given, ``env.py`` runs on it (inside its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision shipped with this version of pesa, as Alembic finds it."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have a head"
    return head


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    command.upgrade(alembic_config(connection), revision)


async def _versions(conn: AsyncConnection) -> list[str] | None:
    """The rows of ``alembic_version`` (``None`` when the table does not exist)."""
    if conn.dialect.name == "postgresql":
        exists = "SELECT to_regclass('alembic_version') IS NOT NULL"
    else:
        exists = (
            "SELECT count(*) > 0 FROM sqlite_master "
            "WHERE type = 'table' AND name = 'alembic_version'"
        )
    if not (await conn.execute(text(exists))).scalar():
        return None
    rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
    return [row[0] for row in rows]


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` in one transaction (a no-op when already there)."""
    if revision in ("head", HEAD_REVISION) and await current_revision(engine) == HEAD_REVISION:
        return  # the common start: nothing to do, and no need to load Alembic to see it
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    reading = engine.execution_options(**{BEGIN_MODE: "DEFERRED"})
    async with reading.connect() as conn:
        versions = await _versions(conn)
    if not versions:
        return None
    if len(versions) > 1:  # pesa's history is linear: a database it did not migrate
        raise ConfigurationError(
            f"alembic_version holds {len(versions)} revisions ({', '.join(sorted(versions))}); "
            "pesa's migrations have one head"
        )
    return versions[0]
