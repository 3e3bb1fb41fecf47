"""Fidelity fixes found by running third-party SDKs against the emulator, and the extension
point for new products (raw JSON throughout)."""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import unquote_plus

import httpx
import pytest

from pesa.emulator import Emulator, EmulatorConfig
from pesa.emulator._product import DarajaRoute, Product
from pesa.testing import run_emulator

from .conftest import (
    FAST,
    PHONE,
    Daraja,
    DarajaFactory,
    Receiver,
    fake_credential,
    stk_password,
    stk_timestamp,
)

PUSH = "/mpesa/stkpush/v1/processrequest"
OWN_SHORTCODE = "600996"  # a developer's own sandbox test shortcode, not in the defaults
STRICT = FAST.model_copy(
    update={"strict": True, "consumer_key": "key", "consumer_secret": "secret"}
)


def _b2c(receiver: Receiver, party_a: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "OriginatorConversationID": f"own-{party_a}",
        "InitiatorName": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "BusinessPayment",
        "Amount": 10,
        "PartyA": party_a,
        "PartyB": PHONE,
        "Remarks": "Refund 1234",
        "QueueTimeOutURL": receiver.url("/timeout"),
        "ResultURL": receiver.url("/result"),
    }
    body.update(overrides)
    return body


def _balance(receiver: Receiver, party_a: str) -> dict[str, Any]:
    return {
        "Initiator": "testapi",
        "SecurityCredential": fake_credential(),
        "CommandID": "AccountBalance",
        "PartyA": party_a,
        "IdentifierType": "4",
        "Remarks": "ok",
        "QueueTimeOutURL": receiver.url("/timeout"),
        "ResultURL": receiver.url("/balance"),
    }


async def test_lenient_mode_serves_a_developers_own_sandbox_shortcode(
    daraja: Daraja, receiver: Receiver
) -> None:
    register = await daraja.post(
        "/mpesa/c2b/v2/registerurl",
        {
            "ShortCode": OWN_SHORTCODE,
            "ResponseType": "Completed",
            "ConfirmationURL": receiver.url("/confirm"),
            "ValidationURL": receiver.url("/validate"),
        },
    )
    assert register.status_code == 200, register.text
    simulate = await daraja.post(
        "/mpesa/c2b/v2/simulate",
        {
            "ShortCode": OWN_SHORTCODE,
            "CommandID": "CustomerPayBillOnline",
            "Amount": 5,
            "Msisdn": PHONE,
            "BillRefNumber": "A1",
        },
    )
    assert simulate.status_code == 200, simulate.text
    [confirmation] = await receiver.wait_for("/confirm")
    assert confirmation["BusinessShortCode"] == OWN_SHORTCODE
    b2c = await daraja.post("/mpesa/b2c/v3/paymentrequest", _b2c(receiver, OWN_SHORTCODE))
    assert b2c.status_code == 200, b2c.text
    [result] = await receiver.wait_for("/result")
    assert result["Result"]["ResultCode"] == 0
    balance = await daraja.post("/mpesa/accountbalance/v1/query", _balance(receiver, OWN_SHORTCODE))
    assert balance.status_code == 200, balance.text


async def test_strict_mode_refuses_shortcodes_it_was_not_configured_with(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    async with make_daraja(STRICT) as daraja:
        b2c = await daraja.post("/mpesa/b2c/v3/paymentrequest", _b2c(receiver, OWN_SHORTCODE))
        assert b2c.status_code == 400
        assert b2c.json()["errorMessage"] == "Bad Request - Invalid PartyA"
        simulate = await daraja.post(
            "/mpesa/c2b/v1/simulate",
            {"ShortCode": OWN_SHORTCODE, "CommandID": "CustomerPayBillOnline", "Amount": 5},
        )
        assert simulate.json()["errorMessage"] == "Bad Request - Invalid ShortCode"
        known = await daraja.post("/mpesa/b2c/v3/paymentrequest", _b2c(receiver, "600997"))
        assert known.status_code == 200


async def test_the_sandbox_stk_shortcode_still_cannot_register_c2b_urls(daraja: Daraja) -> None:
    response = await daraja.post(
        "/mpesa/c2b/v2/registerurl",
        {
            "ShortCode": "174379",
            "ResponseType": "Completed",
            "ConfirmationURL": "https://shop.example/c2b/confirm",
            "ValidationURL": "https://shop.example/c2b/validate",
        },
    )
    assert response.json()["errorMessage"] == "Bad Request - Invalid ShortCode"


# -- the request log keeps no secret, whatever the body's content type -----------------------


async def test_request_log_redacts_the_stk_password_in_a_form_encoded_body(
    daraja: Daraja,
) -> None:
    timestamp = stk_timestamp()
    password = stk_password(timestamp)
    form = {"BusinessShortCode": "174379", "Password": password, "Timestamp": timestamp}
    response = await daraja.http.post(
        PUSH, data=form, headers={"Authorization": f"Bearer {daraja.token}"}
    )
    assert response.json()["errorMessage"] == "Bad Request - Invalid BusinessShortCode"
    # The field name percent-encoded, and the password's own %-escapes, are caught too.
    encoded = f"Pass%77ord={password.replace('=', '%3D')}&Timestamp={timestamp}"
    await daraja.http.post(
        PUSH,
        content=encoded,
        headers={
            "Authorization": f"Bearer {daraja.token}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    first, second = daraja.running.emulator.requests(PUSH)
    for record in (first, second):
        assert isinstance(record.body, str)
        assert password not in unquote_plus(record.body)
        assert "Password=[redacted]" in record.body
    assert "BusinessShortCode=174379" in first.body


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "application/xml",
            "<Envelope><Initiator>testapi</Initiator>"
            "<SecurityCredential>{secret}</SecurityCredential></Envelope>",
        ),
        (
            "multipart/form-data; boundary=xyz",
            '--xyz\r\nContent-Disposition: form-data; name="Password"\r\n\r\n{secret}\r\n'
            '--xyz\r\nContent-Disposition: form-data; name="Amount"\r\n\r\n1\r\n--xyz--\r\n',
        ),
        ("text/plain", "Password: {secret} and more"),
        ("application/json", '{{"Outer": {{"consumer_secret": "{secret}"}}, "Items": [1'),
    ],
)
async def test_request_log_redacts_secrets_in_any_content_type(
    daraja: Daraja, content_type: str, body: str
) -> None:
    secret = "S3cr3t-Credential-Value"
    await daraja.http.post(
        "/mpesa/b2c/v3/paymentrequest",
        content=body.format(secret=secret),
        headers={"Authorization": f"Bearer {daraja.token}", "Content-Type": content_type},
    )
    [record] = daraja.running.emulator.requests("/mpesa/b2c")
    assert secret not in str(record.body)
    assert "[redacted]" in str(record.body)


async def test_request_log_redacts_nested_json_secrets_and_issued_tokens(daraja: Daraja) -> None:
    await daraja.post(
        "/mpesa/reversal/v1/request",
        {"Initiator": {"name": "testapi", "Password": "hunter2"}, "Items": [{"passkey": "pk"}]},
    )
    [record] = daraja.running.emulator.requests("/mpesa/reversal")
    assert record.body == {
        "Initiator": {"name": "testapi", "Password": "[redacted]"},
        "Items": [{"passkey": "[redacted]"}],
    }
    [oauth] = daraja.running.emulator.requests("/oauth")
    assert oauth.response["access_token"] == "[redacted]"
    assert daraja.token not in str(oauth.model_dump())


# -- a new product is one module and one registration line ------------------------------------


class _Pochi(Product):
    """A toy product standing in for one of issue 14's: one path, one rule operation."""

    operations: ClassVar[tuple[str, ...]] = ("b2pochi",)
    callback_kinds: ClassVar[tuple[str, ...]] = ("result",)
    resets = 0

    def routes(self) -> list[DarajaRoute]:
        return [DarajaRoute("/mpesa/b2pochi/v1/paymentrequest", self.pay)]

    def pay(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        rule = self.core.rules.outcome("b2pochi", None, body.get("Amount"), None, 0)
        code = "0" if rule is None else str(rule.result_code)
        return 200, {"ResponseCode": code, "App": app}

    def reset(self) -> None:
        type(self).resets += 1


async def test_a_registered_product_is_served_behind_the_gateway_checks() -> None:
    emulator = Emulator(EmulatorConfig(), products=[_Pochi])
    emulator.add_rule(operation="b2pochi", amount=13, result_code="2040")
    with pytest.raises(ValueError, match="operation:? must be one of b2pochi"):
        emulator.add_rule(operation="stk")
    token = emulator.issue_token("shop")
    async with (
        emulator,
        httpx.AsyncClient(transport=httpx.ASGITransport(emulator.app), base_url="http://d") as http,
    ):
        path = "/mpesa/b2pochi/v1/paymentrequest"
        ok = await http.post(
            path, json={"Amount": 10}, headers={"Authorization": f"Bearer {token}"}
        )
        ruled = await http.post(
            path, json={"Amount": 13}, headers={"Authorization": f"Bearer {token}"}
        )
        no_token = await http.post(path, json={"Amount": 10})
        gone = await http.post(
            "/mpesa/stkpush/v1/processrequest",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        )
        kinds = await http.get("/__emulator__/callbacks", params={"kind": "stk"})
        paths = [r.path for r in emulator.requests()]
        await emulator.reset()
    assert ok.json() == {"ResponseCode": "0", "App": "shop"}
    assert ruled.json()["ResponseCode"] == "2040"
    assert no_token.json()["errorCode"] == "404.001.03"
    assert gone.json()["errorCode"] == "404.001.01"  # STK is not registered here
    assert kinds.status_code == 422
    assert _Pochi.resets == 1
    assert paths == [path, path, path, "/mpesa/stkpush/v1/processrequest"]


def test_rules_for_unknown_operations_are_refused_over_http() -> None:
    with run_emulator(FAST) as running:
        response = httpx.post(
            f"{running.base_url}/__emulator__/rules", json={"operation": "bogus"}, trust_env=False
        )
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["field"] == "operation"
    assert re.search(r"stk, c2b, b2c", problem["rule"])
