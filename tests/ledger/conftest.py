"""Fixtures for the ledger tests: the same suite on SQLite (a temp file) and PostgreSQL.

PostgreSQL runs only when ``PESA_TEST_DATABASE_URL`` is set; each test gets a schema of its
own (through ``search_path``), at the newest migration with no rows, so parallel runs never
collide (see ``PgSchemas`` in tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from pesa.ledger import Ledger, async_url
from pesa.testing import FrozenClock

PG_URL = os.environ.get("PESA_TEST_DATABASE_URL")
NO_PG = "PESA_TEST_DATABASE_URL is not set: PostgreSQL ledger tests skipped"


class ManualClock(FrozenClock):
    """pesa's frozen clock, starting 2026-11-29 09:00 UTC (shared by ledger and workers)."""

    def __init__(self) -> None:
        super().__init__(datetime(2026, 11, 29, 9, 0, tzinfo=UTC))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def pg_schema_url(schema: str) -> str:
    assert PG_URL is not None
    url = async_url(PG_URL)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


async def _pg_admin(statement: str) -> None:
    assert PG_URL is not None
    engine = create_async_engine(async_url(PG_URL))
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


BACKENDS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres])]


@pytest.fixture(params=BACKENDS)
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL (no tables): a temp SQLite file, or a new PostgreSQL
    schema dropped afterwards. For the tests of migrating one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    if PG_URL is None:
        pytest.skip(NO_PG)
    schema = f"pesa_test_{uuid.uuid4().hex[:16]}"
    await _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(schema)
    finally:
        await _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


@pytest.fixture
async def ledger(database_url: str, clock: ManualClock) -> AsyncIterator[Ledger]:
    """A migrated ledger with one webhook endpoint, on each backend."""
    opened = await Ledger.open(
        database_url, webhook_endpoints=["https://merchant.example/hooks"], clock=clock
    )
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def stk_callback(
    checkout_request_id: str,
    result_code: int = 0,
    *,
    merchant_request_id: str | None = "29115-34620561-1",
    receipt: str | None = "NLJ7RT61SV",
    amount: Any = 10,
    phone: Any = 254708374149,
    result_desc: str | None = None,
) -> bytes:
    """Build an STK callback body exactly as Daraja sends it (REFERENCE §6.3)."""
    callback: dict[str, Any] = {
        "MerchantRequestID": merchant_request_id,
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": result_code,
        "ResultDesc": result_desc
        or (
            "The service request is processed successfully."
            if result_code == 0
            else "Request cancelled by user"
        ),
    }
    if merchant_request_id is None:
        del callback["MerchantRequestID"]
    if result_code == 0:
        items: list[dict[str, Any]] = [{"Name": "Amount", "Value": amount}]
        if receipt is not None:
            items.append({"Name": "MpesaReceiptNumber", "Value": receipt})
        items += [
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20261129120115},
            {"Name": "PhoneNumber", "Value": phone},
        ]
        callback["CallbackMetadata"] = {"Item": items}
    return json.dumps({"Body": {"stkCallback": callback}}).encode()
