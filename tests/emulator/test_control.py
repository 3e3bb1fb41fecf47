"""The control API over HTTP (EmulatorControl, AsyncEmulatorControl), TLS, and delivery records."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from pesa import Settings
from pesa.emulator import (
    AsyncEmulatorControl,
    EmulatorConfig,
    EmulatorControlError,
    Fault,
    Rule,
    config_from_settings,
)
from pesa.testing import run_emulator, serve_emulator

from .conftest import FAST, PHONE, DarajaFactory, Receiver, stk_password, stk_timestamp

PUSH = "/mpesa/stkpush/v1/processrequest"


def _token(http: httpx.Client) -> str:
    response = http.get("/oauth/v1/generate?grant_type=client_credentials", auth=("k", "s"))
    return str(response.json()["access_token"])


def test_sync_control_manages_rules_faults_rate_limit_and_records() -> None:
    with (
        run_emulator(FAST) as running,
        httpx.Client(base_url=running.base_url, trust_env=False) as http,
    ):
        control = running.control
        rule = control.add_rule(phone="254711000001", result_code=1032)
        assert isinstance(rule, Rule)
        assert control.rules() == [rule]
        control.remove_rule(rule.id)
        assert control.rules() == []
        with pytest.raises(EmulatorControlError) as err:
            control.remove_rule(rule.id)
        assert err.value.status_code == 404

        fault = control.add_fault("spike_arrest", rate=1.0, times=1)
        assert isinstance(fault, Fault)
        assert control.faults() == [fault]
        # OAuth is a Daraja request too: it takes the one-shot fault.
        refused = http.get("/oauth/v1/generate?grant_type=client_credentials", auth=("k", "s"))
        assert refused.status_code == 500
        assert refused.json()["errorCode"] == "500.003.02"
        control.clear_faults()

        assert control.set_rate_limit(50) == 50
        assert control.set_rate_limit(None) is None

        token = _token(http)
        ts = stk_timestamp()
        body = {
            "BusinessShortCode": "174379",
            "Password": stk_password(ts),
            "Timestamp": ts,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 3,
            "PartyA": PHONE,
            "PartyB": "174379",
            "PhoneNumber": PHONE,
            "CallBackURL": "http://127.0.0.1:9/unreachable",
            "AccountReference": "A",
        }
        ack = http.post(PUSH, json=body, headers={"Authorization": f"Bearer {token}"})
        assert ack.status_code == 200
        [received] = control.requests(PUSH)
        assert received.body["Amount"] == 3
        assert received.body["Password"] == "[redacted]"
        assert received.status_code == 200
        assert received.response["CheckoutRequestID"] == ack.json()["CheckoutRequestID"]
        [callback] = control.wait_for_callbacks(1, kind="stk")
        assert control.wait_idle()
        [callback] = control.callbacks("stk")
        assert callback.delivered is False
        assert callback.attempts[0].status_code is None
        assert callback.attempts[0].error

        assert control.balances("174379")["Utility Account"] == Decimal("1000003.00")
        assert control.certificate().startswith(b"-----BEGIN CERTIFICATE-----")
        control.reset()
        assert control.requests() == []
        assert control.callbacks() == []
        assert control.balances("174379")["Utility Account"] == Decimal("1000000.00")


def test_control_api_refuses_bad_input_naming_the_field() -> None:
    with run_emulator(FAST) as running:
        with pytest.raises(ValueError, match="rate"):
            running.control.add_fault("http_500", rate=2)
        response = httpx.post(
            f"{running.base_url}/__emulator__/faults", json={"kind": "meteor"}, trust_env=False
        )
        assert response.status_code == 422
        assert response.json()["detail"][0]["field"] == "kind"
        bad_kind = httpx.get(f"{running.base_url}/__emulator__/callbacks?kind=x", trust_env=False)
        assert bad_kind.status_code == 422
        bad_rate = httpx.put(
            f"{running.base_url}/__emulator__/rate-limit",
            json={"requests_per_second": -1},
            trust_env=False,
        )
        assert bad_rate.status_code == 422


async def test_async_control_and_callback_retries(
    make_daraja: DarajaFactory, receiver: Receiver
) -> None:
    config = FAST.model_copy(update={"callback_retries": 2, "callback_retry_delay": 0.01})
    async with (
        make_daraja(config) as daraja,
        AsyncEmulatorControl(daraja.running.base_url) as control,
    ):
        await control.add_rule(phone=PHONE, delay=0)
        assert len(await control.rules()) == 1
        receiver.answers["/cb"] = (503, {"down": True})
        body = daraja.stk_body(CallBackURL=receiver.url("/cb"))
        assert (await daraja.post(PUSH, body)).status_code == 200
        assert await control.wait_idle()
        [record] = await control.wait_for_callbacks(1, kind="stk")
        assert [a.status_code for a in record.attempts] == [503, 503, 503]
        assert record.delivered is False
        assert len(receiver.bodies("/cb")) == 3
        await control.add_fault("http_500")
        assert len(await control.faults()) == 1
        await control.clear_faults()
        await control.clear_rules()
        assert await control.set_rate_limit(10) == 10
        assert (await control.balances("174379"))["Utility Account"] == Decimal("1000001.00")
        assert (await control.certificate()).startswith(b"-----BEGIN")
        assert len(await control.requests(PUSH)) == 1
        await control.reset()
        assert await control.callbacks() == []


async def test_tls_serves_https_with_a_trustable_ca() -> None:
    async with serve_emulator(FAST, tls=True) as running:
        assert running.base_url.startswith("https://127.0.0.1:")
        assert running.ca_path is not None and running.ca_path.exists()
        async with httpx.AsyncClient(base_url=running.base_url, verify=running.verify) as http:
            response = await http.get(
                "/oauth/v1/generate?grant_type=client_credentials", auth=("k", "s")
            )
            assert response.status_code == 200
        async with httpx.AsyncClient(base_url=running.base_url) as untrusting:
            with pytest.raises(httpx.ConnectError):
                await untrusting.get("/__emulator__/health")


def test_key_dir_keeps_keys_and_tls_files_across_restarts(tmp_path: Path) -> None:
    config = FAST.model_copy(update={"key_dir": tmp_path})
    with run_emulator(config, tls=True) as first:
        pem = first.control.certificate()
        ca = first.tls
    with run_emulator(config, tls=True) as second:
        assert second.control.certificate() == pem
        assert second.tls == ca
    assert (tmp_path / "credential-key.pem").stat().st_mode & 0o077 == 0


def test_config_from_settings_reads_the_emulator_section() -> None:
    settings = Settings(
        emulator_stk_delay=0.5,
        emulator_strict=True,
        consumer_key="ck",
        consumer_secret="cs",
        shortcode="654321",
        passkey="pk",
        emulator_seed=9,
    )
    config = config_from_settings(settings, latency_ms=5)
    assert config.stk_delay == 0.5
    assert config.strict
    assert (config.consumer_key, config.consumer_secret) == ("ck", "cs")
    assert config.passkeys["654321"] == "pk"
    assert config.seed == 9
    assert config.latency_ms == 5


def test_emulator_config_refuses_a_bad_shortcode() -> None:
    with pytest.raises(ValueError, match="5 to 7 digits"):
        EmulatorConfig(shortcodes=("12",))


def test_issue_token_in_strict_mode_uses_configured_credentials() -> None:
    from pesa.emulator import Emulator

    emulator = Emulator(EmulatorConfig(strict=True, consumer_key="a", consumer_secret="b"))
    assert len(emulator.issue_token()) == 28


async def test_serve_emulator_offers_async_control_and_guards_the_sync_one() -> None:
    async with serve_emulator(FAST) as running:
        async with running.async_control() as control:
            assert await control.rules() == []
        with pytest.raises(RuntimeError, match="deadlock"):
            running.control.rules()
