"""Shared fixtures for the whole suite."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

_DJANGO_TESTS = Path(__file__).parent / "pesa_django"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/pesa_django runs under pytest-django, which the rest of the suite never loads
    (``-p no:django`` in addopts): ``make test-django`` runs it with ``-p django``."""
    if config.pluginmanager.has_plugin("django"):
        return None
    if collection_path == _DJANGO_TESTS or _DJANGO_TESTS in collection_path.parents:
        return True
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _longest_first(items)
    _check_groups(config, items)


def _longest_first(items: list[pytest.Item]) -> None:
    """Modules allowed ten minutes or more (``timeout`` marker: the benchmark smoke run)
    first, each module kept together: started last, the longest test would run alone at the
    end while the other workers wait. Only those: starting every slow scenario at once
    starves the Django sessions running beside the suite, and their timing tests flake."""
    longest = {
        item.path
        for item in items
        if (marker := item.get_closest_marker("timeout")) is not None
        and marker.args
        and float(marker.args[0]) >= 600
    }
    modules = list(dict.fromkeys(item.path for item in items))
    rank = {path: (path not in longest, i) for i, path in enumerate(modules)}
    items.sort(key=lambda item: rank[item.path])


def _check_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (``make test``) pytest-xdist sends an ``xdist_group`` to one
    worker by tagging its node ids; a pytest it cannot tag (9.2) would silently spread the
    group, and set up its expensive shared fixtures once per worker. Fail loudly instead."""
    if not getattr(config.option, "loadgroup", False):
        return
    untagged = [
        item.nodeid
        for item in items
        if item.get_closest_marker("xdist_group") is not None and "@" not in item.nodeid
    ]
    if untagged:
        raise pytest.UsageError(
            f"pytest-xdist did not apply xdist_group to {len(untagged)} tests (first: "
            f"{untagged[0]}): this pytest and pytest-xdist do not work together; see the "
            "pytest pin in pyproject.toml"
        )


@pytest.fixture(scope="session")
def _migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head by the real ``Ledger.migrate()``, once per worker."""
    import asyncio

    from pesa.ledger import Ledger

    path = tmp_path_factory.mktemp("sqlite-template") / "ledger.db"

    async def migrate() -> None:
        ledger = await Ledger.open(f"sqlite:///{path}")
        try:
            await ledger.migrate()
        finally:
            await ledger.close()  # the last connection's close checkpoints the WAL

    asyncio.run(migrate())
    return path


@pytest.fixture
def migrated_sqlite(_migrated_sqlite_template: Path) -> Callable[[Path], str]:
    """Put a database already at the newest migration at a path; returns its URL.

    A copy of a database the real migrations built once, instead of running every migration
    again for each test (~0.1 s of CPU each): tests about migrating an empty database open
    their own.
    """

    def place(path: Path) -> str:
        if not path.exists():
            shutil.copyfile(_migrated_sqlite_template, path)
        return f"sqlite:///{path}"

    return place


class PgSchemas:
    """PostgreSQL schemas at the newest migration, each test's own, reused once emptied.

    Creating a schema and running every migration costs ~0.1 s of CPU here and more in the
    server, for each of several hundred tests; emptying one (``TRUNCATE ... RESTART
    IDENTITY``) costs next to nothing. A schema comes back to the pool only when it still
    holds exactly the tables and revision it was made with and empties within a few
    seconds; otherwise it is dropped. Tests about migrating an empty database make their own.
    """

    def __init__(self, base_url: str) -> None:
        self._plain = base_url.replace("postgresql+psycopg://", "postgresql://")
        self._free: list[str] = []
        self._made: dict[str, frozenset[str]] = {}

    def _admin(self, *statements: str) -> list[Any]:
        import psycopg

        with psycopg.connect(self._plain, autocommit=True) as conn:
            rows: list[Any] = []
            for statement in statements:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
            return rows

    def _tables(self, schema: str) -> frozenset[str]:
        rows = self._admin(f"SELECT tablename FROM pg_tables WHERE schemaname = '{schema}'")
        return frozenset(row[0] for row in rows)

    def take(self, prefix: str) -> str:
        """A schema at head with no rows (named ``prefix_...`` when new)."""
        if self._free:
            return self._free.pop()
        import asyncio
        import secrets
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy.engine import make_url

        from pesa.ledger import Ledger

        schema = f"{prefix}_{secrets.token_hex(6)}"
        self._admin(f'CREATE SCHEMA "{schema}"')
        url = make_url(self._plain).update_query_dict({"options": f"-csearch_path={schema}"})

        async def migrate() -> None:
            ledger = await Ledger.open(url)
            try:
                await ledger.migrate()
            finally:
                await ledger.close()

        # In a thread of its own: the caller may be a fixture running in an event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, migrate()).result()
        self._made[schema] = self._tables(schema)
        return schema

    def url(self, schema: str) -> str:
        """The ledger's URL for ``schema`` (psycopg, ``search_path`` set to it)."""
        from sqlalchemy.engine import make_url

        from pesa.ledger import async_url

        url = async_url(make_url(self._plain))
        return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )

    def give_back(self, schema: str) -> None:
        """Empty ``schema`` for the next test, or drop it if it is not as it was made."""
        from pesa.ledger._migrate import HEAD_REVISION

        expected = self._made.get(schema)
        try:
            if expected is None or self._tables(schema) != expected:
                raise LookupError(schema)
            version = self._admin(f'SELECT version_num FROM "{schema}".alembic_version')
            if version != [(HEAD_REVISION,)]:
                raise LookupError(schema)
            emptied = ", ".join(f'"{schema}"."{t}"' for t in sorted(expected - {"alembic_version"}))
            self._admin("SET lock_timeout = '5s'", f"TRUNCATE {emptied} RESTART IDENTITY CASCADE")
        except Exception:
            self.drop(schema)
            return
        self._free.append(schema)

    def drop(self, schema: str) -> None:
        self._made.pop(schema, None)
        self._admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def close(self) -> None:
        for schema in list(self._made):
            self.drop(schema)
        self._free.clear()


@pytest.fixture(scope="session")
def pg_schemas() -> Iterator[PgSchemas]:
    """The worker's pool of migrated PostgreSQL schemas (skips without a server)."""
    import os

    base = os.environ.get("PESA_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PESA_TEST_DATABASE_URL is not set: PostgreSQL tests skipped")
    schemas = PgSchemas(base)
    try:
        yield schemas
    finally:
        schemas.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Callable[[Path], str]
) -> Iterator[str]:
    """A database at the newest migration with no rows, on each backend: a temp SQLite file
    (a copy of one migrated once), or a PostgreSQL schema of its own (emptied for reuse
    afterwards; skipped without ``PESA_TEST_DATABASE_URL``)."""
    if request.param == "sqlite":
        yield migrated_sqlite(tmp_path / "ledger.db")
        return
    schemas: PgSchemas = request.getfixturevalue("pg_schemas")
    schema = schemas.take("pesa_test")
    try:
        yield schemas.url(schema)
    finally:
        schemas.give_back(schema)
