"""Parsing what Daraja POSTs: STK callbacks, Result envelopes, C2B payloads and replies."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import pesa
from pesa import InvalidCallbackError, ValidationError
from pesa.daraja import (
    c2b_confirmation_reply,
    c2b_validation_reply,
    parse_account_balances,
    parse_c2b_payment,
    parse_result,
    parse_stk_callback,
)
from pesa.testing import (
    c2b_payment_payload,
    result_payload,
    stk_callback_payload,
    stk_failure_payload,
)

SUCCESS = (
    '{"Body": {"stkCallback": {"MerchantRequestID": "29115-34620561-1", '
    '"CheckoutRequestID": "ws_CO_191220191020363925", "ResultCode": 0, '
    '"ResultDesc": "The service request is processed successfully.", '
    '"CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 1.00}, '
    '{"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"}, {"Name": "Balance"}, '
    '{"Name": "TransactionDate", "Value": 20191219102115}, '
    '{"Name": "PhoneNumber", "Value": 254708374149}]}}}}'
)


def test_parses_the_reference_success_callback_literal() -> None:
    cb = pesa.parse_stk_callback(SUCCESS.encode())
    assert cb.succeeded
    assert cb.result_code == "0"
    assert cb.checkout_request_id == "ws_CO_191220191020363925"
    assert cb.merchant_request_id == "29115-34620561-1"
    assert cb.amount == Decimal("1.0")
    assert isinstance(cb.amount, Decimal)
    assert cb.receipt == "NLJ7RT61SV"
    assert cb.transaction_date == datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC)
    assert cb.phone == "254708374149"
    assert cb.balance is None
    assert cb.code.success


def test_parses_the_reference_failure_callback() -> None:
    cb = parse_stk_callback(json.dumps(stk_failure_payload()))
    assert not cb.succeeded
    assert cb.result_code == "1032"
    assert cb.amount is None and cb.receipt is None and cb.transaction_date is None
    assert cb.code.final
    assert cb.code.customer_message == "You cancelled the payment."


@pytest.mark.parametrize(
    ("amount", "date", "phone", "code"),
    [
        (1, "20191219102115", "254708374149", "0"),
        ("1.00", 20191219102115.0, 254708374149.0, 0.0),
        (Decimal("1"), 20191219102115, "2547****149", "0"),
    ],
)
def test_tolerates_type_drift(amount: Any, date: Any, phone: Any, code: Any) -> None:
    body = stk_callback_payload(amount=amount, transaction_date=date, phone=phone)
    body["Body"]["stkCallback"]["ResultCode"] = code
    cb = parse_stk_callback(body)
    assert cb.succeeded
    assert cb.amount == Decimal("1")
    assert cb.transaction_date == datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC)
    assert cb.phone is not None and cb.phone.startswith("2547")


def test_float_amount_keeps_its_decimal_value() -> None:
    cb = parse_stk_callback(stk_callback_payload(amount=10.1))
    assert cb.amount == Decimal("10.1")


def test_missing_phone_and_valued_balance() -> None:
    cb = parse_stk_callback(stk_callback_payload(phone=None, balance="{Amount={BasicAmount=5}}"))
    assert cb.phone is None
    assert cb.balance == "{Amount={BasicAmount=5}}"


def test_repr_masks_the_phone() -> None:
    assert "254708374149" not in repr(parse_stk_callback(SUCCESS))


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        "[]",
        "{}",
        {"Body": {}},
        {"Body": {"stkCallback": "x"}},
        {"Body": {"stkCallback": {"CheckoutRequestID": "ws", "ResultCode": 0}}},
        {"Body": {"stkCallback": {"MerchantRequestID": "m", "ResultCode": 0}}},
        {"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "ws"}}},
        {
            "Body": {
                "stkCallback": {
                    "MerchantRequestID": "m",
                    "CheckoutRequestID": "ws",
                    "ResultCode": True,
                }
            }
        },
    ],
)
def test_malformed_callbacks_raise_invalid_callback(body: Any) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_stk_callback(body)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("Amount", "ten"),
        ("TransactionDate", "yesterday"),
        ("MpesaReceiptNumber", 12),
        ("PhoneNumber", {"masked": True}),
    ],
)
def test_malformed_metadata_raises_invalid_callback(field: str, value: Any) -> None:
    body = stk_callback_payload()
    for item in body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == field:
            item["Value"] = value
    with pytest.raises(InvalidCallbackError):
        parse_stk_callback(body)


def test_metadata_item_without_name_is_malformed() -> None:
    body = stk_callback_payload()
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"].append({"Value": 1})
    with pytest.raises(InvalidCallbackError):
        parse_stk_callback(body)


def test_parse_result_with_lists() -> None:
    body = result_payload(
        parameters={
            "TransactionAmount": 10,
            "TransactionReceipt": "SG632NMUAB",
            "B2CRecipientIsRegisteredCustomer": "Y",
        }
    )
    result = parse_result(json.dumps(body))
    assert result.succeeded
    assert result.result_code == "0" and result.result_type == "0"
    assert result.parameters["TransactionReceipt"] == "SG632NMUAB"
    assert result.reference_data["QueueTimeoutURL"].startswith("https://")
    assert result.conversation_id == "AG_20240706_2010364430d9bbdaf872"


def test_parse_result_with_single_objects_and_valueless_items() -> None:
    body = result_payload(
        result_code=2001,
        result_desc="The initiator information is invalid.",
        parameters={"BOCompletedTime": 20200120164825},
        reference_data={"Occassion": None},
        single_objects=True,
    )
    result = parse_result(body)
    assert not result.succeeded
    assert result.result_code == "2001"
    assert result.parameters == {"BOCompletedTime": 20200120164825}
    assert result.reference_data == {"Occassion": None}
    assert result.code.meaning.startswith("initiator information invalid")


def test_parse_result_without_parameters() -> None:
    result = parse_result(result_payload(result_code="R000002", parameters=None))
    assert result.parameters == {}
    assert result.code.known


@pytest.mark.parametrize("body", ["nope", "{}", {"Result": {"ResultDesc": "x"}}, {"Result": 1}])
def test_parse_result_rejects_malformed(body: Any) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_result(body)


def test_account_balance_string_is_parsed_into_accounts() -> None:
    text = (
        "Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|KES|228037.00|"
        "228037.00|0.00|0.00&Charges Paid Account|KES|-1540.00|-1540.00|0.00|0.00"
    )
    result = parse_result(result_payload(parameters={"AccountBalance": text}))
    accounts = result.account_balances()
    assert [a.name for a in accounts] == [
        "Working Account",
        "Utility Account",
        "Charges Paid Account",
    ]
    assert accounts[1].available == Decimal("228037.00")
    assert accounts[2].available == Decimal("-1540.00")
    assert accounts[0].currency == "KES"
    assert accounts[0].unknown_columns == ("0.00",)


@pytest.mark.parametrize("text", ["Working Account|KES", "Working|KES|lots"])
def test_bad_balance_strings_are_refused(text: str) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_account_balances(text)


def test_c2b_payment_payload_is_parsed() -> None:
    payment = parse_c2b_payment(json.dumps(c2b_payment_payload()).encode())
    assert payment.trans_id == "RKL51ZDR4F"
    assert payment.trans_amount == Decimal("5.00")
    assert payment.org_account_balance == Decimal("25.00")
    assert payment.business_short_code == "600966"
    assert payment.trans_time == datetime(2023, 11, 21, 9, 13, 25, tzinfo=UTC)
    assert payment.msisdn == "2547 ***** 126"


def test_c2b_validation_payload_with_empty_balance() -> None:
    payment = parse_c2b_payment(c2b_payment_payload(org_account_balance=""))
    assert payment.org_account_balance is None


@pytest.mark.parametrize("missing", ["TransID", "TransAmount", "TransTime", "BusinessShortCode"])
def test_c2b_payment_missing_fields(missing: str) -> None:
    body = c2b_payment_payload()
    del body[missing]
    with pytest.raises(InvalidCallbackError):
        parse_c2b_payment(body)


def test_c2b_replies() -> None:
    assert c2b_validation_reply() == {"ResultCode": "0", "ResultDesc": "Accepted"}
    assert c2b_validation_reply(third_party_trans_id="ref-1")["ThirdPartyTransID"] == "ref-1"
    assert c2b_validation_reply("C2B00012") == {"ResultCode": "C2B00012", "ResultDesc": "Rejected"}
    assert c2b_confirmation_reply() == {"ResultCode": 0, "ResultDesc": "Success"}
    with pytest.raises(ValidationError):
        c2b_validation_reply("C2B00099")  # type: ignore[arg-type]


def _stk(**changes: Any) -> dict[str, Any]:
    body = stk_callback_payload()
    callback = body["Body"]["stkCallback"]
    items = {item["Name"]: item for item in callback["CallbackMetadata"]["Item"]}
    for key, value in changes.items():
        if key in items:
            items[key]["Value"] = value
        else:
            callback[key] = value
    return body


@pytest.mark.parametrize(
    ("body", "rule"),
    [
        pytest.param(b"[" * 30_000 + b"]" * 30_000, "nested", id="30k-deep-json"),
        pytest.param(
            '{"Body": {"stkCallback": {"x": ' + "[" * 20 + "]" * 20 + "}}}",
            "nested",
            id="deep-inside-a-callback",
        ),
        pytest.param(_stk(CheckoutRequestID="ws_CO_" + "9" * 200), "longer", id="long-id"),
        pytest.param(_stk(CheckoutRequestID="ws_CO_\x001"), "printable", id="nul-in-id"),
        pytest.param(_stk(MerchantRequestID="29115-\ud800"), "printable", id="surrogate-id"),
        pytest.param(_stk(PhoneNumber=int("2547" + "0" * 100)), "15", id="104-digit-phone"),
        pytest.param(_stk(PhoneNumber="2547" + "0" * 100), "15", id="104-digit-phone-text"),
        pytest.param(_stk(PhoneNumber="٢٥٤٧٠٨٣٧٤١٤٩"), "ASCII", id="arabic-indic-phone"),
        pytest.param(_stk(PhoneNumber=1e104), "15", id="float-phone"),
        pytest.param(_stk(Amount=1e20), "between", id="amount-1e20"),
        pytest.param(_stk(Amount=-5), "between", id="negative-amount"),
        pytest.param(_stk(Amount="10.005"), "2 decimal", id="three-decimals"),
        pytest.param(_stk(Amount="1" * 500), "40 characters", id="500-digit-amount"),
        pytest.param(_stk(MpesaReceiptNumber="N" * 10_000), "longer", id="10k-receipt"),
        pytest.param(_stk(MpesaReceiptNumber="N" * 33), "32", id="33-character-receipt"),
        pytest.param(_stk(MpesaReceiptNumber="NLJ7 RT61"), "letters", id="receipt-with-space"),
        pytest.param(_stk(ResultCode="1" * 40), "longer", id="40-character-code"),
        pytest.param(_stk(ResultCode=10**40), "32 digits", id="huge-numeric-code"),
        pytest.param(_stk(ResultDesc="x" * 5000), "longer", id="5000-character-desc"),
        pytest.param(_stk(ResultDesc="ok\x00"), "NUL", id="nul-in-desc"),
    ],
)
def test_stk_callback_bounds(body: Any, rule: str) -> None:
    """Issue 8 finding 7: lengths, depth and ranges are bounded in the wire parser."""
    with pytest.raises(InvalidCallbackError, match=rule):
        parse_stk_callback(body if isinstance(body, bytes | str) else json.dumps(body))


def test_stk_callback_bounds_keep_real_values() -> None:
    masked = parse_stk_callback(_stk(PhoneNumber="2547 ***** 149", Amount="1.50"))
    assert masked.phone == "2547 ***** 149"
    assert masked.amount == Decimal("1.50")
    biggest = parse_stk_callback(_stk(Amount="999999999999.99", PhoneNumber=254708374149))
    assert biggest.amount == Decimal("999999999999.99")


@pytest.mark.parametrize(
    "changes",
    [
        {"ConversationID": "AG_" + "1" * 200},
        {"OriginatorConversationID": "a\x00b"},
        {"TransactionID": {"nested": "object"}},
        {"ResultParameters": {"ResultParameter": [{"Key": "k", "Value": 1}] * 65}},
        {"ResultParameters": {"ResultParameter": [{"Key": "k" * 200, "Value": 1}]}},
    ],
    ids=["long-conversation-id", "nul-originator-id", "object-id", "65-items", "long-key"],
)
def test_result_bounds(changes: dict[str, Any]) -> None:
    body = result_payload()
    body["Result"].update(changes)
    with pytest.raises(InvalidCallbackError):
        parse_result(body)


@pytest.mark.parametrize(
    "changes",
    [
        {"TransID": "R" * 100},
        {"TransAmount": "1e20"},
        {"MSISDN": "2547" + "0" * 100},
        {"BillRefNumber": "x" * 2000},
        {"FirstName": "J\x00"},
    ],
    ids=["long-trans-id", "amount-1e20", "long-msisdn", "long-bill-ref", "nul-name"],
)
def test_c2b_bounds(changes: dict[str, Any]) -> None:
    body = c2b_payment_payload()
    body.update(changes)
    with pytest.raises(InvalidCallbackError):
        parse_c2b_payment(body)
