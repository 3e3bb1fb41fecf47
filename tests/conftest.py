"""Shared fixtures for the whole suite."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

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
