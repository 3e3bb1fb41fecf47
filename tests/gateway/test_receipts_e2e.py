"""Receipts end to end: the real ``pesa serve`` (emulator mounted) with three accounts, customers
paying from the phone's menu through the emulator's control API, a merchant validation
server, signed webhooks; on SQLite and (with ``PESA_TEST_DATABASE_URL``) PostgreSQL.

One gateway per database runs every scenario, so that the suite stays quick: registration
at start, expected payments settled exactly, under- and over-paid, confirmations duplicated
30% of the time and applied once, validation accepting, rejecting and falling back when the
merchant is slow, a lost confirmation recovered by lookup, a forged confirmation refuted, and
an account without an initiator whose receipts count but are flagged.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa import verify_webhook
from pesa.emulator import EmulatorControl
from pesa.testing import c2b_payment_payload

from .processes import serve, webhook_receiver

pytestmark = pytest.mark.slow

API_KEY = "receipts-e2e-api-key-0123456789"
TOKEN = "receipts-e2e-callback-token-0123"
WEBHOOK_SECRET = "whsec_receipts_e2e_0123456789"
INITIATOR_PASSWORD = "Safaricom999!*!"

ACCOUNTS = """
default = "paybill"

[accounts.paybill]
shortcode = "600997"
passkey = "paybill-passkey"
initiator_name = "testapi"
initiator_password = { env = "TEST_INITIATOR_PASSWORD" }
c2b_register = true

[accounts.shop]
extends = "paybill"
till = "5123456"

[accounts.noinit]
shortcode = "600000"
c2b_register = true
c2b_version = 1
"""


@contextlib.contextmanager
def merchant() -> Iterator[str]:
    """The merchant's validation rule over HTTP: BAD-* rejected, SLOW-* answered too late."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            reference = str(body.get("account_reference") or "")
            verify_webhook(
                json.dumps(body, separators=(",", ":")).encode(),
                self.headers.get("Pesa-Signature", ""),
                WEBHOOK_SECRET,
            )
            if reference.startswith("SLOW"):
                time.sleep(3)
            answer: dict[str, Any] = {"accept": not reference.startswith("BAD")}
            if not answer["accept"]:
                answer["result_code"] = "C2B00012"
            data = json.dumps(answer).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                # The gateway stops waiting for a slow answer: writing it may find no one.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/validate"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_receipts_end_to_end(database_url: str, tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(ACCOUNTS, encoding="utf-8")
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(webhook_receiver())
        merchant_url = stack.enter_context(merchant())
        env = {
            "PESA_ENV": "emulator",
            "PESA_DATABASE_URL": database_url,
            "PESA_API_KEY": API_KEY,
            "PESA_CALLBACK_TOKEN": TOKEN,
            "PESA_ACCOUNTS_FILE": str(accounts),
            "TEST_INITIATOR_PASSWORD": INITIATOR_PASSWORD,
            "PESA_C2B_VALIDATION": "http",
            "PESA_C2B_VALIDATION_URL": merchant_url,
            "PESA_C2B_VALIDATION_TIMEOUT": "1",
            "PESA_C2B_VALIDATION_FALLBACK": "reject",
            "PESA_EMULATOR_RESULT_DELAY": "0.05",
            "PESA_RECONCILE_INTERVAL": "0.25",
            "PESA_RECONCILE_RECHECK_INTERVAL": "1",
            "PESA_RECONCILE_QUERY_RATE": "50",
            "PESA_RECONCILE_QUERY_BURST": "10",
            "PESA_WEBHOOK_URLS": receiver.url,
            "PESA_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PESA_WEBHOOK_INTERVAL": "0.5",
            "PESA_LOG": "warning",
        }
        _, url = stack.enter_context(serve(env))
        api = stack.enter_context(
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)
        )
        control = stack.enter_context(EmulatorControl(f"{url}/emulator", api_key=API_KEY))
        run_scenarios(api, control, url)
        check_webhooks(api, receiver)


def expect(api: httpx.Client, reference: str, amount: int, account: str | None = None) -> str:
    body: dict[str, Any] = {"account_reference": reference, "amount": amount}
    if account is not None:
        body["account"] = account
    response = api.post("/v1/expected-payments", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def expected(api: httpx.Client, expected_id: str) -> dict[str, Any]:
    data: dict[str, Any] = api.get(f"/v1/expected-payments/{expected_id}").json()
    return data


def settled(api: httpx.Client, expected_id: str, status: str) -> dict[str, Any]:
    return until(  # type: ignore[no-any-return]
        lambda: (e := expected(api, expected_id))["status"] == status and e,
        f"{expected_id} {status}",
    )


def receipts(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 500} if cursor is None else {**params, "cursor": cursor}
        page = api.get("/v1/receipts", params=query).json()
        found += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def run_scenarios(api: httpx.Client, control: EmulatorControl, url: str) -> None:
    # Registration at start: both accounts that register, on their own C2B versions.
    def registered() -> bool:
        listing = api.get("/v1/accounts").json()["data"]
        states = {a["name"]: (a["c2b_registration"] or {}).get("status") for a in listing}
        return states == {"paybill": "registered", "shop": None, "noinit": "registered"}

    until(registered, "C2B URLs registered at start")

    exact = expect(api, "INV-1", 1500)
    partial = expect(api, "INV-2", 1000)
    under = expect(api, "INV-3", 500)
    lost = expect(api, "LOST-1", 700)
    forged_target = expect(api, "INV-4", 900)
    unverified = expect(api, "NOINIT-1", 300, account="noinit")

    def pay(reference: str, amount: int, shortcode: str = "600997", **extra: Any) -> Any:
        return control.customer_pays(
            shortcode=shortcode, account_reference=reference, amount=amount, wait=10, **extra
        )

    # Exact, under, partial then over: typed as customers type them.
    pay("inv-1", 1500)
    pay("INV 2", 400)
    pay("INV3", 200)
    assert settled(api, exact, "paid")["paid_amount"] == 1500
    assert settled(api, under, "partially_paid")["outstanding_amount"] == 300
    settled(api, partial, "partially_paid")
    pay("INV-2", 600)
    settled(api, partial, "paid")
    pay("INV-2", 50)
    over = settled(api, partial, "overpaid")
    assert (over["paid_amount"], over["overpaid_amount"], len(over["receipts"])) == (1050, 50, 3)
    assert all(r["status"] == "confirmed" and r["verified"] for r in over["receipts"])
    assert not over["flagged"]

    # 30% of confirmations delivered twice: each applied once.
    rng = random.Random(9)
    references = [f"DUP-{n:02d}" for n in range(20)]
    doubled = set(rng.sample(references, 6))
    for reference in doubled:
        control.add_rule(operation="c2b", account_reference=reference, callback="duplicate")
    paid = {reference: pay(reference, 10 + n) for n, reference in enumerate(references)}
    assert all(p.status == "completed" for p in paid.values())
    trans_ids = {p.trans_id for p in paid.values()}
    until(
        lambda: (
            {r["trans_id"] for r in receipts(api) if r["account_reference"] in paid} >= trans_ids
        ),
        "every duplicated confirmation recorded",
    )
    mine = [r for r in receipts(api) if r["account_reference"] in paid]
    assert sorted(r["trans_id"] for r in mine) == sorted(trans_ids)  # once each
    sent = Counter(
        c.payload["TransID"]
        for c in control.callbacks("c2b_confirmation")
        if c.delivered and c.payload.get("TransID") in trans_ids
    )
    assert sum(sent.values()) == len(trans_ids) + len(doubled)
    # No expected payment has these references: each receipt says so.
    until(
        lambda: all(r["status"] == "confirmed" for r in receipts(api, account_reference="DUP-00")),
        "dup confirmed",
    )

    # Validation: the merchant rejects BAD-*, and SLOW-* misses the 1 s budget (fallback).
    rejected = pay("BAD-1", 100)
    assert (rejected.status, rejected.result_code) == ("rejected", "C2B00012")
    slow = pay("SLOW-1", 100)
    assert (slow.status, slow.result_code) == ("rejected", "C2B00016")
    assert receipts(api, account_reference="BAD-1") == []
    assert receipts(api, account_reference="SLOW-1") == []

    # A confirmation that never arrives, recovered by "I paid, here is my code".
    control.add_rule(operation="c2b", account_reference="LOST-1", callback="drop")
    gone = pay("LOST-1", 700)
    assert gone.status == "completed" and not gone.notified
    started = api.post(
        "/v1/receipts/lookup",
        json={"trans_id": gone.trans_id.lower(), "account_reference": "LOST-1"},
    )
    assert started.status_code == 202, started.text
    lookup_id = started.json()["lookup"]["id"]
    found = until(
        lambda: (
            (r := api.get(f"/v1/receipts/lookups/{lookup_id}").json())["lookup"]["outcome"]
            != "sent"
            and r
        ),
        "the lookup found the receipt",
    )
    assert found["lookup"]["outcome"] == "confirmed"
    assert (found["receipt"]["status"], found["receipt"]["source"]) == ("confirmed", "lookup")
    assert settled(api, lost, "paid")["receipts"][0]["trans_id"] == gone.trans_id
    again = api.post("/v1/receipts/lookup", json={"trans_id": gone.trans_id})
    assert again.status_code == 200 and again.json()["lookup"] is None

    # A forged confirmation (the token leaked): recorded, refuted by Daraja, never paid.
    forged = c2b_payment_payload(
        trans_id="FORGED0001", amount="900.00", shortcode="600997", bill_ref_number="INV-4"
    )
    answer = httpx.post(f"{url}/callbacks/{TOKEN}/c2b/confirmation", json=forged)
    assert answer.status_code == 200
    refuted = until(
        lambda: (r := api.get("/v1/receipts/FORGED0001").json())["status"] == "refuted" and r,
        "the forged receipt refuted",
    )
    assert refuted["flagged"] and "does not exist" in refuted["flag_reason"]
    target = expected(api, forged_target)
    assert (target["status"], target["paid_amount"], target["flagged"]) == ("open", 0, True)
    # A forged Transaction Status result without its query's own secret: refused.
    status_forgery = httpx.post(f"{url}/callbacks/{TOKEN}/c2b/status/guessed", json={})
    assert status_forgery.status_code == 404

    # No initiator: counted (money shown), flagged as not confirmed by Daraja. C2B v1: the
    # MSISDN is a hash, and a phone filter still finds the receipt.
    pay("NOINIT-1", 300, shortcode="600000", phone="254712345678")
    noinit = settled(api, unverified, "paid")
    assert noinit["flagged"] and "without Daraja's confirmation" in noinit["flag_reason"]
    assert noinit["receipts"][0]["status"] == "unverified"
    assert len(noinit["receipts"][0]["msisdn"]) == 64
    by_phone = receipts(api, phone="0712 345 678")
    assert [r["account_reference"] for r in by_phone] == ["NOINIT-1"]


def check_webhooks(api: httpx.Client, receiver: Any) -> None:
    """Every receipt was told once as received, every settlement by webhook, all signed."""
    every = receipts(api)

    def delivered() -> bool:
        types = Counter(e["type"] for e in receiver.events())
        return types["receipt.received"] >= len(every) and types["expected_payment.paid"] >= 4

    until(delivered, "webhooks delivered")
    events = receiver.events()
    for headers, body in list(receiver.received):
        verify_webhook(body, headers["Pesa-Signature"], WEBHOOK_SECRET)
    first_seen: Counter[str] = Counter()
    for event in {e["id"]: e for e in events}.values():
        if event["type"] == "receipt.received":
            first_seen[event["data"]["receipt"]["trans_id"]] += 1
    assert set(first_seen.values()) == {1}
    assert set(first_seen) == {r["trans_id"] for r in every}
    types = {e["type"] for e in events}
    assert {
        "receipt.confirmed",
        "receipt.refuted",
        "receipt.unmatched",
        "expected_payment.partially_paid",
        "expected_payment.overpaid",
        "expected_payment.flagged",
    } <= types
