"""C2B register URL and simulate, with validation and confirmation on a loopback receiver."""

from __future__ import annotations

import hashlib

import pytest

from pesa.emulator import C2BPayment, EmulatorConfig, EmulatorControlError
from pesa.testing import run_emulator

from .conftest import FAST, ORG_SHORTCODE, PHONE, Daraja, DarajaFactory, Receiver

SIMULATE = "/mpesa/c2b/v1/simulate"


async def _register(
    daraja: Daraja, receiver: Receiver, version: str = "v2", response_type: str = "Completed"
) -> dict[str, object]:
    response = await daraja.post(
        f"/mpesa/c2b/{version}/registerurl",
        {
            "ShortCode": ORG_SHORTCODE,
            "ResponseType": response_type,
            "ConfirmationURL": receiver.url("/confirm"),
            "ValidationURL": receiver.url("/validate"),
        },
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _simulate_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "ShortCode": int(ORG_SHORTCODE),
        "CommandID": "CustomerPayBillOnline",
        "Amount": 10,
        "Msisdn": int(PHONE),
        "BillRefNumber": "ACC001",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(("version", "code"), [("v1", "0"), ("v2", "00000000")])
async def test_register_answers_with_daraja_misspelling(
    daraja: Daraja, receiver: Receiver, version: str, code: str
) -> None:
    body = await _register(daraja, receiver, version)
    assert set(body) == {"OriginatorCoversationID", "ResponseCode", "ResponseDescription"}
    assert body["ResponseCode"] == code
    assert body["ResponseDescription"] == "Success"


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"ShortCode": "174379"}, "400.002.02", "Bad Request - Invalid ShortCode"),
        ({"ResponseType": "completed"}, "400.002.02", "Bad Request - Invalid ResponseType"),
        ({"ConfirmationURL": "nope"}, "400.002.02", "Bad Request - Invalid ConfirmationURL"),
        (
            {"ValidationURL": "https://shop.example/mpesa/validate"},
            "400.003.02",
            "Bad Request - Invalid ValidationURL - URL has the word MPESA",
        ),
    ],
)
async def test_register_refuses_bad_fields(
    daraja: Daraja, overrides: dict[str, str], code: str, message: str
) -> None:
    body = {
        "ShortCode": ORG_SHORTCODE,
        "ResponseType": "Completed",
        "ConfirmationURL": "https://shop.example/c2b/confirm",
        "ValidationURL": "https://shop.example/c2b/validate",
    }
    body.update(overrides)
    response = await daraja.post("/mpesa/c2b/v1/registerurl", body)
    assert response.status_code == 400
    assert response.json()["errorCode"] == code
    assert response.json()["errorMessage"] == message


async def test_simulate_validates_then_confirms_with_masked_msisdn(
    daraja: Daraja, receiver: Receiver
) -> None:
    await _register(daraja, receiver, "v2")
    receiver.answers["/validate"] = (
        200,
        {"ResultCode": "0", "ResultDesc": "Accepted", "ThirdPartyTransID": "ref-9"},
    )
    ack = await daraja.post(SIMULATE, _simulate_body())
    assert ack.status_code == 200
    assert ack.json()["ResponseDescription"] == "Accept the service request successfully."
    assert "OriginatorCoversationID" in ack.json()
    [validation] = await receiver.wait_for("/validate")
    [confirmation] = await receiver.wait_for("/confirm")
    assert validation["TransID"] == confirmation["TransID"]
    assert validation["OrgAccountBalance"] == ""
    assert validation["TransAmount"] == "10.00"
    assert validation["TransactionType"] == "Pay Bill"
    assert validation["BillRefNumber"] == "ACC001"
    assert validation["BusinessShortCode"] == ORG_SHORTCODE
    assert confirmation["MSISDN"] == "25470****149"
    assert confirmation["ThirdPartyTransID"] == "ref-9"
    assert confirmation["OrgAccountBalance"] == "1000010.00"


async def test_v1_registration_hashes_the_msisdn(daraja: Daraja, receiver: Receiver) -> None:
    await _register(daraja, receiver, "v1")
    await daraja.post(SIMULATE, _simulate_body())
    [confirmation] = await receiver.wait_for("/confirm")
    assert confirmation["MSISDN"] == hashlib.sha256(PHONE.encode()).hexdigest()


async def test_validation_rejection_means_no_confirmation(
    daraja: Daraja, receiver: Receiver
) -> None:
    await _register(daraja, receiver)
    receiver.answers["/validate"] = (200, {"ResultCode": "C2B00012", "ResultDesc": "Rejected"})
    await daraja.post(SIMULATE, _simulate_body())
    await receiver.wait_for("/validate")
    assert await daraja.running.emulator.wait_idle()
    assert receiver.bodies("/confirm") == []
    assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_000


@pytest.mark.parametrize(("response_type", "confirmed"), [("Completed", 1), ("Cancelled", 0)])
async def test_unanswered_validation_follows_response_type(
    daraja: Daraja, receiver: Receiver, response_type: str, confirmed: int
) -> None:
    await _register(daraja, receiver, response_type=response_type)
    receiver.answers["/validate"] = (500, {"error": "down"})
    await daraja.post(SIMULATE, _simulate_body())
    assert await daraja.running.emulator.wait_idle()
    assert len(receiver.bodies("/confirm")) == confirmed


async def test_validation_timeout_follows_response_type(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(update={"c2b_validation_timeout": 0.2})
    async with make_daraja(config) as daraja:
        await _register(daraja, receiver, response_type="Cancelled")
        receiver.delays["/validate"] = 1.0
        await daraja.post(SIMULATE, _simulate_body())
        assert await daraja.running.emulator.wait_idle()
        [record] = daraja.running.emulator.callbacks("c2b_validation")
        assert record.delivered is False
        assert record.attempts[0].error is not None
        assert receiver.bodies("/confirm") == []


async def test_validation_can_be_disabled(make_daraja: DarajaFactory, receiver: Receiver) -> None:
    async with make_daraja(EmulatorConfig(result_delay=0, c2b_validation=False)) as daraja:
        await _register(daraja, receiver)
        await daraja.post(SIMULATE, _simulate_body(CommandID="CustomerBuyGoodsOnline"))
        [confirmation] = await receiver.wait_for("/confirm")
        assert confirmation["TransactionType"] == "Buy Goods"
        assert receiver.bodies("/validate") == []


async def test_simulate_without_registration_is_acknowledged_but_silent(
    daraja: Daraja, receiver: Receiver
) -> None:
    response = await daraja.post(SIMULATE, _simulate_body())
    assert response.status_code == 200
    assert await daraja.running.emulator.wait_idle()
    assert receiver.received == []


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"ShortCode": 1234}, "ShortCode"),
        ({"CommandID": "Pay"}, "CommandID"),
        ({"Amount": -1}, "Amount"),
        ({"Msisdn": "0708374149"}, "Msisdn"),
        ({"BillRefNumber": "x" * 21}, "BillRefNumber"),
    ],
)
async def test_simulate_refuses_bad_fields(
    daraja: Daraja, overrides: dict[str, object], field: str
) -> None:
    response = await daraja.post(SIMULATE, _simulate_body(**overrides))
    assert response.status_code == 400
    assert response.json()["errorMessage"] == f"Bad Request - Invalid {field}"


async def test_rules_fail_drop_or_duplicate_c2b_payments(
    daraja: Daraja, receiver: Receiver
) -> None:
    emulator = daraja.running.emulator
    await _register(daraja, receiver)
    emulator.add_rule(operation="c2b", account_reference="FAIL", result_code=1)
    emulator.add_rule(operation="c2b", account_reference="LOST", callback="drop")
    emulator.add_rule(operation="c2b", amount=77, callback="duplicate")
    await daraja.post(SIMULATE, _simulate_body(BillRefNumber="FAIL"))
    await daraja.post(SIMULATE, _simulate_body(BillRefNumber="LOST"))
    assert await emulator.wait_idle()
    # The failed payment never reached validation; the lost one was validated and paid.
    assert len(receiver.bodies("/validate")) == 1
    assert receiver.bodies("/confirm") == []
    assert emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_010
    await daraja.post(SIMULATE, _simulate_body(Amount=77))
    first, second = await receiver.wait_for("/confirm", 2)
    assert first == second


# -- a customer pays from the phone menu (control API) ----------------------------------------

PAYMENTS = "/__emulator__/c2b/payments"
# REFERENCE 7.3: validation and confirmation have this shape, keys in this order.
C2B_KEYS = [
    "TransactionType",
    "TransID",
    "TransTime",
    "TransAmount",
    "BusinessShortCode",
    "BillRefNumber",
    "InvoiceNumber",
    "OrgAccountBalance",
    "ThirdPartyTransID",
    "MSISDN",
    "FirstName",
    "MiddleName",
    "LastName",
]


async def _pay(daraja: Daraja, wait: float = 10, **fields: object) -> dict[str, object]:
    body: dict[str, object] = {"shortcode": ORG_SHORTCODE, "amount": 150}
    body.update(fields)
    response = await daraja.http.post(PAYMENTS, json=body, params={"wait": wait})
    assert response.status_code == 201, response.text
    payment: dict[str, object] = response.json()
    return payment


async def test_customer_pays_a_paybill_account_from_the_phone_menu(
    daraja: Daraja, receiver: Receiver
) -> None:
    await _register(daraja, receiver, "v2")
    payment = await _pay(
        daraja, account_reference="INV-7", phone="254712345678", first_name="WANJIKU"
    )
    assert payment["status"] == "completed"
    assert payment["validation"] == "accepted"
    assert payment["notified"] is True
    [validation] = receiver.bodies("/validate")
    [confirmation] = receiver.bodies("/confirm")
    assert list(validation) == C2B_KEYS
    assert list(confirmation) == C2B_KEYS
    assert confirmation["TransID"] == payment["trans_id"]
    assert confirmation["TransactionType"] == "Pay Bill"
    assert confirmation["BillRefNumber"] == "INV-7"
    assert confirmation["TransAmount"] == "150.00"
    assert confirmation["MSISDN"] == "25471****678"
    assert confirmation["FirstName"] == "WANJIKU"
    assert validation["OrgAccountBalance"] == ""
    assert confirmation["OrgAccountBalance"] == "1000150.00"
    assert all(isinstance(value, str) for value in confirmation.values())
    again = await daraja.http.get(f"{PAYMENTS}/{payment['trans_id']}")
    assert again.json() == payment


async def test_customer_pays_a_till_with_a_v1_registration(
    daraja: Daraja, receiver: Receiver
) -> None:
    await _register(daraja, receiver, "v1")
    payment = await _pay(daraja, till=True, account_reference="ignored at a till", amount=20)
    assert payment["command"] == "CustomerBuyGoodsOnline"
    [confirmation] = receiver.bodies("/confirm")
    assert confirmation["TransactionType"] == "Buy Goods"
    assert confirmation["BillRefNumber"] == ""
    assert confirmation["MSISDN"] == hashlib.sha256(PHONE.encode()).hexdigest()


async def test_payment_records_say_rejected_cancelled_or_failed(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(update={"c2b_validation_timeout": 0.3})
    async with make_daraja(config) as daraja:
        await _register(daraja, receiver, response_type="Cancelled")
        receiver.answers["/validate"] = (200, {"ResultCode": "C2B00012", "ResultDesc": "Rejected"})
        rejected = await _pay(daraja, account_reference="NOPE")
        receiver.answers["/validate"] = (200, {"ResultCode": "0", "ResultDesc": "Accepted"})
        receiver.delays["/validate"] = 1.0
        cancelled = await _pay(daraja, account_reference="SLOW")
        receiver.delays.clear()
        daraja.running.emulator.add_rule(operation="c2b", account_reference="BROKE", result_code=1)
        failed = await _pay(daraja, account_reference="BROKE")
        assert (rejected["status"], rejected["validation"], rejected["result_code"]) == (
            "rejected",
            "rejected",
            "C2B00012",
        )
        assert (cancelled["status"], cancelled["validation"]) == ("cancelled", "unanswered")
        assert (failed["status"], failed["result_code"], failed["validation"]) == (
            "failed",
            "1",
            None,
        )
        assert receiver.bodies("/confirm") == []
        assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_000
        listed = (await daraja.http.get(PAYMENTS, params={"shortcode": ORG_SHORTCODE})).json()
        assert [p["status"] for p in listed] == ["rejected", "cancelled", "failed"]


async def test_slow_validation_is_settled_by_response_type_completed(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(update={"c2b_validation_timeout": 0.3})
    async with make_daraja(config) as daraja:
        await _register(daraja, receiver, response_type="Completed")
        receiver.delays["/validate"] = 1.0
        payment = await _pay(daraja, account_reference="SLOW")
        assert (payment["status"], payment["validation"]) == ("completed", "unanswered")
        [confirmation] = await receiver.wait_for("/confirm")
        assert confirmation["TransID"] == payment["trans_id"]


async def test_dropped_confirmation_still_moves_the_money(
    daraja: Daraja, receiver: Receiver
) -> None:
    await _register(daraja, receiver)
    daraja.running.emulator.add_rule(operation="c2b", account_reference="LOST", callback="drop")
    payment = await _pay(daraja, account_reference="LOST", amount=40)
    assert (payment["status"], payment["notified"]) == ("completed", False)
    assert receiver.bodies("/confirm") == []
    assert daraja.running.emulator.balances(ORG_SHORTCODE)["Utility Account"] == 1_000_040


async def test_a_paybill_without_registered_urls_still_receives_the_money(
    daraja: Daraja, receiver: Receiver
) -> None:
    payment = await _pay(daraja, shortcode="600978", account_reference="A9", amount=75)
    assert (payment["status"], payment["notified"], payment["validation"]) == (
        "completed",
        False,
        None,
    )
    assert receiver.received == []
    assert daraja.running.emulator.balances("600978")["Utility Account"] == 1_000_075


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"shortcode": "600997", "amount": 0}, "amount"),
        ({"shortcode": "600997", "amount": 250_001}, "amount"),
        ({"shortcode": "60", "amount": 5}, "shortcode"),
        ({"shortcode": "600997", "amount": 5, "phone": "0712345678"}, "phone"),
        ({"shortcode": "600997", "amount": 5, "account_reference": "x" * 21}, "account_reference"),
        ({"shortcode": "600997", "amount": 5, "colour": "red"}, "colour"),
    ],
)
async def test_customer_payment_refuses_bad_input_naming_the_field(
    daraja: Daraja, body: dict[str, object], field: str
) -> None:
    response = await daraja.http.post(PAYMENTS, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == field
    assert (await daraja.http.get(PAYMENTS)).json() == []


def test_sync_control_client_makes_a_customer_pay() -> None:
    with run_emulator(FAST) as running:
        payment = running.control.customer_pays(
            shortcode="600984", account_reference="ORDER-1", amount=99, wait=10
        )
        assert isinstance(payment, C2BPayment)
        assert payment.status == "completed"
        assert running.control.c2b_payment(payment.trans_id) == payment
        assert running.control.c2b_payments("600984") == [payment]
        assert running.control.c2b_payments("600000") == []
        assert running.control.balances("600984")["Utility Account"] == 1_000_099
        with pytest.raises(EmulatorControlError) as err:
            running.control.c2b_payment("NOSUCHID")
        assert err.value.status_code == 404
