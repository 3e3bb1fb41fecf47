"""Fixtures of the gateway tests: settings, databases (SQLite and PostgreSQL), a live gateway."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa import Settings
from pesa.emulator import Emulator, EmulatorConfig
from pesa.ledger import Ledger
from pesa.testing import RunningGateway, run_gateway

API_KEY = "test-api-key-0123456789"
CALLBACK_TOKEN = "test-callback-token-0123456789"
PG_ENV = "PESA_TEST_DATABASE_URL"


def pg_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def pg_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a schema of its own, at the newest migration
    with no rows (emptied for reuse afterwards)."""
    base = pg_url()
    if base is None:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against")
    plain = base.replace("postgresql+psycopg://", "postgresql://")
    schemas = request.getfixturevalue("pg_schemas")
    schema = schemas.take("pesa_gw")
    sep = "&" if "?" in plain else "?"
    try:
        yield f"{plain}{sep}options=-csearch_path%3D{schema}"
    finally:
        schemas.give_back(schema)


def gateway_settings(database_url: str, **overrides: Any) -> Settings:
    """Emulator settings with short reconciler waits, independent of the caller's env."""
    values: dict[str, Any] = {
        "_env_file": None,
        "env": "emulator",
        "base_url": None,
        "database_url": database_url,
        "api_key": API_KEY,
        "callback_token": CALLBACK_TOKEN,
        "public_url": None,
        "callback_allowlist": "off",
        "run_workers": True,
        "auto_migrate": True,
        "webhook_urls": [],
        # Short enough that a test waits little for a worker, long enough that an idle
        # gateway does not spend a core polling (0.1 s cost 15% of one).
        "reconcile_interval": 0.25,
        "reconcile_min_age": 1.0,
        "reconcile_recheck_interval": 0.3,
        "reconcile_deadline": 60.0,
        "reconcile_query_rate": 50.0,
        "reconcile_query_burst": 10,
        # A commit wakes the dispatcher; the poll is only the safety net.
        "webhook_interval": 0.5,
        "webhook_backoff_base": 0.2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Callable[[Path], str]
) -> str:
    """Each gateway test runs on SQLite and, when configured, on PostgreSQL (migrated by the
    gateway as it starts; on SQLite a copy of a migrated file, which it finds current)."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "gateway.db")
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture
def emulator() -> Emulator:
    """An emulator whose customers answer after 0.1 s."""
    return Emulator(EmulatorConfig(stk_delay=0.1, seed=4))


@pytest.fixture
def gateway(database_url: str, emulator: Emulator) -> Iterator[RunningGateway]:
    """A live gateway (its own thread and loop) with the emulator mounted."""
    with run_gateway(gateway_settings(database_url), emulator=emulator) as running:
        yield running


@pytest.fixture
async def ledger(gateway: RunningGateway, database_url: str) -> AsyncIterator[Ledger]:
    """The gateway's ledger, opened again on the test's own loop (to inspect it)."""
    del gateway
    opened = await Ledger.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as client:
        yield client
