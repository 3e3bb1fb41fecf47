"""``pesa demo``, receipts part: customers paying the PayBill from the phone's menu.

The demo gateway has a second account, ``paybill`` (shortcode 600997, with an initiator),
whose C2B URLs it registers at start. The merchant says what it expects (expected
payments); customers pay the PayBill with an account number through the emulator's
control API (``POST /__emulator__/c2b/payments``: the "Lipa na M-Pesa" menu); Daraja's
confirmation reaches the gateway, which asks Transaction Status to confirm each receipt
before it counts. Each scenario is checked against what it promises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from pesa.daraja import SANDBOX_INITIATOR, SANDBOX_INITIATOR_PASSWORD, SANDBOX_PASSKEY

__all__ = [
    "DEMO_ACCOUNTS",
    "RECEIPT_SCENARIOS",
    "ReceiptScenario",
    "ReceiptScenarioResult",
    "walk_receipts",
]

DEMO_ACCOUNTS = f"""\
# The demo's Daraja accounts: STK pushes on the public sandbox shortcode, C2B on a PayBill.
default = "stk"

[accounts.stk]
shortcode = "174379"
passkey = "{SANDBOX_PASSKEY}"

[accounts.paybill]
shortcode = "600997"
initiator_name = "{SANDBOX_INITIATOR}"
initiator_password = "{SANDBOX_INITIATOR_PASSWORD}"
c2b_register = true
"""
"""Public sandbox values only: the demo never touches real money or real credentials."""

PAYBILL = "600997"


@dataclass(frozen=True, slots=True)
class ReceiptScenario:
    """A customer paying the PayBill, and what the gateway must make of it.

    Attributes:
        expected: the amount the merchant expects for ``reference`` (``None``: nothing).
        typed: the account number the customer types (as customers do: any case, spaces).
        paid: what the customer pays.
        status: the expected payment's status it must end in (``None``: no expected
            payment; the receipt must then be reported unmatched).
    """

    name: str
    reference: str
    typed: str
    expected: int | None
    paid: int
    status: str | None


RECEIPT_SCENARIOS: tuple[ReceiptScenario, ...] = (
    ReceiptScenario("invoice paid in full", "INV-1001", "inv 1001", 1500, 1500, "paid"),
    ReceiptScenario("invoice part-paid", "INV-1002", "INV1002", 2000, 500, "partially_paid"),
    ReceiptScenario("unknown account number", "NOSUCH-9", "NOSUCH-9", None, 100, None),
)


@dataclass(slots=True)
class ReceiptScenarioResult:
    """What happened to one customer's payment."""

    scenario: ReceiptScenario
    receipt: dict[str, Any] | None = None
    expected_payment: dict[str, Any] | None = None
    events: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether it ended as the scenario promises."""
        return not self.problems


async def walk_receipts(
    http: httpx.AsyncClient,
    emulator_url: str,
    *,
    scenarios: Sequence[ReceiptScenario] = RECEIPT_SCENARIOS,
    timeout: float = 30.0,
) -> tuple[list[ReceiptScenarioResult], list[str]]:
    """Run the receipts scenarios against a demo gateway (``http`` carries its API key).

    Returns:
        One result per scenario, and notes (the C2B URL registration).
    """
    notes = [await _registered(http, timeout)]
    results = [ReceiptScenarioResult(s) for s in scenarios]
    for result in results:
        scenario = result.scenario
        if scenario.expected is not None:
            created = await http.post(
                "/v1/expected-payments",
                json={
                    "account": "paybill",
                    "account_reference": scenario.reference,
                    "amount": scenario.expected,
                    "description": f"demo: {scenario.name}",
                },
                headers={"Idempotency-Key": f"demo-{scenario.reference}"},
            )
            created.raise_for_status()
            result.expected_payment = created.json()
        # The customer: Lipa na M-Pesa → Pay Bill → 600997 → account number → amount.
        paid = await http.post(
            f"{emulator_url}/__emulator__/c2b/payments",
            params={"wait": "10"},
            json={
                "shortcode": PAYBILL,
                "account_reference": scenario.typed,
                "amount": scenario.paid,
                "phone": "254708374149",
            },
        )
        paid.raise_for_status()
        trans_id = str(paid.json()["trans_id"])
        result.receipt = {"trans_id": trans_id, "status": "?"}
    with anyio.move_on_after(timeout):
        while True:
            settled = [await _refresh(http, r) for r in results]
            if all(settled):
                break
            await anyio.sleep(0.2)
    for result in results:
        result.problems = _judge(result)
    return results, notes


async def _registered(http: httpx.AsyncClient, timeout: float) -> str:
    with anyio.move_on_after(timeout):
        while True:
            listing = (await http.get("/v1/accounts")).json()["data"]
            paybill = next(a for a in listing if a["name"] == "paybill")
            registration = paybill.get("c2b_registration") or {}
            if registration.get("status") in ("registered", "failed"):
                mark = "ok" if registration["status"] == "registered" else "FAILED"
                return (
                    f"C2B URLs of PayBill {PAYBILL} registered at start: "
                    f"{registration.get('detail')}  [{mark}]"
                )
            await anyio.sleep(0.1)
    return f"C2B URL registration of PayBill {PAYBILL} FAILED: no answer in {timeout:g} s"


async def _refresh(http: httpx.AsyncClient, result: ReceiptScenarioResult) -> bool:
    """Read the receipt, its expected payment and events again; whether it is settled."""
    assert result.receipt is not None
    trans_id = result.receipt["trans_id"]
    found = await http.get(f"/v1/receipts/{trans_id}")
    if found.status_code == 404:
        return False
    found.raise_for_status()
    result.receipt = found.json()
    if result.expected_payment is not None:
        reply = await http.get(f"/v1/expected-payments/{result.expected_payment['id']}")
        reply.raise_for_status()
        result.expected_payment = reply.json()
    events = (await http.get("/v1/events", params={"limit": 1000})).json()["data"]
    mine = {result.receipt["id"]}
    if result.expected_payment is not None:
        mine.add(result.expected_payment["id"])
    result.events = [
        e["type"]
        for e in events
        if any(isinstance(v, dict) and v.get("id") in mine for v in e.get("data", {}).values())
    ]
    settled = result.receipt["status"] == "confirmed"
    if result.scenario.status is not None and result.expected_payment is not None:
        settled = settled and result.expected_payment["status"] == result.scenario.status
    return bool(settled)


def _judge(result: ReceiptScenarioResult) -> list[str]:
    scenario, receipt, expected = result.scenario, result.receipt, result.expected_payment
    problems: list[str] = []
    if receipt is None or receipt.get("status") != "confirmed":
        shown = None if receipt is None else receipt.get("status")
        problems.append(f"receipt {shown}, expected confirmed by Transaction Status")
        return problems
    if receipt.get("amount") != scenario.paid:
        problems.append(f"receipt of {receipt.get('amount')}, expected {scenario.paid}")
    if scenario.status is None:
        if receipt.get("expected_payment_id") is not None:
            problems.append("matched, but no payment was expected")
        if "receipt.unmatched" not in result.events:
            problems.append("no receipt.unmatched event")
    elif expected is None or expected.get("status") != scenario.status:
        shown = None if expected is None else expected.get("status")
        problems.append(f"expected payment {shown}, expected {scenario.status}")
    elif expected.get("paid_amount") != scenario.paid or expected.get("flagged"):
        problems.append(f"paid {expected.get('paid_amount')}, flagged {expected.get('flagged')}")
    if result.events.count("receipt.received") != 1:
        problems.append(f"{result.events.count('receipt.received')} receipt.received events")
    return problems
