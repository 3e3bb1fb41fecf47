"""Fixtures of the Django tests: the test project, the database under test, an emulator.

These tests run under pytest-django, loaded only here (``make test-django``: ``pytest -p
django tests/pesa_django``). Each module runs on SQLite and, when ``PESA_TEST_DATABASE_URL``
is set, on PostgreSQL: the ``pesa_db`` fixture points the project's router at one database
for the whole module. One emulator per module; pytest-django's ``live_server`` is the site
Daraja (the emulator) calls back over real HTTP.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
os.environ["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
os.environ.setdefault("PESA_DJANGO_TEST_DIR", tempfile.mkdtemp(prefix="pesa-django-"))
# Unique per run: other test runs may share the PostgreSQL server at the same time.
os.environ.setdefault("PESA_DJANGO_PG_TEST_NAME", f"test_pesa_django_{secrets.token_hex(4)}")

CALLBACK_TOKEN = "django-callback-token-0123456789"
PG_ENV = "PESA_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - pytest hook
    import django

    django.setup()


def pesa_overrides(**overrides: Any) -> dict[str, Any]:
    """PESA settings for tests: short reconciler waits, nothing from the caller's env."""
    values: dict[str, Any] = {
        "env": "emulator",
        "callback_token": CALLBACK_TOKEN,
        "callback_allowlist": "off",
        "callback_on_mismatch": "refuse",
        "reconcile_interval": 0.2,
        "reconcile_min_age": 0.5,
        "reconcile_recheck_interval": 0.3,
        "reconcile_recheck_cap": 1.0,
        "reconcile_deadline": 60.0,
        "reconcile_query_rate": 50.0,
        "reconcile_lease": 60.0,
        "payout_status_after": 0.5,
        "timeout": 10.0,
        "max_retries": 0,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="module", params=["default", pytest.param("pg", marks=pytest.mark.postgres)])
def pesa_db(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database alias the ``pesa`` app uses for this module's tests."""
    if request.param == "pg" and not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against")
    from djproject import routers

    routers.current = request.param
    try:
        yield request.param
    finally:
        routers.current = "default"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Any]:
    """One Daraja emulator for the module, on a free loopback port."""
    from pesa.emulator import EmulatorConfig
    from pesa.testing import run_emulator

    with run_emulator(EmulatorConfig(stk_delay=0.3, seed=None)) as running:
        yield running


@pytest.fixture
def site(
    pesa_db: str,  # noqa: ARG001 - selects the database before the site is wired
    live_server: Any,
    emulator: Any,
    settings: Any,
) -> Iterator[Any]:
    """The live site wired to the emulator: PESA settings, and the emulator reset."""
    settings.PESA = pesa_overrides(base_url=emulator.base_url, public_url=live_server.url)
    emulator.control.clear_rules()
    yield live_server


_phones = iter(range(secrets.randbelow(10**6) * 1000, 10**9))


def fresh_phone() -> str:
    """A Safaricom number no other test (nor the emulator's scenario table) uses: the
    emulator keeps one open prompt per phone."""
    return f"2547{next(_phones) % 10**8:08d}".replace("25470", "25471", 1)


def wait_for(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (generous deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)
