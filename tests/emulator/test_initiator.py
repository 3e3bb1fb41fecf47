"""B2C, transaction status, account balance and reversal: acknowledgements and Results."""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pesa.emulator import EmulatorConfig

from .conftest import FAST, ORG_SHORTCODE, PHONE, Daraja, DarajaFactory, Receiver, fake_credential

B2C_V3 = "/mpesa/b2c/v3/paymentrequest"
B2C_V1 = "/mpesa/b2c/v1/paymentrequest"
STATUS = "/mpesa/transactionstatus/v1/query"
BALANCE = "/mpesa/accountbalance/v1/query"
REVERSAL = "/mpesa/reversal/v1/request"


def _b2c(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "OriginatorConversationID": "600997_Test_32et3241ed8yu",
        "InitiatorName": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "BusinessPayment",
        "Amount": 10,
        "PartyA": 600997,
        "PartyB": 254708374149,
        "Remarks": "Refund 1234",
        "QueueTimeOutURL": receiver.url("/timeout"),
        "ResultURL": receiver.url("/result"),
        "Occassion": "optional",
    }
    body.update(overrides)
    return body


def _params(result: dict[str, Any]) -> dict[str, Any]:
    items = result["ResultParameters"]["ResultParameter"]
    return {item["Key"]: item.get("Value") for item in items}


async def test_b2c_v3_acknowledges_and_delivers_the_result(
    daraja: Daraja, receiver: Receiver
) -> None:
    response = await daraja.post(B2C_V3, _b2c(receiver))
    assert response.status_code == 200
    ack = response.json()
    assert ack["OriginatorConversationID"] == "600997_Test_32et3241ed8yu"
    assert re.fullmatch(r"AG_\d{8}_[0-9a-f]{20}", ack["ConversationID"])
    assert ack["ResponseCode"] == "0"
    assert ack["ResponseDescription"] == "Accept the service request successfully."
    [payload] = await receiver.wait_for("/result")
    result = payload["Result"]
    assert result["ResultType"] == 0
    assert result["ResultCode"] == 0
    assert result["ResultDesc"] == "The service request is processed successfully."
    assert result["ConversationID"] == ack["ConversationID"]
    assert result["OriginatorConversationID"] == ack["OriginatorConversationID"]
    params = _params(result)
    assert params["TransactionReceipt"] == result["TransactionID"]
    assert params["TransactionAmount"] == 10
    assert params["B2CRecipientIsRegisteredCustomer"] == "Y"
    assert params["ReceiverPartyPublicName"].startswith(PHONE)
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", params["TransactionCompletedDateTime"])
    assert params["B2CUtilityAccountAvailableFunds"] == 999_990.0
    assert result["ReferenceData"]["ReferenceItem"] == {
        "Key": "QueueTimeoutURL",
        "Value": receiver.url("/timeout"),
    }


async def test_b2c_payments_reduce_the_balance_until_insufficient(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(update={"initial_utility_balance": 25})
    async with make_daraja(config) as daraja:
        for n, amount in enumerate([10, 10, 10]):
            body = _b2c(receiver, OriginatorConversationID=f"oc-{n}", Amount=amount)
            assert (await daraja.post(B2C_V3, body)).status_code == 200
            await daraja.running.emulator.wait_idle()
        codes = [p["Result"]["ResultCode"] for p in receiver.bodies("/result")]
        assert codes == [0, 0, 1]
        assert receiver.bodies("/result")[2]["Result"]["ResultDesc"] == (
            "The balance is insufficient for the transaction."
        )
        assert "ResultParameters" not in receiver.bodies("/result")[2]["Result"]
        assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 5


async def test_duplicate_originator_conversation_id_is_refused(
    daraja: Daraja, receiver: Receiver
) -> None:
    assert (await daraja.post(B2C_V3, _b2c(receiver))).status_code == 200
    again = await daraja.post(B2C_V3, _b2c(receiver))
    assert again.status_code == 500
    assert again.json()["errorCode"] == "500.002.1001"
    assert again.json()["errorMessage"] == "Duplicate OriginatorConversationID."


async def test_b2c_v1_makes_its_own_originator_id(daraja: Daraja, receiver: Receiver) -> None:
    body = _b2c(receiver)
    del body["OriginatorConversationID"]
    first = (await daraja.post(B2C_V1, body)).json()
    second = (await daraja.post(B2C_V1, body)).json()
    assert re.fullmatch(r"\d{4}-\d{9}-\d", first["OriginatorConversationID"])
    assert first["OriginatorConversationID"] != second["OriginatorConversationID"]


async def test_b2c_v3_requires_originator_conversation_id(
    daraja: Daraja, receiver: Receiver
) -> None:
    body = _b2c(receiver)
    del body["OriginatorConversationID"]
    response = await daraja.post(B2C_V3, body)
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid OriginatorConversationID"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"InitiatorName": ""}, "InitiatorName"),
        ({"CommandID": "Payout"}, "CommandID"),
        ({"Amount": 9}, "Amount"),
        ({"Amount": 250_001}, "Amount"),
        ({"PartyA": 1234}, "PartyA"),
        ({"PartyB": "0708374149"}, "PartyB"),
        ({"Remarks": "x"}, "Remarks"),
        ({"ResultURL": "ftp://x"}, "ResultURL"),
        ({"QueueTimeOutURL": None}, "QueueTimeOutURL"),
    ],
)
async def test_b2c_refuses_bad_fields(
    daraja: Daraja, receiver: Receiver, overrides: dict[str, Any], field: str
) -> None:
    response = await daraja.post(B2C_V3, _b2c(receiver, **overrides))
    assert response.status_code == 400
    assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"


async def test_malformed_credential_gives_result_2001(daraja: Daraja, receiver: Receiver) -> None:
    body = _b2c(receiver, SecurityCredential=base64.b64encode(b"short").decode())
    assert (await daraja.post(B2C_V3, body)).status_code == 200
    [payload] = await receiver.wait_for("/result")
    assert payload["Result"]["ResultCode"] == 2001
    assert payload["Result"]["ResultDesc"] == "The initiator information is invalid."
    assert payload["Result"]["TransactionID"] == "OAK0000000"


def _encrypt(pem: bytes, password: str) -> str:
    key = x509.load_pem_x509_certificate(pem).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return base64.b64encode(key.encrypt(password.encode(), padding.PKCS1v15())).decode()


async def test_strict_mode_decrypts_credentials_with_its_certificate(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(
        update={"strict": True, "consumer_key": "key", "consumer_secret": "secret"}
    )
    async with make_daraja(config) as daraja:
        pem = (await daraja.http.get("/__emulator__/certificate")).content
        assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
        good = _encrypt(pem, "Safaricom999!*!")
        wrong = _encrypt(pem, "Safaricom999")
        await daraja.post(B2C_V3, _b2c(receiver, SecurityCredential=good))
        await daraja.post(
            B2C_V3, _b2c(receiver, OriginatorConversationID="2", SecurityCredential=wrong)
        )
        await daraja.post(
            B2C_V3,
            _b2c(receiver, OriginatorConversationID="3", SecurityCredential=fake_credential()),
        )
        await daraja.running.emulator.wait_idle()
        by_id = {
            p["Result"]["OriginatorConversationID"]: p["Result"] for p in receiver.bodies("/result")
        }
        assert by_id["600997_Test_32et3241ed8yu"]["ResultCode"] == 0
        assert by_id["2"]["ResultCode"] == 2001
        assert by_id["3"]["ResultCode"] == 2001


async def test_timeout_rule_delivers_to_queue_timeout_url(
    daraja: Daraja, receiver: Receiver
) -> None:
    daraja.running.emulator.add_rule(operation="b2c", callback="timeout")
    await daraja.post(B2C_V3, _b2c(receiver))
    [payload] = await receiver.wait_for("/timeout")
    assert payload["Result"]["OriginatorConversationID"] == "600997_Test_32et3241ed8yu"
    assert receiver.bodies("/result") == []
    # Nothing was paid.
    assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_000
    [record] = daraja.running.emulator.callbacks("queue_timeout")
    assert record.delivered


async def test_rule_result_code_for_a_phone(daraja: Daraja, receiver: Receiver) -> None:
    daraja.running.emulator.add_rule(operation="b2c", phone=PHONE, result_code="SFC_IC0003")
    await daraja.post(B2C_V3, _b2c(receiver))
    [payload] = await receiver.wait_for("/result")
    assert payload["Result"]["ResultCode"] == "SFC_IC0003"
    assert payload["Result"]["ResultDesc"] == "The operator does not exist."


def _status(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Initiator": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "TransactionStatusQuery",
        "TransactionID": "NEF61H8J60",
        "PartyA": "600997",
        "IdentifierType": "4",
        "ResultURL": receiver.url("/status"),
        "QueueTimeOutURL": receiver.url("/timeout"),
        "Remarks": "OK",
        "Occasion": "OK",
    }
    body.update(overrides)
    return body


async def test_transaction_status_of_a_b2c_payment_by_receipt_and_by_originator_id(
    daraja: Daraja, receiver: Receiver
) -> None:
    await daraja.post(B2C_V3, _b2c(receiver))
    [paid] = await receiver.wait_for("/result")
    receipt = paid["Result"]["TransactionID"]
    ack = await daraja.post(STATUS, _status(receiver, TransactionID=receipt))
    assert ack.status_code == 200
    assert ack.json()["ResponseCode"] == "0"
    body = _status(receiver, OriginalConversationID="600997_Test_32et3241ed8yu")
    del body["TransactionID"]
    await daraja.post(STATUS, body)
    first, second = await receiver.wait_for("/status", 2)
    for payload in (first, second):
        params = _params(payload["Result"])
        assert payload["Result"]["ResultCode"] == 0
        assert params["ReceiptNo"] == receipt
        assert params["TransactionStatus"] == "Completed"
        assert params["Amount"] == 10.0


async def test_transaction_status_of_an_unknown_receipt_is_2032(
    daraja: Daraja, receiver: Receiver
) -> None:
    await daraja.post(STATUS, _status(receiver))
    [payload] = await receiver.wait_for("/status")
    assert payload["Result"]["ResultCode"] == 2032
    assert payload["Result"]["ResultDesc"] == "The transaction receipt number does not exist."


async def test_transaction_status_needs_an_id(daraja: Daraja, receiver: Receiver) -> None:
    body = _status(receiver)
    del body["TransactionID"]
    response = await daraja.post(STATUS, body)
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid TransactionID"


def _balance(receiver: Receiver, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Initiator": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "AccountBalance",
        "PartyA": ORG_SHORTCODE,
        "IdentifierType": "4",
        "Remarks": "ok",
        "QueueTimeOutURL": receiver.url("/timeout"),
        "ResultURL": receiver.url("/balance"),
    }
    body.update(overrides)
    return body


async def test_account_balance_reflects_b2c_payments(daraja: Daraja, receiver: Receiver) -> None:
    await daraja.post(B2C_V3, _b2c(receiver, Amount=100))
    await receiver.wait_for("/result")
    await daraja.post(BALANCE, _balance(receiver))
    [payload] = await receiver.wait_for("/balance")
    params = _params(payload["Result"])
    accounts = {part.split("|")[0]: part.split("|") for part in params["AccountBalance"].split("&")}
    assert accounts["Utility Account"][1:3] == ["KES", "999900.00"]
    assert accounts["Working Account"][2] == "700000.00"
    assert re.fullmatch(r"\d{14}", str(params["BOCompletedTime"]))


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"CommandID": "Balance"}, "CommandID"), ({"IdentifierType": "1"}, "IdentifierType")],
)
async def test_account_balance_refuses_bad_fields(
    daraja: Daraja, receiver: Receiver, overrides: dict[str, Any], field: str
) -> None:
    response = await daraja.post(BALANCE, _balance(receiver, **overrides))
    assert response.status_code == 400
    assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"


def _reversal(receiver: Receiver, receipt: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "Initiator": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "TransactionReversal",
        "TransactionID": receipt,
        "Amount": "10",
        "ReceiverParty": ORG_SHORTCODE,
        "RecieverIdentifierType": "11",
        "ResultURL": receiver.url("/reversal"),
        "QueueTimeOutURL": receiver.url("/timeout"),
        "Remarks": "Payment reversal",
        "Occasion": "optional",
    }
    body.update(overrides)
    return body


async def test_reversal_of_a_c2b_payment_then_again(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    async with make_daraja(EmulatorConfig(result_delay=0, c2b_validation=False)) as daraja:
        await daraja.post(
            "/mpesa/c2b/v1/registerurl",
            {
                "ShortCode": ORG_SHORTCODE,
                "ResponseType": "Completed",
                "ConfirmationURL": receiver.url("/confirm"),
                "ValidationURL": receiver.url("/validate"),
            },
        )
        await daraja.post(
            "/mpesa/c2b/v1/simulate",
            {
                "ShortCode": ORG_SHORTCODE,
                "CommandID": "CustomerPayBillOnline",
                "Amount": 10,
                "Msisdn": PHONE,
                "BillRefNumber": "A1",
            },
        )
        [confirmation] = await receiver.wait_for("/confirm")
        receipt = confirmation["TransID"]
        await daraja.post(REVERSAL, _reversal(receiver, receipt))
        await daraja.running.emulator.wait_idle()
        await daraja.post(REVERSAL, _reversal(receiver, receipt))
        await daraja.post(REVERSAL, _reversal(receiver, "PDU91HIVIT"))
        first, second, third = await receiver.wait_for("/reversal", 3)
        assert first["Result"]["ResultCode"] == 0
        assert _params(first["Result"])["OriginalTransactionID"] == receipt
        assert second["Result"]["ResultCode"] == "R000001"
        assert third["Result"]["ResultCode"] == "R000002"
        assert third["Result"]["ResultDesc"] == "The OriginalTransactionID is invalid."
        assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_000


async def test_reversal_with_correctly_spelt_field_is_refused(
    daraja: Daraja, receiver: Receiver
) -> None:
    body = _reversal(receiver, "PDU91HIVIT")
    body["ReceiverIdentifierType"] = body.pop("RecieverIdentifierType")
    response = await daraja.post(REVERSAL, body)
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid RecieverIdentifierType"


async def test_rules_can_duplicate_or_delay_a_result(daraja: Daraja, receiver: Receiver) -> None:
    emulator = daraja.running.emulator
    emulator.add_rule(operation="account_balance", callback="duplicate")
    emulator.add_rule(operation="transaction_status", callback="delay", callback_delay=0.2)
    await daraja.post(BALANCE, _balance(receiver))
    first, second = await receiver.wait_for("/balance", 2)
    assert first == second
    await daraja.post(STATUS, _status(receiver))
    await asyncio.sleep(0.1)
    assert receiver.bodies("/status") == []
    [late] = await receiver.wait_for("/status")
    assert late["Result"]["ResultCode"] == 2032


# -- payouts: a re-sent B2C cannot pay twice --------------------------------------------------


def _accepted_b2c(daraja: Daraja) -> dict[str, int]:
    """From the request log: B2C v3 requests accepted, per OriginatorConversationID."""
    accepted: dict[str, int] = {}
    for record in daraja.running.emulator.requests(B2C_V3):
        if record.status_code == 200:
            key = record.body["OriginatorConversationID"]
            accepted[key] = accepted.get(key, 0) + 1
    return accepted


async def test_a_resent_payout_is_refused_and_the_log_shows_one_accepted_per_id(
    daraja: Daraja, receiver: Receiver
) -> None:
    for originator in ("payout-1", "payout-1", "payout-2", "payout-1"):
        await daraja.post(B2C_V3, _b2c(receiver, OriginatorConversationID=originator))
    codes = [r.status_code for r in daraja.running.emulator.requests(B2C_V3)]
    assert codes == [200, 500, 200, 500]
    assert _accepted_b2c(daraja) == {"payout-1": 1, "payout-2": 1}
    assert await daraja.running.emulator.wait_idle()
    paid = [p["Result"]["OriginatorConversationID"] for p in receiver.bodies("/result")]
    assert sorted(paid) == ["payout-1", "payout-2"]
    assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 999_980


async def test_a_payout_whose_answer_is_lost_is_paid_once_when_resent(
    daraja: Daraja, receiver: Receiver
) -> None:
    emulator = daraja.running.emulator
    emulator.add_fault(kind="lost_answer", path=B2C_V3, times=1)
    lost = await daraja.post(B2C_V3, _b2c(receiver, OriginatorConversationID="payout-9"))
    assert lost.status_code == 504
    assert lost.json()["fault"]["faultstring"] == "Gateway Timeout"
    again = await daraja.post(B2C_V3, _b2c(receiver, OriginatorConversationID="payout-9"))
    assert again.json()["errorMessage"] == "Duplicate OriginatorConversationID."
    first, second = emulator.requests(B2C_V3)
    assert (first.status_code, first.answer_lost) == (200, True)
    assert first.response["OriginatorConversationID"] == "payout-9"
    assert (second.status_code, second.answer_lost) == (500, False)
    assert _accepted_b2c(daraja) == {"payout-9": 1}
    [result] = await receiver.wait_for("/result")
    assert result["Result"]["ResultCode"] == 0
    # Transaction Status by the OriginatorConversationID settles the unknown payout.
    body = _status(receiver, OriginalConversationID="payout-9")
    del body["TransactionID"]
    await daraja.post(STATUS, body)
    [status] = await receiver.wait_for("/status")
    assert _params(status["Result"])["ReceiptNo"] == result["Result"]["TransactionID"]


@pytest.mark.parametrize("action", ["drop", "duplicate"])
async def test_result_callbacks_of_every_initiator_api_can_be_lost_or_duplicated(
    daraja: Daraja, receiver: Receiver, action: str
) -> None:
    emulator = daraja.running.emulator
    for operation in ("b2c", "transaction_status", "account_balance", "reversal"):
        emulator.add_rule(operation=operation, callback=action)
    await daraja.post(B2C_V3, _b2c(receiver))
    await daraja.post(STATUS, _status(receiver))
    await daraja.post(BALANCE, _balance(receiver))
    await daraja.post(REVERSAL, _reversal(receiver, "PDU91HIVIT"))
    assert await emulator.wait_idle()
    copies = 0 if action == "drop" else 2
    for path in ("/result", "/status", "/balance", "/reversal"):
        assert len(receiver.bodies(path)) == copies, path
    # A lost B2C Result still paid the customer.
    assert emulator.balances(ORG_SHORTCODE)["Utility Account"] == 999_990


async def test_queue_timeout_payload_is_configurable_and_a_processed_timeout_pays(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(
        update={"queue_timeout_result_code": "SVC0001", "queue_timeout_result_desc": "Timed out"}
    )
    async with make_daraja(config) as daraja:
        emulator = daraja.running.emulator
        emulator.add_rule(operation="b2c", amount=20, callback="timeout", processed=True)
        emulator.add_rule(operation="b2c", amount=30, callback="timeout")
        await daraja.post(B2C_V3, _b2c(receiver, OriginatorConversationID="paid", Amount=20))
        await daraja.post(B2C_V3, _b2c(receiver, OriginatorConversationID="unpaid", Amount=30))
        first, second = await receiver.wait_for("/timeout", 2)
        for payload in (first, second):
            assert payload["Result"]["ResultCode"] == "SVC0001"
            assert payload["Result"]["ResultDesc"] == "Timed out"
            assert payload["Result"]["TransactionID"] == "OAK0000000"
        assert receiver.bodies("/result") == []
        assert emulator.balances(ORG_SHORTCODE)["Utility Account"] == 999_980
        for originator in ("paid", "unpaid"):
            body = _status(receiver, OriginalConversationID=originator)
            del body["TransactionID"]
            await daraja.post(STATUS, body)
            await emulator.wait_idle()
        paid, unpaid = receiver.bodies("/status")
        assert paid["Result"]["ResultCode"] == 0
        assert _params(paid["Result"])["Amount"] == 20.0
        assert unpaid["Result"]["ResultCode"] == 2032


# -- Transaction Status of receipts and refunds; balances ---------------------------------------


async def _c2b_receipt(daraja: Daraja, amount: int, shortcode: str = ORG_SHORTCODE) -> str:
    response = await daraja.http.post(
        "/__emulator__/c2b/payments",
        json={"shortcode": shortcode, "amount": amount, "account_reference": "INV-1"},
        params={"wait": 10},
    )
    assert response.json()["status"] == "completed", response.text
    return str(response.json()["trans_id"])


async def test_transaction_status_of_a_c2b_receipt_by_trans_id(
    daraja: Daraja, receiver: Receiver
) -> None:
    receipt = await _c2b_receipt(daraja, 250)
    await daraja.post(STATUS, _status(receiver, TransactionID=receipt))
    [payload] = await receiver.wait_for("/status")
    params = _params(payload["Result"])
    assert payload["Result"]["TransactionID"] == receipt
    assert params["ReceiptNo"] == receipt
    assert params["Amount"] == 250.0
    assert params["TransactionStatus"] == "Completed"
    assert params["DebitPartyName"].startswith(PHONE)
    assert params["CreditPartyName"] == ORG_SHORTCODE


async def test_partial_refunds_up_to_what_was_paid_then_already_reversed(
    daraja: Daraja, receiver: Receiver
) -> None:
    emulator = daraja.running.emulator
    receipt = await _c2b_receipt(daraja, 100)
    acks = []
    for amount in ("30", "80", "70", "1"):
        ack = await daraja.post(REVERSAL, _reversal(receiver, receipt, Amount=amount))
        acks.append(ack.json())
        assert await emulator.wait_idle()
    results = [p["Result"] for p in receiver.bodies("/reversal")]
    assert [r["ResultCode"] for r in results] == [0, 2006, 0, "R000001"]
    assert [_params(r)["Amount"] for r in (results[0], results[2])] == [30.0, 70.0]
    # Safaricom's six-field balance string (REFERENCE 8.7).
    assert _params(results[2])["DebitAccountBalance"] == (
        "Utility Account|KES|1000000.00|1000000.00|0.00|0.00"
    )
    assert emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_000
    # The original receipt reads Reversed; the refund is found by its receipt and by the
    # OriginatorConversationID its acknowledgement carried.
    await daraja.post(STATUS, _status(receiver, TransactionID=receipt))
    await emulator.wait_idle()
    await daraja.post(STATUS, _status(receiver, TransactionID=results[0]["TransactionID"]))
    await emulator.wait_idle()
    by_originator = _status(receiver, OriginalConversationID=acks[2]["OriginatorConversationID"])
    del by_originator["TransactionID"]
    await daraja.post(STATUS, by_originator)
    original, first_refund, second_refund = await receiver.wait_for("/status", 3)
    assert _params(original["Result"])["TransactionStatus"] == "Reversed"
    assert _params(first_refund["Result"])["Amount"] == 30.0
    assert _params(second_refund["Result"])["ReceiptNo"] == results[2]["TransactionID"]


async def test_partial_refunds_can_be_refused_by_configuration(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    async with make_daraja(FAST.model_copy(update={"reversal_partial": False})) as daraja:
        receipt = await _c2b_receipt(daraja, 100)
        await daraja.post(REVERSAL, _reversal(receiver, receipt, Amount="30"))
        assert await daraja.running.emulator.wait_idle()
        await daraja.post(REVERSAL, _reversal(receiver, receipt, Amount="100"))
        refused, done = await receiver.wait_for("/reversal", 2)
        assert refused["Result"]["ResultCode"] == 2006
        assert done["Result"]["ResultCode"] == 0


@pytest.mark.parametrize(
    ("reversible", "code", "balance"), [(False, "R000002", 999_990), (True, 0, 1_000_000)]
)
async def test_b2c_receipts_are_not_reversible_unless_configured(
    make_daraja: DarajaFactory,
    receiver: Receiver,
    reversible: bool,
    code: int | str,
    balance: int,
) -> None:
    async with make_daraja(FAST.model_copy(update={"reversal_of_b2c": reversible})) as daraja:
        await daraja.post(B2C_V3, _b2c(receiver))
        [paid] = await receiver.wait_for("/result")
        await daraja.post(REVERSAL, _reversal(receiver, paid["Result"]["TransactionID"]))
        [reversal] = await receiver.wait_for("/reversal")
        assert reversal["Result"]["ResultCode"] == code
        assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == balance


async def test_account_balance_reflects_receipts_payouts_and_refunds(
    daraja: Daraja, receiver: Receiver
) -> None:
    receipt = await _c2b_receipt(daraja, 500)
    await daraja.post(B2C_V3, _b2c(receiver, Amount=120))
    await daraja.post(REVERSAL, _reversal(receiver, receipt, Amount="200"))
    assert await daraja.running.emulator.wait_idle()
    await daraja.post(BALANCE, _balance(receiver))
    [payload] = await receiver.wait_for("/balance")
    text = _params(payload["Result"])["AccountBalance"]
    accounts = {part.split("|")[0]: part.split("|") for part in text.split("&")}
    assert all(len(fields) == 6 for fields in accounts.values())
    assert accounts["Utility Account"][2] == f"{1_000_000 + 500 - 120 - 200}.00"
