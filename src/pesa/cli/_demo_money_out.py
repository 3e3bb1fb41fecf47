"""``pesa demo``, money going out: a payout, a payout whose Result is lost, a refund, a balance.

Runs against the same gateway and mounted emulator as the payments part of the demo
(:mod:`pesa.cli._demo`), speaking HTTP as a merchant's app would, and checks each flow
ends as promised: the payout paid once with its receipt and the recipient's name; the
payout whose Result the emulator drops settled by Transaction Status; the first successful
payment refunded in full; the balance read through its Result callback.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
import httpx

__all__ = ["DemoSection", "money_out"]

_OPEN = ("created", "pending", "unknown")
_LOST_RESULT_AMOUNT = 2_500


@dataclass(slots=True)
class DemoSection:
    """One table of the demo: a row per flow, and what did not end as promised."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every flow ended as promised."""
        return not self.problems


async def _wait(http: httpx.AsyncClient, path: str, timeout: float) -> dict[str, Any]:
    current: dict[str, Any] = {}
    with anyio.move_on_after(timeout):
        while True:
            reply = await http.get(path)
            reply.raise_for_status()
            current = reply.json()
            if current["status"] not in _OPEN:
                break
            await anyio.sleep(0.2)
    return current


async def _lifecycle(http: httpx.AsyncClient, subject_id: str) -> list[str]:
    reply = await http.get("/v1/events", params={"subject_id": subject_id, "limit": 100})
    reply.raise_for_status()
    return ["created", *(str(e["type"]).split(".", 1)[1] for e in reply.json()["data"])]


async def _payout(
    http: httpx.AsyncClient, amount: int, remarks: str, timeout: float
) -> dict[str, Any]:
    body = {"phone": "254708374149", "amount": amount, "remarks": remarks}
    key = f"demo-payout-{secrets.token_hex(4)}"
    reply = await http.post("/v1/payouts", json=body, headers={"Idempotency-Key": key})
    reply.raise_for_status()
    return await _wait(http, f"/v1/payouts/{reply.json()['id']}", timeout)


async def money_out(
    http: httpx.AsyncClient,
    emulator_url: str,
    *,
    refundable: str | None,
    timeout: float,
) -> DemoSection:
    """Run the money-out flows and judge them.

    Args:
        http: a client of the gateway (with its API key).
        emulator_url: the mounted emulator (its control API drops one Result).
        refundable: a succeeded payment to refund in full, if the demo has one.
        timeout: seconds each flow may take.
    """
    section = DemoSection(
        "pesa demo: money out (payouts, refund, balance)",
        ("flow", "id", "lifecycle", "KES", "receipt", "check"),
    )

    def add(flow: str, subject: dict[str, Any], lifecycle: list[str], problems: list[str]) -> None:
        section.problems.extend(f"{flow}: {p}" for p in problems)
        section.rows.append(
            (
                flow,
                str(subject.get("id", "-")),
                " → ".join(lifecycle),
                str(subject.get("amount", "-")),
                str(subject.get("receipt") or "-"),
                "[green]ok[/]" if not problems else "[red]" + "; ".join(problems) + "[/]",
            )
        )

    payout = await _payout(http, 1_500, "Demo payout", timeout)
    problems = []
    if payout.get("status") != "succeeded" or not payout.get("receipt"):
        problems.append(f"ended {payout.get('status')}, expected succeeded with a receipt")
    if not payout.get("recipient_name"):
        problems.append("no recipient name recorded")
    add("payout", payout, await _lifecycle(http, payout["id"]), problems)

    # The emulator carries the next such payout out but never delivers its Result.
    rule = await http.post(
        f"{emulator_url}/__emulator__/rules",
        json={"operation": "b2c", "amount": _LOST_RESULT_AMOUNT, "callback": "drop"},
    )
    rule.raise_for_status()
    lost = await _payout(http, _LOST_RESULT_AMOUNT, "Demo lost result", timeout)
    problems = []
    if lost.get("status") != "succeeded":
        problems.append(f"ended {lost.get('status')}, expected succeeded")
    elif "Transaction Status" not in str(lost.get("result_desc")):
        problems.append("not settled by Transaction Status")
    lifecycle = await _lifecycle(http, lost["id"])
    lifecycle[-1] += " (Transaction Status)"
    add("payout, Result lost", lost, lifecycle, problems)

    if refundable is not None:
        reply = await http.post(
            f"/v1/payments/{refundable}/refund",
            json={"remarks": "Demo refund"},
            headers={"Idempotency-Key": f"demo-refund-{secrets.token_hex(4)}"},
        )
        reply.raise_for_status()
        refund = await _wait(http, f"/v1/refunds/{reply.json()['id']}", timeout)
        problems = []
        if refund.get("status") != "succeeded" or not refund.get("receipt"):
            problems.append(f"ended {refund.get('status')}, expected succeeded with a receipt")
        add("refund of a payment", refund, await _lifecycle(http, refund["id"]), problems)
    else:
        section.problems.append("refund: no succeeded payment to refund")

    reply = await http.get("/v1/balance")
    problems = []
    balance: dict[str, Any] = {"id": "-"}
    if reply.status_code != 200:
        problems.append(f"GET /v1/balance answered {reply.status_code}")
    else:
        data = reply.json()
        utility = next((a for a in data["accounts"] if a["name"] == "Utility Account"), None)
        balance = {
            "id": data["request_id"],
            "amount": f"{Decimal(utility['available']):,.2f}" if utility else "-",
        }
        if utility is None:
            problems.append("no Utility Account in the balance")
    add("balance (Utility Account)", balance, ["asked", "Result received"], problems)
    return section
