"""Database URLs and engines: sync-style URLs mapped to async drivers, SQLite made safe.

SQLite gets WAL (readers never block the writer), a busy timeout, ``synchronous=FULL``
(an acknowledged callback survives power loss, not only a crash) and ``BEGIN IMMEDIATE``
for write transactions so two writers queue on the lock instead of failing with
"database is locked" when upgrading a read lock. PostgreSQL uses psycopg 3 (async).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger

__all__ = ["BEGIN_MODE", "async_url", "create_engine"]

# Execution option naming how a SQLite transaction begins: "IMMEDIATE" (the default, for
# writes) or "DEFERRED" (read-only work that must not queue behind writers).
BEGIN_MODE = "pesa_sqlite_begin"

log = get_logger("pesa.ledger")

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
}

DEFAULT_SQLITE_BUSY_TIMEOUT = 30.0


def async_url(url: str | URL) -> URL:
    """Map ``sqlite:///x.db`` / ``postgresql://...`` to their async drivers.

    Raises:
        ConfigurationError: for a URL that is not SQLite or PostgreSQL.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except Exception as err:  # SQLAlchemy raises ArgumentError or ValueError
        raise ConfigurationError(
            "database_url: not a database URL (PESA_DATABASE_URL), expected "
            "sqlite:///path.db or postgresql://user@host/db"
        ) from err
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigurationError(
            f"database_url: unsupported database {parsed.drivername!r} (PESA_DATABASE_URL); "
            "use sqlite:///path.db or postgresql://user@host/db"
        )
    return parsed.set(drivername=driver)


def create_engine(url: str | URL, **options: Any) -> AsyncEngine:
    """Create the ledger's async engine for ``url`` (see :func:`async_url`)."""
    target = async_url(url)
    options.setdefault("json_deserializer", _read_stored_json)
    if target.get_backend_name() == "sqlite":
        return _sqlite_engine(target, **options)
    # No pool_pre_ping by default: it costs a round trip on every checkout, i.e. on every
    # callback. A connection dropped by a server restart fails one transaction, after which
    # SQLAlchemy invalidates the pool; pass engine_options={"pool_pre_ping": True} to trade
    # that round trip for never seeing it.
    return create_async_engine(target, **options)


def _read_stored_json(text: str) -> Any:
    # A JSON column written before today's limits (metadata nested deeper than the decoder's
    # recursion limit) must not make every read of its row fail: it reads as null.
    try:
        return json.loads(text)
    except (RecursionError, ValueError):
        log.warning("a stored JSON value could not be decoded; read as null")
        return None


def _sqlite_engine(url: URL, **options: Any) -> AsyncEngine:
    memory = url.database in (None, "", ":memory:")
    connect_args = dict(options.pop("connect_args", {}))
    connect_args.setdefault("timeout", DEFAULT_SQLITE_BUSY_TIMEOUT)
    if memory:
        # One shared connection, or every pooled connection would see its own empty database.
        options.setdefault("poolclass", StaticPool)
        connect_args.setdefault("check_same_thread", False)
    engine = create_async_engine(url, connect_args=connect_args, **options)
    busy_ms = int(float(connect_args["timeout"]) * 1000)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(BEGIN_MODE, "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine
