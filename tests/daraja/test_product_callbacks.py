"""The business products' callbacks and codes, from the reference's literal payloads."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from pesa import InvalidCallbackError
from pesa.daraja import (
    BILL_MANAGER_ACCEPTED,
    lookup_code,
    parse_b2b_express_callback,
    parse_bill_payment,
    parse_ratiba_callback,
    parse_result,
)

EXPRESS_OK = {  # REFERENCE 8.8
    "resultCode": "0",
    "resultDesc": "The service request is processed successfully.",
    "amount": "71.0",
    "requestId": "404e1aec-19e0-4ce3-973d-bd92e94c8021",
    "resultType": "0",
    "conversationID": "AG_20230426_2010434680d9f5a73766",
    "transactionId": "RDQ01NFT1Q",
    "status": "SUCCESS",
}
EXPRESS_CANCELLED = {
    "resultCode": "4001",
    "resultDesc": "User cancelled transaction",
    "requestId": "c2a9ba32-9e11-4b90-892c-7bc54944609a",
    "amount": "71.0",
    "paymentReference": "MAndbubry3hi",
}


def test_express_checkout_callback_success_and_cancel() -> None:
    paid = parse_b2b_express_callback(json.dumps(EXPRESS_OK))
    assert paid.succeeded and paid.amount == Decimal("71.0")
    assert paid.transaction_id == "RDQ01NFT1Q" and paid.request_id == EXPRESS_OK["requestId"]
    assert paid.code.success
    cancelled = parse_b2b_express_callback(EXPRESS_CANCELLED)
    assert not cancelled.succeeded and cancelled.result_code == "4001"
    assert cancelled.code.final and cancelled.code.meaning.startswith("cancelled")


@pytest.mark.parametrize(
    "body",
    [
        {"resultDesc": "x", "requestId": "r"},  # no resultCode
        {"resultCode": "0"},  # no requestId
        {**EXPRESS_OK, "transactionId": "not a receipt!"},
        {**EXPRESS_OK, "amount": "lots"},
    ],
)
def test_express_checkout_callback_that_is_not_daraja_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_b2b_express_callback(body)


RATIBA_PASCAL = {  # REFERENCE 9: header + ResponseBody.ResponseData {Name, Value}
    "ResponseHeader": {
        "responseRefID": "0acc3200-3ccf-4a0a-a4b4-b9a4d4df7d2d",
        "responseCode": "0",
        "responseDescription": "The service request is processed successfully",
        "ResultDesc": "The service request is processed successfully",
    },
    "ResponseBody": {
        "ResponseData": [
            {"Name": "TransactionID", "Value": "SC8F2IQMH5"},
            {"Name": "responseCode", "Value": "0"},
            {"Name": "Status", "Value": "OKAY"},
            {"Name": "Msisdn", "Value": "254******867"},
        ]
    },
}
RATIBA_CAMEL = {
    "responseHeader": {"responseRefID": "r2", "responseCode": "1037", "resultDesc": "No response"},
    "responseBody": {
        "responseData": [
            {"name": "TransactionID", "value": ""},
            {"name": "responseCode", "value": "1037"},
            {"name": "Status", "value": "ERROR"},
            {"name": "Msisdn", "value": "254******867"},
        ]
    },
}


def test_ratiba_callback_in_either_casing() -> None:
    accepted = parse_ratiba_callback(RATIBA_PASCAL)
    assert accepted.succeeded and accepted.transaction_id == "SC8F2IQMH5"
    assert accepted.status == "OKAY" and accepted.msisdn == "254******867"
    unreachable = parse_ratiba_callback(json.dumps(RATIBA_CAMEL).encode())
    assert not unreachable.succeeded and unreachable.result_code == "1037"
    assert unreachable.code.final and unreachable.transaction_id is None
    assert unreachable.response_ref_id == "r2" and unreachable.result_desc == "No response"


def test_ratiba_3001_is_never_called_final() -> None:
    code = lookup_code("3001", "ratiba")
    assert not code.final and code.action == "verify"


@pytest.mark.parametrize(
    "body",
    [
        {"ResponseBody": {}},
        {"ResponseHeader": {}, "ResponseBody": {"ResponseData": [{"Value": "x"}]}},
        {"ResponseHeader": {}, "ResponseBody": {"ResponseData": "x"}},
    ],
)
def test_ratiba_callback_that_is_not_daraja_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(InvalidCallbackError):
        parse_ratiba_callback(body)


BILL_PAYMENT = {  # REFERENCE 9
    "transactionId": "RJB53MYR1N",
    "paidAmount": "5000",
    "msisdn": "254722000000",
    "dateCreated": "2021-09-15",
    "accountReference": "LGHJIO789",
    "shortCode": "718003",
}


def test_bill_manager_payment_and_its_reply() -> None:
    payment = parse_bill_payment(BILL_PAYMENT)
    assert payment.transaction_id == "RJB53MYR1N" and payment.paid_amount == 5000
    assert payment.account_reference == "LGHJIO789" and payment.short_code == "718003"
    assert payment.paid_at is not None and payment.paid_at.day == 15
    assert BILL_MANAGER_ACCEPTED == {"resmsg": "Success", "rescode": "200"}
    with pytest.raises(InvalidCallbackError):
        parse_bill_payment({**BILL_PAYMENT, "paidAmount": None})


def test_b2b_result_with_a_single_object_parameter_parses() -> None:
    # REFERENCE 8.3: a failure carries ResultParameter as one object.
    result = parse_result(
        {
            "Result": {
                "ResultType": 0,
                "ResultCode": 2001,
                "ResultDesc": "The initiator information is invalid.",
                "OriginatorConversationID": "12337-23509183-5",
                "ConversationID": "AG_20200120_0000657265d5fa9ae5c0",
                "TransactionID": "OAK0000000",
                "ResultParameters": {
                    "ResultParameter": {"Key": "BOCompletedTime", "Value": 20200120164825}
                },
                "ReferenceData": {
                    "ReferenceItem": [
                        {"Key": "BillReferenceNumber", "Value": "353353"},
                        {"Key": "Occassion"},
                    ]
                },
            }
        }
    )
    assert not result.succeeded and result.parameters == {"BOCompletedTime": 20200120164825}
    assert result.reference_data == {"BillReferenceNumber": "353353", "Occassion": None}


@pytest.mark.parametrize(
    ("code", "kind", "success", "final"),
    [
        ("0", "b2b_express", True, True),
        ("4001", "b2b_express", False, True),
        ("200", "bill_manager", True, True),
        ("409", "bill_manager", False, True),
        ("1000", "pull", True, True),
        ("1001", "pull", True, True),
        ("1032", "ratiba", False, True),
    ],
)
def test_the_catalogue_knows_the_new_codes(
    code: str, kind: Any, success: bool, final: bool
) -> None:
    entry = lookup_code(code, kind)
    assert entry.known and entry.success is success and entry.final is final


def test_the_testing_payload_builders_parse() -> None:
    from pesa.testing import (
        b2b_express_callback_payload,
        bill_payment_payload,
        ratiba_callback_payload,
    )

    assert parse_b2b_express_callback(b2b_express_callback_payload()).succeeded
    cancelled = parse_b2b_express_callback(b2b_express_callback_payload(result_code="4001"))
    assert cancelled.code.final and not cancelled.succeeded
    assert parse_ratiba_callback(ratiba_callback_payload(camel_case=True)).succeeded
    assert parse_ratiba_callback(ratiba_callback_payload(result_code="1037")).result_code == "1037"
    assert parse_bill_payment(bill_payment_payload()).paid_amount == 5000
