"""``pesa demo``: one payment per emulator scenario, end to end, through a real gateway.

The demo starts the whole stack in this process (gateway, emulator mounted at
``/emulator``, SQLite ledger in a temporary directory, reconciler and dispatcher) on a free
loopback port, then speaks HTTP to it exactly as a merchant's app would: it creates one
payment per scenario phone, retries one request with the same idempotency key, waits for
every payment to settle, and checks each against the outcome the scenario promises. The
settings are forced (not read from ``PESA_*``) so that a shell configured for production
can never make the demo touch real money.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx

from pesa._logging import get_logger
from pesa.cli._demo_money_out import DemoSection, money_out
from pesa.cli._demo_receipts import DEMO_ACCOUNTS, ReceiptScenarioResult, walk_receipts
from pesa.config import Settings
from pesa.emulator import Emulator, EmulatorConfig
from pesa.testing._gateway import serve_gateway

__all__ = ["SCENARIOS", "DemoResult", "Scenario", "run_demo"]

log = get_logger("pesa.demo")

TERMINAL = frozenset({"succeeded", "failed", "rejected"})


@dataclass(frozen=True, slots=True)
class Scenario:
    """One emulator scenario phone and the outcome the gateway must reach for it."""

    name: str
    phone: str
    expected_status: str
    expected_code: str | None
    expected_callbacks: int | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("success", "254708374149", "succeeded", "0"),
    Scenario("cancelled by the customer", "254700001032", "failed", "1032"),
    Scenario("insufficient funds", "254700000001", "failed", "1"),
    Scenario("customer unreachable", "254700001037", "failed", "1037"),
    Scenario("wrong PIN", "254700002001", "failed", "2001"),
    Scenario("subscriber busy: refused at push", "254700001001", "rejected", None),
    Scenario("callback lost: settled by query", "254700000404", "succeeded", "0", 0),
    Scenario("callback sent twice: applied once", "254700000202", "succeeded", "0", 2),
)


@dataclass(slots=True)
class DemoResult:
    """What happened to one scenario's payment."""

    scenario: Scenario
    payment: dict[str, Any]
    lifecycle: list[str] = field(default_factory=list)
    callbacks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the payment ended exactly as the scenario promises."""
        return not self.problems


def demo_settings(database_url: str, api_key: str, accounts_file: Path | None = None) -> Settings:
    """Settings for the demo: emulator only, short waits, nothing read from the environment."""
    return Settings(
        _env_file=None,
        env="emulator",
        accounts_file=accounts_file,
        base_url=None,
        database_url=database_url,
        api_key=api_key,
        callback_token=secrets.token_urlsafe(24),
        public_url=None,
        gateway_host="127.0.0.1",
        gateway_port=0,
        callback_allowlist="off",
        run_workers=True,
        auto_migrate=True,
        webhook_urls=[],
        reconcile_interval=0.2,
        reconcile_min_age=1.5,
        reconcile_recheck_interval=0.5,
        reconcile_deadline=60.0,
        reconcile_query_rate=50.0,
        reconcile_query_burst=10,
        payout_status_after=1.0,
        log="warning",
    )


async def run_demo(
    scenarios: Sequence[Scenario] = SCENARIOS,
    *,
    timeout: float = 40.0,
    stk_delay: float = 0.5,
    workdir: Path | None = None,
) -> tuple[list[DemoResult], list[str], list[ReceiptScenarioResult], list[DemoSection]]:
    """Run every scenario through a fresh gateway and report how each payment ended.

    Returns:
        ``(results, notes, receipts, sections)``: one result per STK scenario, lines about
        the checks that are not one payment (the idempotent retry, the C2B registration),
        one result per receipts scenario (customers paying the PayBill), and the money-out
        flows' tables (payouts, a refund, the balance).
    """
    with tempfile.TemporaryDirectory(prefix="pesa-demo-") as tmp:
        directory = workdir or Path(tmp)
        api_key = secrets.token_urlsafe(24)
        accounts = directory / "accounts.toml"
        accounts.write_text(DEMO_ACCOUNTS, encoding="utf-8")
        settings = demo_settings(f"sqlite:///{directory / 'demo.db'}", api_key, accounts)
        emulator = Emulator(EmulatorConfig(stk_delay=stk_delay))
        async with serve_gateway(settings, emulator=emulator) as gateway:
            headers = {"Authorization": f"Bearer {api_key}"}
            async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=30) as http:
                emulator_url = f"{gateway.emulator_url}"
                results, notes = await _walk(http, scenarios, timeout, emulator_url)
                receipts, more = await walk_receipts(http, emulator_url, timeout=timeout)
                paid = next((r for r in results if r.payment["status"] == "succeeded"), None)
                sections = [
                    await money_out(
                        http,
                        emulator_url,
                        refundable=None if paid is None else paid.payment["id"],
                        timeout=timeout,
                    )
                ]
                return results, notes + more, receipts, sections


async def _walk(
    http: httpx.AsyncClient, scenarios: Sequence[Scenario], timeout: float, emulator_url: str
) -> tuple[list[DemoResult], list[str]]:
    notes: list[str] = []
    results: list[DemoResult] = []
    for index, scenario in enumerate(scenarios):
        body = {
            "phone": scenario.phone,
            "amount": 10 + index,
            "account_reference": f"DEMO{index:03d}",
            "description": "pesa demo",
            "metadata": {"scenario": scenario.name},
        }
        key = f"demo-{index}-{secrets.token_hex(4)}"
        response = await http.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
        response.raise_for_status()
        payment = response.json()
        if index == 0:
            notes.append(await _check_idempotent_retry(http, body, key, payment["id"]))
        results.append(DemoResult(scenario, payment))
    with anyio.move_on_after(timeout):
        while True:
            for result in results:
                if result.payment["status"] not in TERMINAL:
                    reply = await http.get(f"/v1/payments/{result.payment['id']}")
                    reply.raise_for_status()
                    result.payment = reply.json()
            if all(r.payment["status"] in TERMINAL for r in results):
                # Give a duplicated callback time to arrive, so that "applied once" is
                # checked after the second delivery, not before it.
                await anyio.sleep(1.0)
                break
            await anyio.sleep(0.2)
    events = await _all_events(http)
    delivered = await _delivered_callbacks(http, emulator_url)
    for result in results:
        result.callbacks = delivered.get(str(result.payment.get("checkout_request_id")), 0)
        mine = [e for e in events if _event_payment_id(e) == result.payment["id"]]
        result.lifecycle = ["created", *(str(e["type"]).removeprefix("payment.") for e in mine)]
        result.problems = _judge(result, mine)
    return results, notes


async def _check_idempotent_retry(
    http: httpx.AsyncClient, body: dict[str, Any], key: str, payment_id: str
) -> str:
    again = await http.post("/v1/payments", json=body, headers={"Idempotency-Key": key})
    replayed = again.headers.get("Idempotent-Replayed") == "true"
    same = again.status_code < 300 and again.json().get("id") == payment_id
    conflict = await http.post(
        "/v1/payments",
        json={**body, "amount": body["amount"] + 1},
        headers={"Idempotency-Key": key},
    )
    if same and replayed and conflict.status_code == 409:
        return (
            "idempotent retry: same Idempotency-Key returned the same payment, no second push; "
            "same key with another amount refused with 409  [ok]"
        )
    return (
        f"idempotent retry FAILED: replay {again.status_code} same={same} replayed={replayed}, "
        f"conflict answered {conflict.status_code}"
    )


async def _delivered_callbacks(http: httpx.AsyncClient, emulator_url: str) -> dict[str, int]:
    """CheckoutRequestID → callbacks the emulator delivered (its control API)."""
    reply = await http.get(f"{emulator_url}/__emulator__/callbacks", params={"kind": "stk"})
    reply.raise_for_status()
    counts: dict[str, int] = {}
    for record in reply.json():
        stk = record.get("payload", {}).get("Body", {}).get("stkCallback", {})
        checkout_id = str(stk.get("CheckoutRequestID"))
        if record.get("delivered"):
            counts[checkout_id] = counts.get(checkout_id, 0) + 1
    return counts


async def _all_events(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        reply = await http.get("/v1/events", params=params)
        reply.raise_for_status()
        page = reply.json()
        events.extend(page["data"])
        after = page.get("next_cursor")
        if not after or not page["data"]:
            return events


def _event_payment_id(event: dict[str, Any]) -> str | None:
    # An event is {"id", "type", "created_at", "data": {"payment": {...}}}.
    data = event.get("data")
    payment = data.get("payment") if isinstance(data, dict) else None
    return str(payment["id"]) if isinstance(payment, dict) and "id" in payment else None


def _judge(result: DemoResult, events: list[dict[str, Any]]) -> list[str]:
    scenario, payment = result.scenario, result.payment
    problems: list[str] = []
    if payment["status"] != scenario.expected_status:
        problems.append(f"ended {payment['status']}, expected {scenario.expected_status}")
    if scenario.expected_code is not None and payment.get("result_code") != scenario.expected_code:
        problems.append(
            f"result code {payment.get('result_code')}, expected {scenario.expected_code}"
        )
    if scenario.expected_callbacks is not None and result.callbacks != scenario.expected_callbacks:
        problems.append(
            f"{result.callbacks} callbacks delivered, expected {scenario.expected_callbacks}"
        )
    if payment.get("flagged"):
        problems.append(f"flagged: {payment.get('flag_reason')}")
    successes = sum(1 for e in events if e.get("type") == "payment.succeeded")
    if scenario.expected_status == "succeeded" and successes != 1:
        problems.append(f"{successes} payment.succeeded events, expected exactly 1")
    return problems
