"""Receipts in a live gateway (its own thread, the emulator mounted): validation by a Python
rule (accepting, rejecting, too slow), the built-in ``expected`` rule, the REST API's errors,
the C2B routes' limits, ``pesa c2b register`` and the settings checks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pesa import ConfigurationError, Settings
from pesa.cli import app as cli
from pesa.emulator import Emulator, EmulatorConfig, EmulatorControl
from pesa.gateway import C2BValidation, ValidationVerdict, check_settings
from pesa.gateway._callbacks import redact_callback_paths
from pesa.testing import RunningGateway, c2b_payment_payload, run_gateway

from .conftest import API_KEY, CALLBACK_TOKEN, gateway_settings

pytestmark = pytest.mark.slow

ACCOUNTS = """
default = "paybill"

[accounts.paybill]
shortcode = "600997"
passkey = "paybill-passkey"
initiator_name = "testapi"
initiator_password = "Safaricom999!*!"
c2b_register = true
"""

seen: list[C2BValidation] = []


async def rule(request: C2BValidation) -> ValidationVerdict | bool:
    """The merchant's rule: GOOD-* accepted, BAD-* rejected, SLOW-* too slow, sync-ish bool."""
    seen.append(request)
    reference = request.account_reference or ""
    if reference.startswith("SLOW"):
        await asyncio.sleep(2)
    if reference.startswith("BAD"):
        return ValidationVerdict.reject("C2B00013", "amount not accepted")
    if reference.startswith("BOOL"):
        return False
    return ValidationVerdict.accepted(third_party_trans_id=f"ORDER-{reference}")


def _accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS, encoding="utf-8")
    return path


@pytest.fixture
def c2b_gateway(database_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    settings = gateway_settings(
        database_url,
        accounts_file=_accounts(tmp_path),
        c2b_validation="handler",
        c2b_validation_timeout=0.5,
        c2b_validation_fallback="reject",
    )
    emulator = Emulator(EmulatorConfig(result_delay=0.05, seed=21))
    with run_gateway(settings, emulator=emulator, c2b_validator=rule) as running:
        yield running


def _wait_registered(api: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        account = api.get("/v1/accounts").json()["data"][0]
        if (account["c2b_registration"] or {}).get("status") == "registered":
            return
        time.sleep(0.05)
    raise AssertionError("the C2B URLs were not registered at start")


def test_a_python_rule_accepts_rejects_and_is_replaced_by_the_fallback_when_slow(
    c2b_gateway: RunningGateway,
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(base_url=c2b_gateway.url, headers=headers, timeout=15) as api,
        EmulatorControl(str(c2b_gateway.emulator_url), api_key=API_KEY) as control,
    ):
        _wait_registered(api)

        def pay(reference: str) -> Any:
            return control.customer_pays(
                shortcode="600997", account_reference=reference, amount=100, wait=10
            )

        good = pay("GOOD-1")
        assert (good.status, good.validation) == ("completed", "accepted")
        assert good.third_party_trans_id == "ORDER-GOOD-1"
        bad = pay("BAD-1")
        assert (bad.status, bad.result_code) == ("rejected", "C2B00013")
        as_bool = pay("BOOL-1")
        assert (as_bool.status, as_bool.result_code) == ("rejected", "C2B00016")
        started = time.monotonic()
        slow = pay("SLOW-1")
        assert (slow.status, slow.result_code) == ("rejected", "C2B00016")
        assert time.monotonic() - started < 5  # answered at the 0.5 s budget, not after 2 s
        assert [v.account for v in seen[-4:]] == ["paybill"] * 4
        # The accepted payment's confirmation carries the ThirdPartyTransID it was given.
        deadline = time.monotonic() + 10
        while not (found := api.get("/v1/receipts").json()["data"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert [r["third_party_trans_id"] for r in found] == ["ORDER-GOOD-1"]
        metrics = api.get("/metrics").text
        assert 'pesa_c2b_validations_total{answer="rejected",by="fallback"} 1' in metrics
        assert 'pesa_c2b_validations_total{answer="accepted",by="rule"} 1' in metrics


def test_the_api_refuses_what_it_cannot_do_with_clear_errors(c2b_gateway: RunningGateway) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=c2b_gateway.url, headers=headers, timeout=15) as api:
        for body, field in (
            ({"account_reference": "A", "amount": 1.5}, "amount"),
            ({"account_reference": "A" * 21, "amount": 10}, "account_reference"),
            ({"account_reference": "A", "amount": 10, "account": "nope"}, "account"),
            ({"account_reference": "A", "amount": 10, "surprise": 1}, "surprise"),
        ):
            refused = api.post("/v1/expected-payments", json=body)
            assert refused.status_code == 422, refused.text
            assert refused.json()["error"]["field"] == field
        created = api.post(
            "/v1/expected-payments",
            json={"account_reference": "INV-9", "amount": 10},
            headers={"Idempotency-Key": "inv-9"},
        )
        assert created.status_code == 201
        replay = api.post(
            "/v1/expected-payments",
            json={"account_reference": "INV-9", "amount": 10},
            headers={"Idempotency-Key": "inv-9"},
        )
        assert replay.headers["Idempotent-Replayed"] == "true"
        conflict = api.post(
            "/v1/expected-payments",
            json={"account_reference": "INV-9", "amount": 11},
            headers={"Idempotency-Key": "inv-9"},
        )
        assert conflict.status_code == 409
        expected_id = created.json()["id"]
        assert api.post(f"/v1/expected-payments/{expected_id}/cancel").json()["status"] == (
            "cancelled"
        )
        assert api.get("/v1/expected-payments/exp_nope").status_code == 404
        assert api.post("/v1/expected-payments/x%00y/cancel").status_code == 404
        for params in ({"phone": "12345"}, {"paid_from": "yesterday"}, {"cursor": "x" * 80}):
            assert api.get("/v1/receipts", params=params).status_code == 422
        assert api.get("/v1/receipts/rcp_nope").status_code == 404
        assert api.get("/v1/receipts/lookups/rqy_nope").status_code == 404
        bad_code = api.post("/v1/receipts/lookup", json={"trans_id": "NOT A CODE!"})
        assert bad_code.status_code == 422 and bad_code.json()["error"]["field"] == "trans_id"
        unauthenticated = httpx.get(f"{c2b_gateway.url}/v1/receipts")
        assert unauthenticated.status_code == 401


def test_c2b_routes_refuse_wrong_tokens_oversized_and_malformed_bodies(
    c2b_gateway: RunningGateway,
) -> None:
    base = c2b_gateway.callback_url.rsplit("/", 1)[0]
    wrong = base.replace(CALLBACK_TOKEN, "not-the-token")
    payment = c2b_payment_payload(shortcode="600997", trans_id="ROUTE00001")
    for path in ("confirmation", "validation", "status/abc"):
        assert httpx.post(f"{wrong}/c2b/{path}", json=payment).status_code == 404
    huge = httpx.post(f"{base}/c2b/confirmation", content=b"{" + b" " * 40_000 + b"}")
    assert huge.status_code == 413
    broken = httpx.post(f"{base}/c2b/confirmation", content=b"not json")
    assert broken.status_code == 400
    invalid = httpx.post(f"{base}/c2b/validation", content=b"[]")
    assert invalid.status_code == 400
    assert invalid.json() == {"ResultCode": "C2B00016", "ResultDesc": "Rejected"}
    first = httpx.post(f"{base}/c2b/confirmation", json=payment)
    again = httpx.post(f"{base}/c2b/confirmation", json=payment)
    assert first.json() == again.json() == {"ResultCode": 0, "ResultDesc": "Success"}


def test_the_expected_rule_accepts_only_open_account_numbers(
    database_url: str, tmp_path: Path
) -> None:
    settings = gateway_settings(
        database_url, accounts_file=_accounts(tmp_path), c2b_validation="expected"
    )
    emulator = Emulator(EmulatorConfig(result_delay=0.05, seed=22))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        run_gateway(settings, emulator=emulator) as gateway,
        httpx.Client(base_url=gateway.url, headers=headers, timeout=15) as api,
        EmulatorControl(str(gateway.emulator_url), api_key=API_KEY) as control,
    ):
        _wait_registered(api)
        api.post("/v1/expected-payments", json={"account_reference": "FEES-2026", "amount": 50})
        known = control.customer_pays(
            shortcode="600997", account_reference="fees 2026", amount=20, wait=10
        )
        unknown = control.customer_pays(
            shortcode="600997", account_reference="FEES-2025", amount=20, wait=10
        )
        assert known.status == "completed"
        assert (unknown.status, unknown.result_code) == ("rejected", "C2B00012")


def test_pesa_c2b_register_uses_the_gateways_urls(
    c2b_gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "PESA_ENV": "emulator",
        "PESA_BASE_URL": str(c2b_gateway.emulator_url),
        "PESA_ACCOUNTS_FILE": str(_accounts(tmp_path)),
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "PESA_PUBLIC_URL": c2b_gateway.url,
        "COLUMNS": "200",
    }
    for name in [n for n in __import__("os").environ if n.startswith("PESA_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(cli, ["c2b", "register", "--json"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["confirmation_url"] == f"{c2b_gateway.url}/callbacks/<token>/c2b/confirmation"
    assert [(r["account"], r["registered"]) for r in report["results"]] == [("paybill", True)]
    assert CALLBACK_TOKEN not in result.output
    missing = CliRunner().invoke(cli, ["c2b", "register"], env={**env, "PESA_CALLBACK_TOKEN": ""})
    assert missing.exit_code == 1 and "PESA_CALLBACK_TOKEN" in missing.output


def test_secrets_of_status_urls_are_kept_out_of_logs() -> None:
    line = "POST /callbacks/tok3n/c2b/status/N0nce-s3cret/timeout HTTP/1.1"
    assert redact_callback_paths(line) == "POST /callbacks/***/c2b/status/***/timeout HTTP/1.1"


def test_verification_always_needs_an_initiator_on_every_registering_account(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text('[accounts.a]\nshortcode = "600997"\nc2b_register = true\n', "utf-8")
    settings = Settings(_env_file=None, accounts_file=path, c2b_verify="always")
    with pytest.raises(ConfigurationError, match="without an initiator.*: a"):
        check_settings(settings)
    with pytest.raises(ConfigurationError, match="c2b_validation_url is required"):
        Settings(_env_file=None, c2b_validation="http")
