"""Shared fixtures for the whole suite."""

from __future__ import annotations

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
