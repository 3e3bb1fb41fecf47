"""Small helpers shared by the gateway tests."""

from __future__ import annotations

import secrets
from typing import Any

import anyio
import httpx

TERMINAL = frozenset({"succeeded", "failed", "rejected"})


def payment_body(phone: str = "254708374149", amount: int = 10, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phone": phone,
        "amount": amount,
        "account_reference": "INV0042",
        "description": "Test payment",
    }
    body.update(extra)
    return body


async def create(
    api: httpx.AsyncClient, phone: str = "254708374149", amount: int = 10, **extra: Any
) -> dict[str, Any]:
    key = extra.pop("key", None) or secrets.token_hex(8)
    response = await api.post(
        "/v1/payments", json=payment_body(phone, amount, **extra), headers={"Idempotency-Key": key}
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def wait_for(
    api: httpx.AsyncClient,
    payment_id: str,
    statuses: frozenset[str] | set[str] = TERMINAL,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Poll a payment until its status is one of ``statuses``."""
    payment: dict[str, Any] = {}
    with anyio.fail_after(timeout):
        while True:
            response = await api.get(f"/v1/payments/{payment_id}")
            assert response.status_code == 200, response.text
            payment = response.json()
            if payment["status"] in statuses:
                return payment
            await anyio.sleep(0.05)


async def events_of(
    api: httpx.AsyncClient, payment_id: str, at_least: int = 0, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Every event of one payment, oldest first.

    On PostgreSQL the feed shows an event once every older transaction has ended, so a
    caller that knows how many to expect waits for ``at_least`` of them.
    """
    with anyio.fail_after(timeout):
        while True:
            events = await _events_once(api, payment_id)
            if len(events) >= at_least:
                return events
            await anyio.sleep(0.05)


async def _events_once(api: httpx.AsyncClient, payment_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "payment_id": payment_id}
        if after:
            params["after"] = after
        page = (await api.get("/v1/events", params=params)).json()
        events.extend(page["data"])
        after = page["next_cursor"]
        if not after or not page["data"]:
            return events
