"""Fixtures of the reliability suite: sizes, a fresh database per scenario (SQLite, and
PostgreSQL when ``PESA_TEST_DATABASE_URL`` is set), and the recorder behind RELIABILITY.md."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from pesa.ledger import async_url

from ._harness import SOAK
from ._report import Recorder, command_line, render_report

PG_URL = os.environ.get("PESA_TEST_DATABASE_URL")
NO_PG = "PESA_TEST_DATABASE_URL is not set: PostgreSQL runs skipped"

_RECORDER = Recorder()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Note skipped reliability tests, so the report shows what did not run."""
    if report.skipped and "tests/reliability/" in report.nodeid:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _RECORDER.skip(report.nodeid, str(reason).removeprefix("Skipped: "))


def _report_path(root: Path) -> Path | None:
    configured = os.environ.get("PESA_RELIABILITY_REPORT")
    if configured:
        return Path(configured)
    return root / "RELIABILITY.md" if SOAK else None


@pytest.fixture(scope="session", autouse=True)
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """The session's recorder; writes the report at the end when asked to."""
    yield _RECORDER
    path = _report_path(Path(str(request.config.rootpath)))
    if path is None or not _RECORDER.results:
        return
    preamble = (Path(__file__).parent / "PREAMBLE.md").read_text()
    path.write_text(
        render_report(
            _RECORDER.results,
            command=command_line(),
            soak=SOAK,
            facts=_RECORDER.facts,
            skipped=_RECORDER.skipped,
            preamble=preamble,
        )
    )


def _pg_schema_url(schema: str) -> str:
    assert PG_URL is not None
    url = async_url(PG_URL)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


async def _pg_admin(statement: str) -> str:
    assert PG_URL is not None
    engine = create_async_engine(async_url(PG_URL))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
    finally:
        await engine.dispose()
    return str(version)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL schema, dropped afterwards (skips without the server)."""
    if PG_URL is None:
        pytest.skip(NO_PG)
    schema = f"pesa_rel_{uuid.uuid4().hex[:16]}"
    version = await _pg_admin(f'CREATE SCHEMA "{schema}"')
    _RECORDER.facts["PostgreSQL"] = version.split()[0]
    try:
        yield _pg_schema_url(schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """``(backend, url)`` of a fresh, empty database: a SQLite file or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'reliability.db'}"
        return
    if PG_URL is None:
        pytest.skip(NO_PG)
    schema = f"pesa_rel_{uuid.uuid4().hex[:16]}"
    version = await _pg_admin(f'CREATE SCHEMA "{schema}"')
    _RECORDER.facts["PostgreSQL"] = version.split()[0]
    try:
        yield "postgresql", _pg_schema_url(schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')
