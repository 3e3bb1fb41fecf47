"""Property tests: phone formats agree, amounts never round, parsers fail only one way."""

from __future__ import annotations

import contextlib
import json
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pesa import InvalidCallbackError, ValidationError
from pesa.daraja import (
    normalize_msisdn,
    parse_c2b_payment,
    parse_result,
    parse_stk_callback,
    validate_amount,
)
from pesa.testing import stk_callback_payload

subscriber = st.from_regex(r"[17][0-9]{8}", fullmatch=True)


@given(subscriber, st.sampled_from(["0{}", "{}", "+254{}", "254{}", "+254 {}", "0{}-"]))
def test_every_format_of_one_number_normalises_to_the_same_msisdn(number: str, shape: str) -> None:
    text = shape.format(number).rstrip("-")
    assert normalize_msisdn(text) == "254" + number


@given(st.text(max_size=20))
def test_normalize_msisdn_returns_12_digits_or_raises_validation_error(text: str) -> None:
    try:
        result = normalize_msisdn(text)
    except ValidationError as err:
        assert err.field == "phone"
    else:
        assert len(result) == 12 and result.isdigit() and result[:4] in ("2547", "2541")


@given(st.decimals(allow_nan=True, allow_infinity=True, places=None))
def test_validate_amount_never_rounds(value: Decimal) -> None:
    try:
        result = validate_amount(value, minimum=1, maximum=250_000)
    except ValidationError:
        return
    assert Decimal(result) == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_parsers_raise_only_invalid_callback_on_garbage(value: Any) -> None:
    body = json.dumps(value)
    for parse in (parse_stk_callback, parse_result, parse_c2b_payment):
        with contextlib.suppress(InvalidCallbackError):
            parse(body)


@given(
    st.sampled_from(["Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber", "Balance"]),
    json_values,
)
def test_stk_callback_with_any_item_value_parses_or_is_invalid(name: str, value: Any) -> None:
    body = stk_callback_payload()
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == name:
            item["Value"] = value
    with contextlib.suppress(InvalidCallbackError):
        parse_stk_callback(json.dumps(body))
