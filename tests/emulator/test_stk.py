"""STK push and STK query over real loopback HTTP, raw JSON, scenario table included."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pytest

from pesa.emulator import EmulatorConfig, nairobi_now

from .conftest import FAST, PHONE, Daraja, DarajaFactory, Receiver, stk_password, stk_timestamp

PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"


async def test_accepted_push_answers_daraja_acknowledgement(daraja: Daraja) -> None:
    response = await daraja.post(PUSH, daraja.stk_body())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "MerchantRequestID",
        "CheckoutRequestID",
        "ResponseCode",
        "ResponseDescription",
        "CustomerMessage",
    }
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == "Success. Request accepted for processing"
    assert body["CustomerMessage"] == "Success. Request accepted for processing"
    assert re.fullmatch(r"ws_CO_\d{26}", body["CheckoutRequestID"])
    assert re.fullmatch(
        r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\d{7}", body["MerchantRequestID"]
    )


async def test_success_callback_carries_receipt_and_metadata(
    daraja: Daraja, receiver: Receiver
) -> None:
    body = daraja.stk_body(CallBackURL=receiver.url("/cb"), Amount="5")
    ack = (await daraja.post(PUSH, body)).json()
    [callback] = await receiver.wait_for("/cb")
    stk = callback["Body"]["stkCallback"]
    assert stk["MerchantRequestID"] == ack["MerchantRequestID"]
    assert stk["CheckoutRequestID"] == ack["CheckoutRequestID"]
    assert stk["ResultCode"] == 0
    assert stk["ResultDesc"] == "The service request is processed successfully."
    items = {item["Name"]: item.get("Value") for item in stk["CallbackMetadata"]["Item"]}
    assert set(items) == {
        "Amount",
        "MpesaReceiptNumber",
        "Balance",
        "TransactionDate",
        "PhoneNumber",
    }
    assert items["Amount"] == 5.0
    assert items["Balance"] is None
    assert items["PhoneNumber"] == int(PHONE)
    now = nairobi_now()
    assert re.fullmatch(r"[A-Z][A-L][1-9A-V][A-Z0-9]{7}", items["MpesaReceiptNumber"])
    assert str(items["TransactionDate"]).startswith(f"{now:%Y%m%d}")


async def test_query_is_pending_then_final_with_string_result_code(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    async with make_daraja(EmulatorConfig(stk_delay=0.3, seed=1)) as daraja:
        ack = (await daraja.post(PUSH, daraja.stk_body(CallBackURL=receiver.url("/cb")))).json()
        checkout = ack["CheckoutRequestID"]
        pending = await daraja.post(QUERY, daraja.query_body(checkout))
        assert pending.status_code == 500
        assert pending.json() == {
            "requestId": checkout,
            "errorCode": "500.001.1001",
            "errorMessage": "The transaction is being processed",
        }
        await receiver.wait_for("/cb")
        final = await daraja.post(QUERY, daraja.query_body(checkout))
        assert final.status_code == 200
        assert final.json() == {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": ack["MerchantRequestID"],
            "CheckoutRequestID": checkout,
            "ResultCode": "0",
            "ResultDesc": "The service request is processed successfully.",
        }


@pytest.mark.parametrize(
    ("phone", "code"),
    [("254700000001", 1), ("254700001032", 1032), ("254700001037", 1037), ("254700002001", 2001)],
)
async def test_scenario_phone_fails_without_metadata(
    daraja: Daraja, receiver: Receiver, phone: str, code: int
) -> None:
    body = daraja.stk_body(PhoneNumber=phone, PartyA=phone, CallBackURL=receiver.url("/cb"))
    ack = (await daraja.post(PUSH, body)).json()
    [callback] = await receiver.wait_for("/cb")
    stk = callback["Body"]["stkCallback"]
    assert stk["ResultCode"] == code
    assert "CallbackMetadata" not in stk
    assert stk["ResultDesc"]
    await daraja.running.emulator.wait_idle()
    final = (await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))).json()
    assert final["ResultCode"] == str(code)


async def test_subscriber_busy_phone_is_refused_at_push_time(daraja: Daraja) -> None:
    phone = "254700001001"
    response = await daraja.post(PUSH, daraja.stk_body(PhoneNumber=phone, PartyA=phone))
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.001.1001"
    assert response.json()["errorMessage"] == (
        "Unable to lock subscriber, a transaction is already in process for the current subscriber"
    )


async def test_lost_callback_phone_succeeds_but_never_calls_back(
    daraja: Daraja, receiver: Receiver
) -> None:
    phone = "254700000404"
    body = daraja.stk_body(PhoneNumber=phone, PartyA=phone, CallBackURL=receiver.url("/cb"))
    ack = (await daraja.post(PUSH, body)).json()
    assert await daraja.running.emulator.wait_idle()
    assert receiver.bodies("/cb") == []
    final = (await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))).json()
    assert final["ResultCode"] == "0"


async def test_duplicate_callback_phone_delivers_twice(daraja: Daraja, receiver: Receiver) -> None:
    phone = "254700000202"
    body = daraja.stk_body(PhoneNumber=phone, PartyA=phone, CallBackURL=receiver.url("/cb"))
    await daraja.post(PUSH, body)
    first, second = await receiver.wait_for("/cb", 2)
    assert first == second
    assert first["Body"]["stkCallback"]["ResultCode"] == 0


async def test_any_other_number_succeeds(daraja: Daraja, receiver: Receiver) -> None:
    phone = "254110000123"
    body = daraja.stk_body(PhoneNumber=phone, PartyA=phone, CallBackURL=receiver.url("/cb"))
    await daraja.post(PUSH, body)
    [callback] = await receiver.wait_for("/cb")
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0


async def test_second_push_to_an_open_prompt_is_refused(make_daraja: DarajaFactory) -> None:
    async with make_daraja(EmulatorConfig(stk_delay=5, seed=2)) as daraja:
        assert (await daraja.post(PUSH, daraja.stk_body())).status_code == 200
        second = await daraja.post(PUSH, daraja.stk_body())
        assert second.status_code == 500
        assert second.json()["errorMessage"].startswith("Unable to lock subscriber")
        other = daraja.stk_body(PhoneNumber="254711111111", PartyA="254711111111")
        assert (await daraja.post(PUSH, other)).status_code == 200


async def test_phone_is_free_again_once_the_customer_answered(daraja: Daraja) -> None:
    assert (await daraja.post(PUSH, daraja.stk_body())).status_code == 200
    await daraja.running.emulator.wait_idle()
    assert (await daraja.post(PUSH, daraja.stk_body())).status_code == 200


def _bad(field: str) -> dict[str, str]:
    return {"errorCode": "400.002.02", "errorMessage": f"Bad Request - Invalid {field}"}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"BusinessShortCode": "17a379"}, "BusinessShortCode"),
        ({"BusinessShortCode": None}, "BusinessShortCode"),
        ({"Timestamp": "2021-06-28 09:24:08"}, "Timestamp"),
        ({"TransactionType": "PayBill"}, "TransactionType"),
        ({"Amount": 0}, "Amount"),
        ({"Amount": 1.5}, "Amount"),
        ({"Amount": 250_001}, "Amount"),
        ({"Amount": "ten"}, "Amount"),
        ({"PartyA": "0708374149"}, "PartyA"),
        ({"PhoneNumber": "+254708374149"}, "PhoneNumber"),
        ({"PhoneNumber": "25470837414"}, "PhoneNumber"),
        ({"PhoneNumber": "٢٥٤٧٠٨٣٧٤١٤٩"}, "PhoneNumber"),  # Arabic-Indic digits
        ({"PhoneNumber": "2547٠٨٣٧٤١٤٩", "PartyA": "254708374149"}, "PhoneNumber"),
        ({"CallBackURL": "example.com/cb"}, "CallBackURL"),
        ({"CallBackURL": "https://example.com/cb "}, "CallBackURL"),
        ({"CallBackURL": None}, "CallBackURL"),
        ({"AccountReference": "THIRTEEN-CHAR"}, "AccountReference"),
        ({"AccountReference": None}, "AccountReference"),
        ({"TransactionDesc": "fourteen chars"}, "TransactionDesc"),
    ],
)
async def test_invalid_field_is_refused_like_daraja(
    daraja: Daraja, overrides: dict[str, object], field: str
) -> None:
    response = await daraja.post(PUSH, daraja.stk_body(**overrides))
    assert response.status_code == 400
    body = response.json()
    assert {k: body[k] for k in ("errorCode", "errorMessage")} == _bad(field)
    assert body["requestId"]


async def test_buy_goods_does_not_need_an_account_reference(daraja: Daraja) -> None:
    body = daraja.stk_body(TransactionType="CustomerBuyGoodsOnline", PartyB="600000")
    del body["AccountReference"]
    assert (await daraja.post(PUSH, body)).status_code == 200


async def test_unknown_extra_fields_are_ignored(daraja: Daraja) -> None:
    assert (await daraja.post(PUSH, daraja.stk_body(Surprise="yes"))).status_code == 200


async def test_timestamp_outside_tolerance_of_nairobi_time_is_refused(daraja: Daraja) -> None:
    # A server on UTC formatting its local time is three hours behind Nairobi.
    utc_like = stk_timestamp(nairobi_now() - timedelta(hours=3))
    body = daraja.stk_body(Timestamp=utc_like, Password=stk_password(utc_like))
    response = await daraja.post(PUSH, body)
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid Timestamp"


async def test_timestamp_tolerance_is_configurable(make_daraja: DarajaFactory) -> None:
    config = FAST.model_copy(update={"timestamp_tolerance": None})
    async with make_daraja(config) as daraja:
        old = "20160216165627"
        body = daraja.stk_body(Timestamp=old, Password=stk_password(old))
        assert (await daraja.post(PUSH, body)).status_code == 200


async def test_wrong_password_is_wrong_credentials(daraja: Daraja) -> None:
    response = await daraja.post(PUSH, daraja.stk_body(Password=stk_password("20160216165627")))
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.001.1001"
    assert response.json()["errorMessage"] == "Wrong credentials"


async def test_unknown_shortcode_is_merchant_does_not_exist(daraja: Daraja) -> None:
    response = await daraja.post(PUSH, daraja.stk_body(BusinessShortCode="123456"))
    assert response.status_code == 500
    assert response.json()["errorMessage"] == "Merchant does not exist"


async def test_extra_shortcode_and_passkey_from_config(make_daraja: DarajaFactory) -> None:
    config = FAST.model_copy(update={"passkeys": {"555555": "secretkey"}})
    async with make_daraja(config) as daraja:
        ts = stk_timestamp()
        password = stk_password(ts, "555555", "secretkey")
        body = daraja.stk_body(BusinessShortCode="555555", Timestamp=ts, Password=password)
        assert (await daraja.post(PUSH, body)).status_code == 200


async def test_query_of_unknown_checkout_id_is_refused(daraja: Daraja) -> None:
    response = await daraja.post(QUERY, daraja.query_body("ws_CO_000"))
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid CheckoutRequestID"


async def test_query_with_wrong_password_is_wrong_credentials(daraja: Daraja) -> None:
    ack = (await daraja.post(PUSH, daraja.stk_body())).json()
    body = daraja.query_body(ack["CheckoutRequestID"])
    body["Password"] = stk_password("20160216165627")
    response = await daraja.post(QUERY, body)
    assert response.status_code == 500
    assert response.json()["errorMessage"] == "Wrong credentials"


async def test_rule_sets_result_and_callback_first_keeps_query_pending(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    async with make_daraja() as daraja:
        daraja.running.emulator.add_rule(phone=PHONE, result_code=1032, callback_first=True)
        receiver.delays["/cb"] = 0.3
        ack = (await daraja.post(PUSH, daraja.stk_body(CallBackURL=receiver.url("/cb")))).json()
        [callback] = await receiver.wait_for("/cb")
        assert callback["Body"]["stkCallback"]["ResultCode"] == 1032
        # The callback is in flight (the receiver is slow): the query is still pending.
        pending = await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))
        assert pending.status_code == 500
        await daraja.running.emulator.wait_idle()
        final = await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))
        assert final.json()["ResultCode"] == "1032"
        assert final.json()["ResultDesc"] == "Request cancelled by user."


async def test_rule_by_amount_and_reference_delays_the_callback(
    daraja: Daraja, receiver: Receiver
) -> None:
    emulator = daraja.running.emulator
    emulator.add_rule(amount=7, account_reference="LATE", callback="delay", callback_delay=0.3)
    body = daraja.stk_body(Amount=7, AccountReference="LATE", CallBackURL=receiver.url("/cb"))
    ack = (await daraja.post(PUSH, body)).json()
    await asyncio.sleep(0.2)
    # Final already (customer answered), but the callback is held back.
    final = await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))
    assert final.status_code == 200
    assert receiver.bodies("/cb") == []
    await receiver.wait_for("/cb")


async def test_rule_with_times_applies_once(daraja: Daraja, receiver: Receiver) -> None:
    daraja.running.emulator.add_rule(phone=PHONE, result_code=1, times=1)
    for _ in range(2):
        await daraja.post(PUSH, daraja.stk_body(CallBackURL=receiver.url("/cb")))
        await daraja.running.emulator.wait_idle()
    codes = [b["Body"]["stkCallback"]["ResultCode"] for b in receiver.bodies("/cb")]
    assert codes == [1, 0]


@pytest.mark.parametrize("action", ["drop", "timeout"])
async def test_rule_can_drop_the_stk_callback(
    daraja: Daraja, receiver: Receiver, action: str
) -> None:
    daraja.running.emulator.add_rule(operation="stk", result_code=1037, callback=action)
    ack = (await daraja.post(PUSH, daraja.stk_body(CallBackURL=receiver.url("/cb")))).json()
    assert await daraja.running.emulator.wait_idle()
    assert receiver.bodies("/cb") == []
    final = (await daraja.post(QUERY, daraja.query_body(ack["CheckoutRequestID"]))).json()
    assert final["ResultCode"] == "1037"


async def test_rule_for_another_operation_does_not_apply(
    daraja: Daraja, receiver: Receiver
) -> None:
    daraja.running.emulator.add_rule(operation="b2c", result_code=1)
    await daraja.post(PUSH, daraja.stk_body(CallBackURL=receiver.url("/cb")))
    [callback] = await receiver.wait_for("/cb")
    assert callback["Body"]["stkCallback"]["ResultCode"] == 0
