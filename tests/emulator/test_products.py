"""The business products, raw JSON with Daraja's literal names, against one loopback emulator:
Business to Pochi, B2B and tax, B2B Express Checkout, Pull Transactions, Dynamic QR, M-Pesa
Ratiba and Bill Manager (REFERENCE 8.2-8.9, 9)."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest

from pesa.emulator import EmulatorConfig, nairobi_now
from pesa.emulator._models import SentCallback
from pesa.testing import RunningEmulator, run_emulator

from .conftest import PHONE, fake_credential

CLOSED = "http://127.0.0.1:9"  # nothing listens: deliveries fail fast, payloads are recorded
CONFIG = EmulatorConfig(
    stk_delay=0.05,
    result_delay=0.02,
    callback_timeout=0.5,
    bill_manager_retry_delay=0.01,
    pull_page_size=2,
    seed=11,
)


@pytest.fixture(scope="module")
def running() -> Iterator[RunningEmulator]:
    with run_emulator(CONFIG) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def http(running: RunningEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.base_url, trust_env=False, timeout=10) as client:
        token = client.get(
            "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=("k", "s")
        ).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _wait(
    running: RunningEmulator, kind: str, match: Callable[[Any], bool], count: int = 1
) -> list[SentCallback]:
    deadline = time.monotonic() + 10
    while True:
        found = [c for c in running.control.callbacks(kind) if match(c.payload)]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {kind} callback"
        time.sleep(0.02)


def _result(running: RunningEmulator, conversation_id: str) -> dict[str, Any]:
    (sent,) = _wait(running, "result", lambda p: p["Result"]["ConversationID"] == conversation_id)
    result: dict[str, Any] = sent.payload["Result"]
    return result


def _params(result: dict[str, Any]) -> dict[str, Any]:
    items = result["ResultParameters"]["ResultParameter"]
    return {item["Key"]: item.get("Value") for item in items}


def _refs(result: dict[str, Any]) -> dict[str, Any]:
    items = result["ReferenceData"]["ReferenceItem"]
    items = items if isinstance(items, list) else [items]
    return {item["Key"]: item.get("Value") for item in items}


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["errorCode"], body["errorMessage"]


# -- Business to Pochi ------------------------------------------------------------------------


def _pochi(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "OriginatorConversationID": "pochi-1",
        "InitiatorName": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "BusinessPayToPochi",
        "Amount": 10,
        "PartyA": 600997,
        "PartyB": 254708374149,
        "Remarks": "Stock",
        "QueueTimeOutURL": f"{CLOSED}/timeout",
        "ResultURL": f"{CLOSED}/result",
        "Occassion": "optional",
    }
    body.update(overrides)
    return body


def test_pochi_pays_and_a_resent_id_is_refused(
    running: RunningEmulator, http: httpx.Client
) -> None:
    before = running.control.balances("600997")["Utility Account"]
    ack = http.post("/mpesa/b2pochi/v1/paymentrequest", json=_pochi()).json()
    assert ack["OriginatorConversationID"] == "pochi-1" and ack["ResponseCode"] == "0"
    result = _result(running, ack["ConversationID"])
    assert result["ResultCode"] == 0
    assert _params(result)["TransactionReceipt"] == result["TransactionID"]
    again = http.post("/mpesa/b2pochi/v1/paymentrequest", json=_pochi())
    assert _error(again) == (500, "500.002.1001", "Duplicate OriginatorConversationID.")
    assert running.control.balances("600997")["Utility Account"] == before - 10


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"CommandID": "BusinessPayment"}, "CommandID"),
        ({"Amount": 9}, "Amount"),
        ({"PartyB": "0708374149"}, "PartyB"),
    ],
)
def test_pochi_refusals_name_the_field(
    http: httpx.Client, change: dict[str, Any], field: str
) -> None:
    response = http.post(
        "/mpesa/b2pochi/v1/paymentrequest", json=_pochi(OriginatorConversationID="x", **change)
    )
    assert _error(response) == (400, "400.002.02", f"Bad Request - Invalid {field}")


# -- B2B and tax ------------------------------------------------------------------------------


def _b2b(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {  # REFERENCE 8.3's sample
        "Initiator": "API_Username",
        "SecurityCredential": fake_credential(),
        "CommandID": "BusinessPayBill",
        "SenderIdentifierType": "4",
        "RecieverIdentifierType": "4",
        "Amount": 239,
        "PartyA": 600999,
        "PartyB": 600000,
        "AccountReference": "353353",
        "Requester": "254700000000",
        "Remarks": "OK",
        "QueueTimeOutURL": f"{CLOSED}/b2b/timeout",
        "ResultURL": f"{CLOSED}/b2b/result",
        "Occassion": "optional",
    }
    body.update(overrides)
    return body


def test_b2b_pay_bill_moves_working_to_utility_and_reports_b2b_parameters(
    running: RunningEmulator, http: httpx.Client
) -> None:
    payer, payee = running.control.balances("600999"), running.control.balances("600000")
    ack = http.post("/mpesa/b2b/v1/paymentrequest", json=_b2b(Initiator="testapi")).json()
    assert ack["ResponseCode"] == "0" and ack["ConversationID"].startswith("AG_")
    result = _result(running, ack["ConversationID"])
    assert result["ResultCode"] == 0
    params = _params(result)
    assert params["Amount"] == "239.00"
    assert params["DebitAccountBalance"].startswith("{Amount={CurrencyCode=KES, MinimumAmount=")
    assert params["DebitPartyAffectedAccountBalance"].startswith("Working Account|KES|")
    assert len(params["TransCompletedTime"]) == 14
    assert params["ReceiverPartyPublicName"].startswith("600000 - ")
    assert _refs(result)["BillReferenceNumber"] == "353353"
    after_payer = running.control.balances("600999")
    after_payee = running.control.balances("600000")
    assert after_payer["Working Account"] == payer["Working Account"] - 239
    assert after_payee["Utility Account"] == payee["Utility Account"] + 239


def test_b2b_unknown_initiator_is_2001_by_result(
    running: RunningEmulator, http: httpx.Client
) -> None:
    ack = http.post("/mpesa/b2b/v1/paymentrequest", json=_b2b()).json()
    result = _result(running, ack["ConversationID"])
    assert result["ResultCode"] == 2001


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"RecieverIdentifierType": "1"}, "RecieverIdentifierType"),
        ({"AccountReference": None}, "AccountReference"),
        ({"AccountReference": "A" * 14}, "AccountReference"),
        ({"CommandID": "MerchantToMerchantTransfer"}, "CommandID"),
        ({"Requester": "0700"}, "Requester"),
    ],
)
def test_b2b_refusals_name_the_field(
    http: httpx.Client, change: dict[str, Any], field: str
) -> None:
    body = {k: v for k, v in _b2b(**change).items() if v is not None}
    response = http.post("/mpesa/b2b/v1/paymentrequest", json=body)
    assert _error(response) == (400, "400.002.02", f"Bad Request - Invalid {field}")


def test_tax_goes_to_kra_only_and_status_finds_the_receipt(
    running: RunningEmulator, http: httpx.Client
) -> None:
    body = _b2b(
        Initiator="testapi",
        CommandID="PayTaxToKRA",
        PartyB="572572",
        AccountReference="2020123456789",
        Requester=None,
    )
    body.pop("Requester")
    refused = http.post("/mpesa/b2b/v1/remittax", json={**body, "PartyB": "600000"})
    assert _error(refused) == (400, "400.002.02", "Bad Request - Invalid PartyB")
    ack = http.post("/mpesa/b2b/v1/remittax", json=body).json()
    result = _result(running, ack["ConversationID"])
    assert result["ResultCode"] == 0
    assert _params(result)["ReceiverPartyPublicName"] == "572572 - Tax Collecting Company"
    status = {
        "Initiator": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "TransactionStatusQuery",
        "TransactionID": result["TransactionID"],
        "PartyA": "600999",
        "IdentifierType": "4",
        "ResultURL": f"{CLOSED}/status",
        "QueueTimeOutURL": f"{CLOSED}/status",
        "Remarks": "OK",
    }
    found = _result(
        running,
        http.post("/mpesa/transactionstatus/v1/query", json=status).json()["ConversationID"],
    )
    assert found["ResultCode"] == 0 and _params(found)["ReceiptNo"] == result["TransactionID"]


# -- B2B Express Checkout -----------------------------------------------------------------


def _express(ref: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "primaryShortCode": "5123456",
        "receiverShortCode": "600000",
        "amount": 71,
        "paymentRef": "INV-71",
        "callbackUrl": f"{CLOSED}/express",
        "partnerName": "Acme Supplies",
        "RequestRefID": ref,
    }
    body.update(overrides)
    return body


def test_express_checkout_acknowledges_then_calls_back_in_lower_camel(
    running: RunningEmulator, http: httpx.Client
) -> None:
    response = http.post("/v1/ussdpush/get-msisdn", json=_express("ref-express-1"))
    assert response.json() == {"code": "0", "status": "USSD Initiated Successfully"}
    (sent,) = _wait(running, "b2b_express", lambda p: p["requestId"] == "ref-express-1")
    payload = sent.payload
    assert payload["resultCode"] == "0" and payload["status"] == "SUCCESS"
    assert payload["amount"] == "71.0" and payload["conversationID"].startswith("AG_")
    assert payload["transactionId"].isalnum() and "ResultCode" not in payload


def test_express_checkout_cancelled_by_the_operator_is_4001(
    running: RunningEmulator, http: httpx.Client
) -> None:
    running.control.add_rule(operation="b2b_express", result_code="4001", times=1)
    http.post("/v1/ussdpush/get-msisdn", json=_express("ref-express-2"))
    (sent,) = _wait(running, "b2b_express", lambda p: p["requestId"] == "ref-express-2")
    assert sent.payload["resultCode"] == "4001"
    assert sent.payload["resultDesc"] == "User cancelled transaction"
    assert "transactionId" not in sent.payload


def test_express_checkout_refuses_a_bad_till(http: httpx.Client) -> None:
    response = http.post("/v1/ussdpush/get-msisdn", json=_express("r", primaryShortCode="12"))
    assert _error(response) == (400, "400.002.02", "Bad Request - Invalid primaryShortCode")


# -- Pull Transactions --------------------------------------------------------------------


def _window(hours: float = 1) -> dict[str, str]:
    now = nairobi_now()
    return {
        "StartDate": f"{now - timedelta(hours=hours):%Y-%m-%d %H:%M:%S}",
        "EndDate": f"{now + timedelta(minutes=1):%Y-%m-%d %H:%M:%S}",
    }


def test_pull_finds_c2b_payments_whose_confirmation_was_lost(
    running: RunningEmulator, http: httpx.Client
) -> None:
    query = {"ShortCode": "600984", "OffSetValue": "0", **_window()}
    unregistered = http.post("/pulltransactions/v1/query", json=query)
    assert _error(unregistered) == (400, "400.001", "Invalid ShortCode")
    register = {
        "ShortCode": "600984",
        "RequestType": "Pull",
        "NominatedNumber": PHONE,
        "CallBackURL": f"{CLOSED}/pull",
    }
    first = http.post("/pulltransactions/v1/register", json=register).json()
    assert first["ResponseStatus"] == "1000" and first["ShortCode"] == "600984"
    assert http.post("/pulltransactions/v1/register", json=register).json()["ResponseStatus"] == (
        "1001"
    )
    running.control.add_rule(operation="c2b", callback="drop", times=3)
    paid = [
        running.control.customer_pays(
            shortcode="600984", account_reference=f"LOST-{n}", amount=100 + n, wait=10
        )
        for n in range(3)
    ]
    assert all(p.status == "completed" and not p.notified for p in paid)
    pages = []
    for offset in (0, 2, 3):
        body = http.post("/pulltransactions/v1/query", json={**query, "OffSetValue": str(offset)})
        pages.append(body.json())
    assert [p["ResponseCode"] for p in pages] == ["1000", "1000", "1001"]
    assert pages[2]["ResponseMessage"] == "No records found or Organization Name not available"
    rows = [row for page in pages[:2] for group in page["Response"] for row in group]
    assert [r["transactionId"] for r in rows] == [p.trans_id for p in paid]
    assert [r["billreference"] for r in rows] == ["LOST-0", "LOST-1", "LOST-2"]
    assert rows[0]["amount"] == "100.0" and rows[0]["msisdn"] == 254708374149
    assert rows[0]["trxDate"].endswith("+03:00")


def test_pull_refuses_a_bad_date(http: httpx.Client) -> None:
    body = {"ShortCode": "600984", "StartDate": "2020-08-04T08:36", "EndDate": "x"}
    response = http.post("/pulltransactions/v1/query", json=body)
    assert _error(response)[0] == 400


# -- Dynamic QR -----------------------------------------------------------------------------


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_qr_answers_00_and_a_png_of_the_size_asked(http: httpx.Client) -> None:
    body = {  # REFERENCE 9's sample
        "MerchantName": "TEST SUPERMARKET",
        "RefNo": "Invoice Test",
        "Amount": 1,
        "TrxCode": "BG",
        "CPI": "373132",
        "Size": "300",
    }
    answer = http.post("/mpesa/qrcode/v1/generate", json=body).json()
    assert answer["ResponseCode"] == "00"
    assert answer["ResponseDescription"] == "The service request is processed successfully."
    assert _png_size(base64.b64decode(answer["QRCode"])) == (300, 300)
    send_money = {**body, "TrxCode": "SM", "CPI": PHONE, "Size": "120"}
    image = base64.b64decode(
        http.post("/mpesa/qrcode/v1/generate", json=send_money).json()["QRCode"]
    )
    assert _png_size(image) == (120, 120)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"TrxCode": "XX"}, "TrxCode"), ({"CPI": PHONE}, "CPI"), ({"Size": "5000"}, "Size")],
)
def test_qr_refusals_name_the_field(http: httpx.Client, change: dict[str, Any], field: str) -> None:
    body = {"MerchantName": "M", "RefNo": "R", "Amount": 1, "TrxCode": "BG", "CPI": "373132"}
    response = http.post("/mpesa/qrcode/v1/generate", json={**body, "Size": "300", **change})
    assert _error(response) == (400, "400.002.02", f"Bad Request - Invalid {field}")


# -- M-Pesa Ratiba ------------------------------------------------------------------------


def _ratiba(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {  # REFERENCE 9's sample
        "StandingOrderName": name,
        "StartDate": "20240905",
        "EndDate": "20250905",
        "BusinessShortCode": "174379",
        "TransactionType": "Standing Order Customer Pay Bill",
        "ReceiverPartyIdentifierType": "4",
        "Amount": "4500",
        "PartyA": PHONE,
        "CallBackURL": f"{CLOSED}/ratiba",
        "AccountReference": "Test",
        "TransactionDesc": "Electric Bike",
        "Frequency": "2",
    }
    body.update(overrides)
    return body


def _items(payload: dict[str, Any]) -> dict[str, Any]:
    return {i["Name"]: i["Value"] for i in payload["ResponseBody"]["ResponseData"]}


def test_ratiba_acknowledges_200_then_calls_back_with_response_data(
    running: RunningEmulator, http: httpx.Client
) -> None:
    ack = http.post("/standingorder/v1/createStandingOrderExternal", json=_ratiba("Rent")).json()
    header = ack["ResponseHeader"]
    assert header["responseCode"] == "200" and header["responseRefID"]
    (sent,) = _wait(
        running, "ratiba", lambda p: p["ResponseHeader"]["responseRefID"] == header["responseRefID"]
    )
    items = _items(sent.payload)
    assert items["responseCode"] == "0" and items["Status"] == "OKAY"
    assert items["TransactionID"] and "*" in items["Msisdn"]


def test_ratiba_refuses_in_its_own_envelope(http: httpx.Client) -> None:
    http.post("/standingorder/v1/createStandingOrderExternal", json=_ratiba("Twice"))
    again = http.post("/standingorder/v1/createStandingOrderExternal", json=_ratiba("Twice"))
    bad = http.post(
        "/standingorder/v1/createStandingOrderExternal",
        json=_ratiba("Bad", AccountReference="A" * 13),
    )
    for response in (again, bad):
        body = response.json()
        assert response.status_code == 400 and body["responseCode"] == 400
        assert set(body) == {"requestRefId", "responseMessage", "responseCode", "timestamp"}
    assert bad.json()["responseMessage"] == "Bad Request - Invalid AccountReference"


@pytest.mark.parametrize("spelling", ["Marchant", "Merchant"])
def test_ratiba_till_orders_accept_both_spellings(http: httpx.Client, spelling: str) -> None:
    body = _ratiba(
        f"Till {spelling}",
        TransactionType=f"Standing Order Customer Pay {spelling}",
        ReceiverPartyIdentifierType="2",
    )
    answer = http.post("/standingorder/v1/createStandingOrderExternal", json=body)
    assert answer.status_code == 200, answer.text


def test_ratiba_customer_who_cancels_is_1032_error(
    running: RunningEmulator, http: httpx.Client
) -> None:
    body = _ratiba("Cancelled", PartyA="254700001032")
    ref = http.post("/standingorder/v1/createStandingOrderExternal", json=body).json()[
        "ResponseHeader"
    ]["responseRefID"]
    (sent,) = _wait(running, "ratiba", lambda p: p["ResponseHeader"]["responseRefID"] == ref)
    items = _items(sent.payload)
    assert items["responseCode"] == "1032" and items["Status"] == "ERROR"


def test_ratiba_camel_case_callbacks_when_configured() -> None:
    config = CONFIG.model_copy(update={"ratiba_callback_keys": "camel"})
    with (
        run_emulator(config) as other,
        httpx.Client(base_url=other.base_url, trust_env=False) as client,
    ):
        token = other.emulator.issue_token()
        client.post(
            "/standingorder/v1/createStandingOrderExternal",
            json=_ratiba("Camel"),
            headers={"Authorization": f"Bearer {token}"},
        )
        (sent,) = other.control.wait_for_callbacks(1, kind="ratiba")
    assert set(sent.payload) == {"responseHeader", "responseBody"}
    assert sent.payload["responseBody"]["responseData"][0]["name"] == "TransactionID"


# -- Bill Manager -----------------------------------------------------------------------------

BILL = "/v1/billmanager-invoice"


def _invoice(ref: str, account: str, amount: int = 800) -> dict[str, Any]:
    return {  # REFERENCE 9's fields
        "externalReference": ref,
        "billedFullName": "John Doe",
        "billedPhoneNumber": PHONE,
        "billedPeriod": "August 2021",
        "invoiceName": "Jentrys",
        "dueDate": "2021-10-12",
        "accountReference": account,
        "amount": amount,
        "invoiceItems": [{"itemName": "food", "amount": amount}],
    }


def test_bill_manager_invoices_payments_retries_reconciliation_and_cancel(
    running: RunningEmulator, http: httpx.Client
) -> None:
    early = http.post(f"{BILL}/single-invoicing", json=_invoice("INV-0", "ACC-0"))
    assert early.status_code == 400 and early.json()["rescode"] == "400"
    opt_in = {
        "shortcode": "600978",
        "email": "billing@example.com",
        "officialContact": PHONE,
        "sendReminders": 1,
        "logo": "https://example.com/logo.png",
        "callbackurl": f"{CLOSED}/bills",
    }
    joined = http.post(f"{BILL}/optin", json=opt_in).json()
    assert joined["rescode"] == "200" and joined["resmsg"] == "Success" and joined["app_key"]
    single = http.post(f"{BILL}/single-invoicing", json=_invoice("INV-1", "ACC-1")).json()
    assert single["rescode"] == "200" and single["Status_Message"]
    bulk = [_invoice("INV-2", "ACC-2"), _invoice("INV-3", "ACC-3")]
    assert http.post(f"{BILL}/bulk-invoicing", json=bulk).json()["rescode"] == "200"
    not_array = http.post(f"{BILL}/bulk-invoicing", json=_invoice("INV-4", "ACC-4"))
    assert _error(not_array) == (400, "400.002.05", "Invalid Request Payload")

    payment = running.control.customer_pays(
        shortcode="600978", account_reference="ACC-1", amount=800, wait=10
    )
    # Nobody answers the callback URL: the notification is sent once and re-sent 5 times.
    sent = _wait(running, "bill_payment", lambda p: p["transactionId"] == payment.trans_id, count=6)
    assert sent[0].payload == {
        "transactionId": payment.trans_id,
        "paidAmount": "800.00",
        "msisdn": PHONE,
        "dateCreated": sent[0].payload["dateCreated"],
        "accountReference": "ACC-1",
        "shortCode": "600978",
    }
    running.control.wait_idle()
    assert (
        len(_wait(running, "bill_payment", lambda p: p["transactionId"] == payment.trans_id)) == 6
    )

    reconcile = {
        "paymentDate": "2021-10-01",
        "paidAmount": "800",
        "accountReference": "ACC-1",
        "transactionId": payment.trans_id,
        "phoneNumber": PHONE,
        "fullName": "John Doe",
        "invoiceName": "Jentrys",
        "externalReference": "INV-1",
    }
    assert http.post(f"{BILL}/reconciliation", json=reconcile).json()["rescode"] == "200"
    paid = http.post(f"{BILL}/cancel-single-invoice", json={"externalReference": "INV-1"})
    assert paid.status_code == 200 and paid.json()["rescode"] == "409"
    cancelled = http.post(
        f"{BILL}/cancel-bulk-invoices",
        json=[{"externalReference": "INV-2"}, {"externalReference": "INV-3"}],
    )
    assert cancelled.json()["rescode"] == "200"
    changed = http.post(f"{BILL}/change-optin-details", json={**opt_in, "sendReminders": 0})
    assert changed.json() == {"resmsg": "Success", "rescode": "200"}
