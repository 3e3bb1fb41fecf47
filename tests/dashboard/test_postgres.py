"""The dashboard's pages on PostgreSQL (the other tests of this package run on SQLite)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

from pesa.emulator import Emulator, EmulatorConfig
from pesa.testing import run_gateway

from .conftest import (
    OPERATOR,
    Browserless,
    World,
    add_operators,
    create_payment,
    dashboard_settings,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("dashboard-postgres")]


@pytest.fixture(scope="module")
def pg_world() -> Iterator[World]:
    base = os.environ.get("PESA_TEST_DATABASE_URL")
    if not base:
        pytest.skip("PESA_TEST_DATABASE_URL is not set: no PostgreSQL server to test against")
    import psycopg

    plain = base.replace("postgresql+psycopg://", "postgresql://")
    schema = f"pesa_dash_{secrets.token_hex(6)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{plain}{'&' if '?' in plain else '?'}options=-csearch_path%3D{schema}"
    try:
        add_operators(url)
        emulator = Emulator(EmulatorConfig(stk_delay=0.1, seed=3, callback_retries=2))
        with run_gateway(dashboard_settings(url), emulator=emulator) as gateway:
            world = World(gateway, url, {})
            with world.api() as api:
                paid = create_payment(api, "0708374149", 75, "PG-PAID")
                world.payments["paid"] = wait_for(
                    api, paid["id"], lambda p: p["status"] == "succeeded"
                )
            yield world
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_every_page_renders_on_postgresql(pg_world: World) -> None:
    client = Browserless(pg_world)
    try:
        assert client.sign_in(OPERATOR).status_code == 303
        paid = pg_world.payments["paid"]
        for path in (
            "/dashboard/",
            "/dashboard/payments",
            "/dashboard/payments?q=0708%20374%20149&status=succeeded&from=2020-01-01",
            "/dashboard/attention",
            "/dashboard/audit",
            f"/dashboard/payments/{paid['id']}",
        ):
            response = client.get(path)
            assert response.status_code == 200, path
        assert paid["id"] in client.get("/dashboard/payments?q=0708%20374%20149").text
        exported = client.get("/dashboard/payments.csv?q=254708374149").text
        assert paid["id"] in exported and paid["receipt"] in exported
    finally:
        client.close()


def test_hostile_text_is_a_clear_answer_never_a_database_error(pg_world: World) -> None:
    """PostgreSQL refuses NUL in text: a search, a sign-in name or a note carrying one is
    refused or recorded escaped, never a 5xx."""
    client = Browserless(pg_world)
    try:
        token = client.sign_in_form()
        refused = client.client.post(
            "/dashboard/sign-in",
            data={"username": "amina\x00", "password": "whatever-it-is", "csrf_token": token},
        )
        assert refused.status_code == 401
        assert client.sign_in(OPERATOR).status_code == 303
        search = client.get("/dashboard/payments", params={"q": "0708\x00374149"})
        assert search.status_code == 422 and "q: must be printable text" in search.text
        cursor = client.get("/dashboard/payments", params={"cursor": "pay_\x00"})
        assert cursor.status_code == 422
        paid = pg_world.payments["paid"]["id"]
        note = client.post(f"/dashboard/payments/{paid}/resolve-flag", {"note": "ok\x00"})
        assert note.status_code == 422
        assert "note: must be text without NUL" in note.text
        assert client.get("/dashboard/audit").status_code == 200
    finally:
        client.close()
