"""Pull Transactions in a live gateway (the emulator mounted): three C2B confirmations are
lost, the periodic job recovers all three from Daraja's own record, each recorded once, and
``pesa c2b pull`` finds nothing more to record."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pesa import Daraja, ValidationError
from pesa.cli import app as cli
from pesa.cli._c2b import parse_since
from pesa.emulator import Emulator, EmulatorConfig, EmulatorControl
from pesa.testing import RunningGateway, run_gateway

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


def _accounts(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS, encoding="utf-8")
    return path


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[RunningGateway]:
    settings = gateway_settings(
        database_url, accounts_file=_accounts(tmp_path), c2b_pull_interval=0.3
    )
    emulator = Emulator(EmulatorConfig(result_delay=0.05, seed=31))
    with run_gateway(settings, emulator=emulator) as running:
        yield running


def _until(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_three_lost_confirmations_are_recovered_once_each(
    gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator_url = str(gateway.emulator_url)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(base_url=gateway.url, headers=headers, timeout=15) as api,
        EmulatorControl(emulator_url, api_key=API_KEY) as control,
        Daraja(
            environment="emulator",
            base_url=emulator_url,
            consumer_key="k",
            consumer_secret="s",
            shortcode="600997",
        ) as daraja,  # fmt: skip
    ):
        _until(
            lambda: (
                (api.get("/v1/accounts").json()["data"][0]["c2b_registration"] or {}).get("status")
                == "registered"
            ),
            "the C2B URLs were never registered",
        )
        assert daraja.pull_register("0708374149", "https://example.com/pull").response_code in (
            "1000",
            "1001",
        )
        control.add_rule(operation="c2b", callback="drop", times=3)
        lost = [
            control.customer_pays(
                shortcode="600997", account_reference=f"LOST-{n}", amount=100 + n, wait=10
            )
            for n in range(3)
        ]
        assert all(p.status == "completed" and not p.notified for p in lost)
        told = control.customer_pays(
            shortcode="600997", account_reference="TOLD", amount=50, wait=10
        )
        assert told.notified

        def receipts() -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = api.get("/v1/receipts", params={"limit": 100}).json()[
                "data"
            ]
            return found if len(found) >= 4 else []

        found = _until(receipts, "the lost confirmations were never recovered")
        by_id = {r["trans_id"]: r for r in found}
        assert Counter(r["trans_id"] for r in found) == Counter(
            {p.trans_id: 1 for p in [*lost, told]}
        )
        for payment in lost:
            receipt = by_id[payment.trans_id]
            assert receipt["source"] == "pull" and receipt["status"] == "confirmed"
            assert receipt["amount"] in (
                str(payment.amount),
                f"{payment.amount}.00",
                payment.amount,
            )
            assert receipt["account_reference"] == payment.account_reference
        assert by_id[told.trans_id]["source"] == "confirmation"

    # On demand, from the shell: everything is known, nothing is recorded twice.
    env = {
        "PESA_ENV": "emulator",
        "PESA_BASE_URL": emulator_url,
        "PESA_DATABASE_URL": str(gateway.app.state.gateway.settings.database_url),
        "PESA_ACCOUNTS_FILE": str(_accounts(tmp_path)),
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
    }
    for name in [n for n in os.environ if n.startswith("PESA_")]:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(cli, ["c2b", "pull", "--since", "1h", "--json"], env=env)
    assert result.exit_code == 0, result.output
    # stdout alone: the gateway's own workers (another thread) may log to stderr meanwhile.
    report = json.loads(result.stdout)
    assert report["recovered"] == 0 and report["listed"] >= 4 and report["errors"] == 0
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=15) as api:
        after = api.get("/v1/receipts", params={"limit": 100}).json()["data"]
    assert sorted(r["trans_id"] for r in after) == sorted(by_id)


def test_since_is_a_duration_or_a_time_within_48_hours() -> None:
    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("6h", now) == now - timedelta(hours=6)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("2026-01-02 10:00", now) == datetime(2026, 1, 2, 7, 0, tzinfo=UTC)
    for bad in ("3d", "yesterday", "2025-12-31T00:00:00+00:00"):
        with pytest.raises(ValidationError):
            parse_since(bad, now)
