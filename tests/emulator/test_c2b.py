"""C2B register URL and simulate, with validation and confirmation on a loopback receiver."""

from __future__ import annotations

import hashlib

import pytest

from pesa.emulator import EmulatorConfig

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
        ({"ShortCode": 999999}, "ShortCode"),
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
