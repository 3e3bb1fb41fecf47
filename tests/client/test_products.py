"""Both clients against a fake Daraja answering the reference's literal payloads: the business
products' request bodies, typed answers, validation and money-safe retries."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from pesa import BadRequestError, OutcomeUnknownError, ServerError, ValidationError
from pesa.daraja import (
    BillManagerOptInResponse,
    InitiatorResponse,
    Invoice,
    PullQueryResponse,
    QRCodeResponse,
    StandingOrderResponse,
    parse_bill_payment,
)

from .conftest import INITIATOR_ACK, Face, error_body

POCHI = "/mpesa/b2pochi/v1/paymentrequest"
B2B = "/mpesa/b2b/v1/paymentrequest"
TAX = "/mpesa/b2b/v1/remittax"
EXPRESS = "/v1/ussdpush/get-msisdn"
PULL_REGISTER = "/pulltransactions/v1/register"
PULL_QUERY = "/pulltransactions/v1/query"
QR = "/mpesa/qrcode/v1/generate"
RATIBA = "/standingorder/v1/createStandingOrderExternal"
BILL = "/v1/billmanager-invoice"

# A real 1x1 PNG, as Daraja's QRCode would carry (base64).
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
        "3a7e9b550000000a4944415478da6360000000020001e221bc330000000049454e44ae426082"
    )
).decode()


def _ok(payload: Any) -> httpx.Response:
    return httpx.Response(200, json=payload)


# -- Business to Pochi ------------------------------------------------------------------------


async def test_b2pochi_sends_b2c_v3s_body_with_the_pochi_command(face: Face) -> None:
    face.fake.routes[POCHI] = _ok(INITIATOR_ACK)
    ack = await face(
        "b2pochi_payment",
        "0708374149",
        10,
        "Stock",
        originator_conversation_id="pochi-42",
        occasion="optional",
        shortcode=600997,
    )
    assert isinstance(ack, InitiatorResponse) and ack.conversation_id
    (body,) = face.fake.bodies(POCHI)
    assert body == {
        "OriginatorConversationID": "pochi-42",
        "InitiatorName": "testapi",
        "SecurityCredential": "precomputed-credential-xyz",
        "CommandID": "BusinessPayToPochi",
        "Amount": 10,
        "PartyA": "600997",
        "PartyB": "254708374149",
        "Remarks": "Stock",
        "QueueTimeOutURL": "https://example.com/timeout",
        "ResultURL": "https://example.com/result",
        "Occassion": "optional",
    }


async def test_b2pochi_below_the_b2c_minimum_is_refused_before_sending(face: Face) -> None:
    with pytest.raises(ValidationError) as info:
        await face("b2pochi_payment", "0708374149", 9, "Stock")
    assert info.value.field == "amount" and face.fake.calls == []


async def test_b2pochi_read_timeout_is_outcome_unknown_and_never_resent(face: Face) -> None:
    face.fake.routes[POCHI] = httpx.ReadTimeout("read timed out")
    with pytest.raises(OutcomeUnknownError) as info:
        await face("b2pochi_payment", "0708374149", 10, "Stock", originator_conversation_id="p1")
    assert info.value.operation == "b2pochi_payment"
    assert len(face.fake.paths(POCHI)) == 1


# -- B2B and tax -------------------------------------------------------------------------------


async def test_b2b_pay_bill_body_has_dajaras_spellings(face: Face) -> None:
    face.fake.routes[B2B] = _ok(INITIATOR_ACK)
    await face(
        "b2b_pay_bill",
        600000,
        239,
        "353353",
        requester="0700000000",
        remarks="OK",
        shortcode=600999,
    )
    (body,) = face.fake.bodies(B2B)
    assert body == {  # REFERENCE 8.3's sample, field for field
        "Initiator": "testapi",
        "SecurityCredential": "precomputed-credential-xyz",
        "CommandID": "BusinessPayBill",
        "SenderIdentifierType": "4",
        "RecieverIdentifierType": "4",
        "Amount": 239,
        "PartyA": "600999",
        "PartyB": "600000",
        "AccountReference": "353353",
        "Requester": "254700000000",
        "Remarks": "OK",
        "QueueTimeOutURL": "https://example.com/timeout",
        "ResultURL": "https://example.com/result",
    }


async def test_b2b_buy_goods_and_top_up_use_their_command_ids(face: Face) -> None:
    face.fake.routes[B2B] = _ok(INITIATOR_ACK)
    await face("b2b_buy_goods", 5123456, 1200, shortcode=600999)
    await face("b2c_top_up", 600997, 100_000, account_reference="TOPUP", shortcode=600999)
    goods, top_up = face.fake.bodies(B2B)
    assert goods["CommandID"] == "BusinessBuyGoods" and goods["PartyB"] == "5123456"
    assert "AccountReference" not in goods
    assert top_up["CommandID"] == "BusinessPayToBulk" and top_up["PartyB"] == "600997"


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((600000, 239, ""), {}, "account_reference"),
        ((600000, 239, "A" * 14), {}, "account_reference"),
        ((60, 239, "REF"), {}, "paybill"),
        ((600000, 250_001, "REF"), {}, "amount"),
        ((600000, 239, "REF"), {"requester": "12345"}, "requester"),
        ((600000, 239, "REF"), {"remarks": "x"}, "remarks"),
    ],
)
async def test_b2b_bad_input_is_refused_before_sending(
    face: Face, args: tuple[Any, ...], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await face("b2b_pay_bill", *args, **kwargs)
    assert info.value.field == field and face.fake.calls == []


async def test_b2b_amount_limits_are_configurable(face: Face) -> None:
    face.fake.routes[B2B] = _ok(INITIATOR_ACK)
    client = face.make(b2b_amount_limits=(1, 5_000_000))
    await face("b2b_pay_bill", 600000, 1_000_000, "INV1", client=client)
    assert face.fake.bodies(B2B)[0]["Amount"] == 1_000_000


async def test_b2b_server_error_is_raised_not_resent(face: Face) -> None:
    face.fake.routes[B2B] = httpx.Response(
        500, json=error_body("500.003.1001", "Internal Server Error")
    )
    with pytest.raises(ServerError):
        await face("b2b_pay_bill", 600000, 239, "353353")
    assert len(face.fake.paths(B2B)) == 1


async def test_b2b_connect_error_never_left_so_it_is_retried(face: Face) -> None:
    face.fake.routes[B2B] = [httpx.ConnectError("refused"), _ok(INITIATOR_ACK)]
    ack = await face("b2b_pay_bill", 600000, 239, "353353")
    assert ack.response_code == "0" and len(face.fake.paths(B2B)) == 2


async def test_remit_tax_pays_kra_with_the_prn(face: Face) -> None:
    face.fake.routes[TAX] = _ok(INITIATOR_ACK)
    await face("remit_tax", 12_000, "2020123456789", shortcode=600999)
    (body,) = face.fake.bodies(TAX)
    assert body["CommandID"] == "PayTaxToKRA" and body["PartyB"] == "572572"
    assert body["AccountReference"] == "2020123456789"
    assert body["SenderIdentifierType"] == body["RecieverIdentifierType"] == "4"


async def test_remit_tax_lost_answer_is_outcome_unknown(face: Face) -> None:
    face.fake.routes[TAX] = httpx.Response(200, content=b"<html>gateway</html>")
    with pytest.raises(OutcomeUnknownError):
        await face("remit_tax", 12_000, "2020123456789")
    assert len(face.fake.paths(TAX)) == 1


# -- B2B Express Checkout -----------------------------------------------------------------


async def test_express_checkout_lower_camel_body_and_the_ref_on_the_answer(face: Face) -> None:
    face.fake.routes[EXPRESS] = _ok({"code": "0", "status": "USSD Initiated Successfully"})
    answer = await face(
        "b2b_express_checkout",
        5123456,
        71,
        "INV-71",
        "Acme Supplies",
        request_ref_id="ref-1",
        receiver_shortcode=600000,
        callback_url="https://example.com/express",
    )
    assert answer.request_ref_id == "ref-1" and answer.status == "USSD Initiated Successfully"
    (body,) = face.fake.bodies(EXPRESS)
    assert body == {
        "primaryShortCode": "5123456",
        "receiverShortCode": "600000",
        "amount": 71,
        "paymentRef": "INV-71",
        "callbackUrl": "https://example.com/express",
        "partnerName": "Acme Supplies",
        "RequestRefID": "ref-1",
    }


async def test_express_checkout_generates_a_request_ref_and_refuses_a_failure_code(
    face: Face,
) -> None:
    face.fake.routes[EXPRESS] = [
        _ok({"code": "0", "status": "USSD Initiated Successfully"}),
        _ok({"code": "1", "status": "Merchant not found"}),
    ]
    first = await face("b2b_express_checkout", 5123456, 71, "INV", "Acme")
    assert (
        first.request_ref_id
        and first.request_ref_id == face.fake.bodies(EXPRESS)[0]["RequestRefID"]
    )
    with pytest.raises(BadRequestError, match="Merchant not found"):
        await face("b2b_express_checkout", 5123456, 71, "INV", "Acme")


# -- Pull Transactions --------------------------------------------------------------------


async def test_pull_register_both_statuses_succeed(face: Face) -> None:
    face.fake.routes[PULL_REGISTER] = [
        _ok(
            {
                "ResponseRefID": "1b5f-4e1e",
                "ResponseStatus": "1000",
                "ShortCode": "600000",
                "ResponseDescription": "Shortcode registered successfully",
            }
        ),
        _ok({"ResponseRefID": "x", "ResponseStatus": "1001", "ShortCode": 600000}),
    ]
    first = await face("pull_register", "0708374149", "https://example.com/pull", shortcode=600000)
    second = await face("pull_register", "0708374149", "https://example.com/pull", shortcode=600000)
    assert not first.already_registered and second.already_registered
    assert second.short_code == "600000"
    assert face.fake.bodies(PULL_REGISTER)[0] == {
        "ShortCode": "600000",
        "RequestType": "Pull",
        "NominatedNumber": "254708374149",
        "CallBackURL": "https://example.com/pull",
    }


PULL_PAGE = {
    "ResponseRefID": "4c1e-9b2f",
    "ResponseCode": "1000",
    "ResponseMessage": "Success",
    "Response": [
        [
            {
                "transactionId": "SG632NMUAB",
                "trxDate": "2016-02-16T15:10:00.000+03:00",
                "msisdn": 254708374149,
                "sender": "JOHN DOE",
                "transactiontype": "c2b-pay-bill-debit",
                "billreference": "INV-1",
                "amount": "150.0",
                "organizationname": "Test Org",
            },
            {
                "transactionId": "SG632NMUAC",
                "trxDate": "2016-02-16T15:20:00",
                "msisdn": "2547****149",
                "billreference": None,
                "amount": 20,
            },
        ]
    ],
}


async def test_pull_query_flattens_the_nested_list_and_sends_nairobi_dates(face: Face) -> None:
    face.fake.routes[PULL_QUERY] = _ok(PULL_PAGE)
    start = datetime(2016, 2, 16, 12, 0, tzinfo=UTC)  # 15:00 in Nairobi
    page = await face("pull_query", start, offset=2, shortcode=600000)
    assert isinstance(page, PullQueryResponse) and page.found
    first, second = page.transactions
    assert first.transaction_id == "SG632NMUAB" and first.amount == Decimal("150.0")
    assert first.msisdn == "254708374149" and first.bill_reference == "INV-1"
    assert first.trx_date == datetime(2016, 2, 16, 12, 10, tzinfo=UTC)
    assert second.trx_date is not None and second.trx_date.utcoffset() == timedelta(hours=3)
    assert second.bill_reference == "" and second.amount == 20
    (sent,) = face.fake.paths(PULL_QUERY)
    assert sent.method == "POST"
    assert json.loads(sent.content) == {
        "ShortCode": "600000",
        "StartDate": "2016-02-16 15:00:00",
        "EndDate": "2016-02-16 16:56:27",  # the frozen clock, in Nairobi time
        "OffSetValue": "2",
    }


async def test_pull_query_none_found_is_an_empty_page(face: Face) -> None:
    face.fake.routes[PULL_QUERY] = _ok(
        {
            "ResponseRefID": "x",
            "ResponseCode": "1001",
            "ResponseMessage": "No records found or Organization Name not available",
        }
    )
    page = await face("pull_query", datetime(2016, 2, 16, 12, 0, tzinfo=UTC))
    assert page.transactions == [] and not page.found


async def test_pull_query_method_is_configurable(face: Face) -> None:
    face.fake.routes[PULL_QUERY] = _ok(PULL_PAGE)
    client = face.make(pull_transactions_method="GET")
    await face("pull_query", datetime(2016, 2, 16, 12, 0, tzinfo=UTC), client=client)
    assert face.fake.paths(PULL_QUERY)[0].method == "GET"


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        (datetime(2016, 2, 14, 12, 0, tzinfo=UTC), None, "start"),  # beyond 48 hours
        (
            datetime(2016, 2, 16, 12, 0, tzinfo=UTC),
            datetime(2016, 2, 16, 11, 0, tzinfo=UTC),
            "end",
        ),
        ("2016-02-16", None, "start"),
    ],
)
async def test_pull_query_window_rules(face: Face, start: Any, end: Any, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        await face("pull_query", start, end)
    assert info.value.field == field and face.fake.calls == []


# -- Dynamic QR -----------------------------------------------------------------------------


async def test_qr_code_answer_00_is_success_and_decodes_the_image(face: Face) -> None:
    face.fake.routes[QR] = _ok(
        {
            "ResponseCode": "00",
            "RequestID": "16738-27456357-1",
            "ResponseDescription": "The service request is processed successfully.",
            "QRCode": PNG_1X1,
        }
    )
    answer = await face("qr_code", "TEST SUPERMARKET", "Invoice Test", 1, "BG", 373132)
    assert isinstance(answer, QRCodeResponse) and answer.is_png
    assert answer.image == base64.b64decode(PNG_1X1)
    assert face.fake.bodies(QR)[0] == {
        "MerchantName": "TEST SUPERMARKET",
        "RefNo": "Invoice Test",
        "Amount": 1,
        "TrxCode": "BG",
        "CPI": "373132",
        "Size": "300",
    }


async def test_qr_code_that_is_not_base64_is_an_unreadable_answer(face: Face) -> None:
    face.fake.routes[QR] = _ok({"ResponseCode": "00", "QRCode": "not base64!"})
    with pytest.raises(Exception, match="unexpected answer shape"):
        await face("qr_code", "M", "R", 1, "BG", 373132)
    assert len(face.fake.paths(QR)) == 3  # not money: an unreadable answer is asked again


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        (("M", "R", 1, "XX", 373132), {}, "trx_code"),
        (("M", "R", 1, "SM", 373132), {}, "cpi"),
        (("M", "R", 1, "BG", "0708374149"), {}, "cpi"),
        (("M", "R", 1, "BG", 373132), {"size": 0}, "size"),
        (("", "R", 1, "BG", 373132), {}, "merchant_name"),
    ],
)
async def test_qr_code_bad_input(
    face: Face, args: tuple[Any, ...], kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await face("qr_code", *args, **kwargs)
    assert info.value.field == field and face.fake.calls == []


# -- M-Pesa Ratiba ------------------------------------------------------------------------

RATIBA_ACK = {
    "ResponseHeader": {
        "responseRefID": "4dd9b5d9-d738-42ba-9326-2cc99e966000",
        "responseCode": "200",
        "responseDescription": "Request accepted for processing",
        "ResultDesc": "The service request is processed successfully.",
    },
    "ResponseBody": {
        "responseDescription": "Request accepted for processing",
        "responseCode": "200",
    },
}


async def test_ratiba_body_and_its_acknowledgement_in_either_casing(face: Face) -> None:
    camel = {
        "responseHeader": {"responseRefID": "r2", "responseCode": "200"},
        "responseBody": {},
    }
    face.fake.routes[RATIBA] = [_ok(RATIBA_ACK), _ok(camel)]
    kwargs = {
        "frequency": "daily",
        "start_date": date(2024, 9, 5),
        "end_date": date(2025, 9, 5),
        "description": "Electric Bike",
    }
    first = await face("ratiba_create", "Rent", "0708374149", 4500, "Test", **kwargs)
    second = await face("ratiba_create", "Rent 2", "0708374149", 4500, "Test", **kwargs)
    assert isinstance(first, StandingOrderResponse)
    assert first.response_code == "200" and second.response_header.response_ref_id == "r2"
    assert face.fake.bodies(RATIBA)[0] == {  # REFERENCE 9's sample
        "StandingOrderName": "Rent",
        "StartDate": "20240905",
        "EndDate": "20250905",
        "BusinessShortCode": "174379",
        "TransactionType": "Standing Order Customer Pay Bill",
        "ReceiverPartyIdentifierType": "4",
        "Amount": "4500",
        "PartyA": "254708374149",
        "CallBackURL": "https://example.com/stk/cb",
        "AccountReference": "Test",
        "TransactionDesc": "Electric Bike",
        "Frequency": "2",
    }


async def test_ratiba_till_spelling_is_configurable(face: Face) -> None:
    face.fake.routes[RATIBA] = _ok(RATIBA_ACK)
    kwargs = {"frequency": 4, "start_date": date(2024, 9, 5), "end_date": date(2025, 9, 5)}
    await face("ratiba_create", "A", "0708374149", 10, "T", till=5123456, **kwargs)
    other = face.make(ratiba_till_transaction_type="Standing Order Customer Pay Merchant")
    await face("ratiba_create", "B", "0708374149", 10, "T", till=5123456, client=other, **kwargs)
    docs, sdk = face.fake.bodies(RATIBA)
    assert docs["TransactionType"] == "Standing Order Customer Pay Marchant"
    assert sdk["TransactionType"] == "Standing Order Customer Pay Merchant"
    assert docs["ReceiverPartyIdentifierType"] == "2" and docs["BusinessShortCode"] == "5123456"


async def test_ratiba_refusal_in_its_own_envelope_is_a_bad_request(face: Face) -> None:
    face.fake.routes[RATIBA] = httpx.Response(
        400,
        json={
            "requestRefId": "0f5c-41a8",
            "responseMessage": "Bad Request - Invalid AccountReference",
            "responseCode": 400,
            "timestamp": "2024-09-05T10:00:00.000+03:00",
        },
    )
    kwargs = {"frequency": 2, "start_date": date(2024, 9, 5), "end_date": date(2025, 9, 5)}
    with pytest.raises(BadRequestError) as info:
        await face("ratiba_create", "A", "0708374149", 10, "T", **kwargs)
    assert info.value.error_code == "400" and info.value.request_id == "0f5c-41a8"
    assert "AccountReference" in info.value.error_message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"frequency": 9}, "frequency"),
        ({"frequency": "fortnightly"}, "frequency"),
        ({"end_date": date(2024, 1, 1)}, "end_date"),
        ({"account_reference": "A" * 13}, "account_reference"),
        ({"description": "D" * 14}, "description"),
    ],
)
async def test_ratiba_bad_input(face: Face, change: dict[str, Any], field: str) -> None:
    kwargs: dict[str, Any] = {
        "name": "Rent",
        "phone": "0708374149",
        "amount": 4500,
        "account_reference": "Test",
        "frequency": 2,
        "start_date": date(2024, 9, 5),
        "end_date": date(2025, 9, 5),
    }
    kwargs.update(change)
    with pytest.raises(ValidationError) as info:
        await face("ratiba_create", **kwargs)
    assert info.value.field == field and face.fake.calls == []


# -- Bill Manager -----------------------------------------------------------------------------


def _invoice(ref: str = "INV-42", amount: Any = 800) -> Invoice:
    return Invoice(
        ref,
        "John Doe",
        "0708374149",
        amount,
        "ACC42",
        "Jentrys",
        "August 2021",
        date(2021, 10, 12),
        items=[("food", amount)],
    )


async def test_bill_manager_opt_in_and_invoices(face: Face) -> None:
    face.fake.routes[f"{BILL}/optin"] = _ok(
        {"app_key": "AG_2376487236_126732989KJ", "resmsg": "Success", "rescode": "200"}
    )
    face.fake.routes[f"{BILL}/single-invoicing"] = _ok(
        {"Status_Message": "Invoice sent successfully", "resmsg": "Success", "rescode": "200"}
    )
    face.fake.routes[f"{BILL}/bulk-invoicing"] = _ok(
        {"Status_Message": "Invoice sent successfully", "resmsg": "Success", "rescode": "200"}
    )
    joined = await face(
        "bill_manager_opt_in", "billing@example.com", "0708374149", "https://example.com/bills"
    )
    assert isinstance(joined, BillManagerOptInResponse)
    assert joined.app_key == "AG_2376487236_126732989KJ" and "AG_" not in repr(joined)
    await face("bill_manager_invoice", _invoice())
    await face("bill_manager_bulk_invoice", [_invoice("INV-1"), _invoice("INV-2")])
    assert face.fake.bodies(f"{BILL}/optin")[0] == {
        "shortcode": "174379",
        "email": "billing@example.com",
        "officialContact": "254708374149",
        "sendReminders": 1,
        "callbackurl": "https://example.com/bills",
    }
    single = face.fake.bodies(f"{BILL}/single-invoicing")[0]
    assert single == {
        "externalReference": "INV-42",
        "billedFullName": "John Doe",
        "billedPhoneNumber": "254708374149",
        "billedPeriod": "August 2021",
        "invoiceName": "Jentrys",
        "dueDate": "2021-10-12",
        "accountReference": "ACC42",
        "amount": 800,
        "invoiceItems": [{"itemName": "food", "amount": 800}],
    }
    bulk = face.fake.bodies(f"{BILL}/bulk-invoicing")[0]
    assert isinstance(bulk, list) and [i["externalReference"] for i in bulk] == ["INV-1", "INV-2"]


async def test_bill_manager_bulk_names_the_bad_invoice(face: Face) -> None:
    with pytest.raises(ValidationError) as info:
        await face("bill_manager_bulk_invoice", [_invoice("A"), _invoice("B", amount=1.5)])
    assert info.value.field == "invoices.1.amount" and face.fake.calls == []
    with pytest.raises(ValidationError) as dup:
        await face("bill_manager_bulk_invoice", [_invoice("A"), _invoice("A")])
    assert dup.value.field == "invoices.1.external_reference"
    with pytest.raises(ValidationError):
        await face("bill_manager_bulk_invoice", [])


async def test_bill_manager_cancel_paid_invoice_is_409(face: Face) -> None:
    face.fake.routes[f"{BILL}/cancel-single-invoice"] = _ok(
        {"resmsg": "Invoice already paid", "rescode": "409"}
    )
    with pytest.raises(BadRequestError) as info:
        await face("bill_manager_cancel_invoice", "INV-42")
    assert info.value.error_code == "409"
    assert face.fake.bodies(f"{BILL}/cancel-single-invoice") == [{"externalReference": "INV-42"}]


async def test_bill_manager_cancel_several_sends_an_array(face: Face) -> None:
    face.fake.routes[f"{BILL}/cancel-bulk-invoices"] = _ok({"resmsg": "Success", "rescode": "200"})
    await face("bill_manager_cancel_invoices", ["INV-1", "INV-2"])
    assert face.fake.bodies(f"{BILL}/cancel-bulk-invoices") == [
        [{"externalReference": "INV-1"}, {"externalReference": "INV-2"}]
    ]


async def test_bill_manager_reconcile_from_the_payment_notification(face: Face) -> None:
    face.fake.routes[f"{BILL}/reconciliation"] = _ok({"resmsg": "Success", "rescode": "200"})
    payment = parse_bill_payment(
        {
            "transactionId": "RJB53MYR1N",
            "paidAmount": "800.00",
            "msisdn": "254708374149",
            "dateCreated": "2021-10-01 10:20:00",
            "accountReference": "ACC42",
            "shortCode": "174379",
        }
    )
    await face(
        "bill_manager_reconcile",
        payment,
        external_reference="INV-42",
        full_name="John Doe",
        invoice_name="Jentrys",
    )
    assert face.fake.bodies(f"{BILL}/reconciliation")[0] == {
        "paymentDate": "2021-10-01",
        "paidAmount": 800,
        "accountReference": "ACC42",
        "transactionId": "RJB53MYR1N",
        "phoneNumber": "254708374149",
        "fullName": "John Doe",
        "invoiceName": "Jentrys",
        "externalReference": "INV-42",
    }


async def test_bill_manager_error_envelope_and_bad_email(face: Face) -> None:
    face.fake.routes[f"{BILL}/optin"] = httpx.Response(
        400, json={"resmsg": "Invalid shortcode", "rescode": "400"}
    )
    with pytest.raises(BadRequestError) as info:
        await face("bill_manager_opt_in", "a@b.co", "0708374149", "https://example.com/b")
    assert info.value.error_code == "400" and info.value.error_message == "Invalid shortcode"
    with pytest.raises(ValidationError) as bad:
        await face("bill_manager_opt_in", "not-an-email", "0708374149", "https://example.com/b")
    assert bad.value.field == "email"


async def test_bill_manager_bulk_error_carries_the_array_it_sent(face: Face) -> None:
    face.fake.routes[f"{BILL}/bulk-invoicing"] = httpx.Response(
        400, json={"resmsg": "Invalid dueDate", "rescode": "400"}
    )
    with pytest.raises(BadRequestError) as info:
        await face("bill_manager_bulk_invoice", [_invoice("INV-1"), _invoice("INV-2")])
    sent = info.value.request
    assert sent is not None and isinstance(sent.body, list)
    assert [item["externalReference"] for item in sent.body] == ["INV-1", "INV-2"]


def _page(*ids: str) -> httpx.Response:
    rows = [{"transactionId": i, "amount": "10.0", "trxDate": "2016-02-16T15:10:00"} for i in ids]
    if not rows:
        return _ok({"ResponseCode": "1001", "ResponseMessage": "No records found"})
    return _ok({"ResponseCode": "1000", "Response": [rows]})


async def test_pull_transactions_reads_every_page_once_with_one_end(face: Face) -> None:
    face.fake.routes[PULL_QUERY] = [
        _page("SG1AAAAAAA", "SG2AAAAAAA"),
        _page("SG2AAAAAAA", "SG3AAAAAAA"),  # an overlap is returned once
        _page(),
    ]
    found = await face("pull_transactions", datetime(2016, 2, 16, 12, 0, tzinfo=UTC))
    assert [t.transaction_id for t in found] == ["SG1AAAAAAA", "SG2AAAAAAA", "SG3AAAAAAA"]
    bodies = face.fake.bodies(PULL_QUERY)
    assert [b["OffSetValue"] for b in bodies] == ["0", "2", "4"]
    assert len({b["EndDate"] for b in bodies}) == 1


async def test_pull_transactions_stops_when_the_server_ignores_the_offset(face: Face) -> None:
    face.fake.routes[PULL_QUERY] = [_page("SG1AAAAAAA")]  # the same page, forever
    found = await face("pull_transactions", datetime(2016, 2, 16, 12, 0, tzinfo=UTC))
    assert [t.transaction_id for t in found] == ["SG1AAAAAAA"]
    assert len(face.fake.paths(PULL_QUERY)) == 2
