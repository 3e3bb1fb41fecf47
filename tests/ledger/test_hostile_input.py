"""Hostile input at the ledger's edges (issue 8, findings 5 and 7): a clear ValidationError
or "not found" on both databases, never a database error, and the raw callback always kept.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from pesa import ValidationError
from pesa.ledger import Ledger, ParsedStkCallback, StkResult
from pesa.ledger._schema import callbacks

from .conftest import stk_callback

PHONE = "254708374149"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_from", datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))),
        ("created_to", datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14)))),
        ("created_from", datetime(2026, 1, 1)),  # naive
        ("cursor", "pay_\x00"),
        ("cursor", "pay_\ud800"),
        ("cursor", "p" * 41),
        ("phone", "٠٧٠٨٣٧٤١٤٩"),
    ],
    ids=repr,
)
async def test_payment_filters_refuse_what_no_row_can_match(
    ledger: Ledger, field: str, value: object
) -> None:
    await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    with pytest.raises(ValidationError) as info:
        await ledger.list_payments(**{field: value})  # type: ignore[arg-type]  # each filter in turn
    assert info.value.field == field


@pytest.mark.parametrize(
    ("after", "payment_id"),
    [
        ("1" * 30, None),
        (f"{'1' * 30}:1", None),
        (f"1:{2**63}", None),
        ("１２", None),  # fullwidth digits: int() would read them
        (None, "pay_\x00"),
        (None, "p" * 100),
    ],
    ids=repr,
)
async def test_event_feed_refuses_cursors_and_ids_out_of_range(
    ledger: Ledger, after: str | None, payment_id: str | None
) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.mark_accepted(payment.id, "ws_CO_1", "29115-1")
    with pytest.raises(ValidationError) as info:
        await ledger.list_events(after=after, payment_id=payment_id)
    assert info.value.field == ("after" if after is not None else "payment_id")


@pytest.mark.parametrize("bad_id", ["pay_\x00", "pay_\ud800", "p" * 5000])
async def test_unstorable_ids_name_no_payment(ledger: Ledger, bad_id: str) -> None:
    assert await ledger.get_payment(bad_id) is None
    assert await ledger.get_payment_by_checkout_id(bad_id) is None


def _parser_naming(checkout_request_id: str) -> object:
    def parse(_: bytes) -> ParsedStkCallback:
        return ParsedStkCallback(
            checkout_request_id=checkout_request_id,
            merchant_request_id=None,
            result=StkResult(result_code="1032", result_desc="Request cancelled by user"),
        )

    return parse


@pytest.mark.parametrize(
    "checkout_request_id", ["ws_CO_" + "7" * 300, "ws_CO_\x001"], ids=["300-chars", "nul"]
)
async def test_the_raw_callback_is_stored_even_when_a_parsed_field_cannot_be(
    ledger: Ledger, checkout_request_id: str
) -> None:
    """Finding 7: PostgreSQL refused the row (a 503) and the raw body was lost.

    A parser (here a custom one; the default bounds every field) hands the ledger an id no
    column can hold: on PostgreSQL applying it fails, and the body is still stored, the id
    left out with the reason in ``detail``.
    """
    body = stk_callback("ws_CO_genuine", 1032)
    # On PostgreSQL the database refuses the id (the gateway answers 503, not 200).
    with contextlib.suppress(DBAPIError):
        await ledger.ingest_stk_callback(
            body,
            source_ip="196.201.214.200",
            parse=_parser_naming(checkout_request_id),  # type: ignore[arg-type]  # a parser
        )
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(select(callbacks).where(callbacks.c.body == body))).all()
    assert len(rows) == 1
    row = rows[0]._mapping
    if row["outcome"] == "error":
        assert row["checkout_request_id"] is None
        assert "CheckoutRequestID not stored" in row["detail"]
    else:  # SQLite stores any text of any length
        assert row["checkout_request_id"] == checkout_request_id


async def test_metadata_too_deep_to_decode_reads_as_null(ledger: Ledger) -> None:
    """A row written before the metadata limits must not make every read fail."""
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42", {"a": 1})
    deep = "[" * 5000 + "]" * 5000
    async with ledger.engine.begin() as conn:
        await conn.exec_driver_sql(
            'UPDATE payments SET metadata = \'{"a": ' + deep + "}' WHERE id = '" + payment.id + "'"
        )
    page = await ledger.list_payments()
    assert [p.id for p in page.items] == [payment.id]
    assert page.items[0].metadata is None
    assert (await ledger.get_payment(payment.id)) is not None
