"""The ledger's default callback parser (pesa.daraja.parse_stk_callback, adapted)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from pesa import InvalidCallbackError
from pesa.ledger import parse_stk_callback_body

from .conftest import stk_callback


def test_a_success_becomes_a_result_with_receipt_amount_phone_and_date() -> None:
    parsed = parse_stk_callback_body(stk_callback("ws_CO_1"))
    assert parsed.checkout_request_id == "ws_CO_1"
    assert parsed.merchant_request_id == "29115-34620561-1"
    result = parsed.result
    assert result.is_success and result.source == "callback"
    assert result.receipt == "NLJ7RT61SV"
    assert result.amount == 10
    assert result.phone == "254708374149"
    assert result.transaction_date == datetime(
        2026, 11, 29, 12, 1, 15, tzinfo=ZoneInfo("Africa/Nairobi")
    )


def test_an_amount_with_decimals_is_never_a_float() -> None:
    body = stk_callback("ws_CO_1").replace(b'"Value": 10}', b'"Value": 1.10}')
    amount = parse_stk_callback_body(body).result.amount
    assert isinstance(amount, Decimal) and amount == Decimal("1.10")


def test_a_failure_keeps_the_code_as_a_string() -> None:
    result = parse_stk_callback_body(stk_callback("ws_CO_1", 1032)).result
    assert (result.result_code, result.receipt, result.amount) == ("1032", None, None)
    assert not result.is_success


@pytest.mark.parametrize(
    "body",
    [
        b"nope",
        b'{"Body": {"stkCallback": []}}',
    ],
)
def test_bodies_that_cannot_be_trusted_raise_invalid_callback(body: bytes) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_stk_callback_body(body)


def test_a_success_without_a_receipt_is_parsed_for_the_state_machine_to_judge() -> None:
    """The ledger keeps it as evidence (a query settles it) rather than refusing it raw."""
    result = parse_stk_callback_body(stk_callback("ws_CO_1", receipt=None)).result
    assert result.is_success and result.receipt is None
