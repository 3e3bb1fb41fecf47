"""Fixtures of the dashboard tests: a live gateway with operators and payments in each state.

One gateway per test module (started once, SQLite in a temporary directory): the emulator
is mounted, the reconciler waits an hour before querying (so "ask Daraja now" is what
settles a payment whose callback is lost), and webhooks go to a closed loopback port with
one attempt each (so deliveries fail at once and can be redelivered). 127.0.0.1 is a
trusted proxy: each HTTP test client claims its own X-Forwarded-For address, so the
sign-in throttle of one test never blocks another.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pesa import Settings
from pesa.daraja import NAIROBI
from pesa.emulator import Emulator, EmulatorConfig
from pesa.ledger import Ledger, OperatorStore, PayoutSpec, ReceiptAccount, StatusAnswer
from pesa.testing import (
    RunningGateway,
    c2b_payment_payload,
    run_gateway,
    stk_callback_payload,
)

API_KEY = "dashboard-test-api-key-0123"
PASSWORD = "correct horse battery"
OPERATOR = "otto"
LOST_PHONE = "254711000404"
FLAG_PHONE = "254711000405"
VIEWER = "vera"
_addresses = itertools.count(1)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "env": "emulator",
        "base_url": None,
        "database_url": database_url,
        "api_key": API_KEY,
        "callback_token": "dashboard-test-callback-token-0123",
        "public_url": None,
        "callback_allowlist": "off",
        "callback_on_mismatch": "flag",
        "trusted_proxies": ("127.0.0.1",),
        "run_workers": True,
        "auto_migrate": True,
        "reconcile_interval": 0.2,
        "reconcile_min_age": 3600.0,
        "reconcile_deadline": 7200.0,
        "reconcile_query_rate": 50.0,
        "reconcile_query_burst": 10,
        "webhook_urls": [f"http://127.0.0.1:{closed_port()}/hooks"],
        "webhook_secret": "dashboard-test-webhook-secret",
        "webhook_max_attempts": 1,
        "webhook_interval": 0.5,
        "webhook_timeout": 2.0,
        "dashboard_max_sign_in_failures": 3,
        "dashboard_refresh_interval": 0.5,
        # Refunds of a part (the refund form's amount).
        "refund_partial": "allow",
    }
    values.update(overrides)
    return Settings(**values)


def add_operators(database_url: str) -> None:
    async def add() -> None:
        ledger = await Ledger.open(database_url)
        try:
            await ledger.migrate()
            store = OperatorStore(ledger.engine)
            await store.add_operator(OPERATOR, "operator", PASSWORD)
            await store.add_operator(VIEWER, "viewer", PASSWORD)
        finally:
            await ledger.close()

    anyio.run(add)


SHORTCODE = "174379"
RECEIPTS: dict[str, tuple[str, str, str, str]] = {
    # name: (TransID, amount, account number as typed, MSISDN as C2B v2 masks it)
    "settled": ("RCP1000001", "500.00", "INV-100", "2547 ***** 149"),
    "under": ("RCP2000002", "400.00", "inv 200", "2547 ***** 233"),
    "over": ("RCP3000003", "250.00", "INV-300", "2547 ***** 377"),
    "unknown_reference": ("RCP4000004", "75.00", "NO-SUCH-REF", "2547 ***** 481"),
    "refuted": ("RCP5000005", "999.00", "INV-100", "2547 ***** 590"),
}


async def seed_money(database_url: str) -> dict[str, str]:
    """Expected payments and C2B receipts (one settling, one under, one over, one with an
    account number nobody expects, one Daraja refutes) and a payout left unknown, written
    through the ledger before the gateway starts. Returns ids by name."""
    ledger = await Ledger.open(database_url)
    ids: dict[str, str] = {}
    try:
        book = ledger.receipts
        for key, reference, amount in (
            ("exp-100", "INV-100", 500),
            ("exp-200", "INV-200", 1000),
            ("exp-300", "INV-300", 200),
        ):
            expected, _ = await book.create_expected_payment(
                key, "default", reference, amount, f"Invoice {reference}", None
            )
            ids[key] = expected.id
        paid_at = datetime.now(NAIROBI) - timedelta(minutes=len(RECEIPTS))
        for name, (trans_id, amount, reference, msisdn) in RECEIPTS.items():
            paid_at += timedelta(minutes=1)
            body = c2b_payment_payload(
                trans_id=trans_id,
                amount=amount,
                shortcode=SHORTCODE,
                bill_ref_number=reference,
                msisdn=msisdn,
                trans_time=paid_at.strftime("%Y%m%d%H%M%S"),
            )
            outcome = await book.ingest_confirmation(
                json.dumps(body).encode(),
                source_ip="196.201.214.200",
                account_for=lambda _: ReceiptAccount("default", verifiable=True),
            )
            assert outcome.receipt is not None, outcome
            answer = (
                StatusAnswer("2032", "The transaction receipt number does not exist.")
                if name == "refuted"
                else StatusAnswer(
                    "0",
                    "The service request is processed successfully.",
                    amount=Decimal(amount),
                    transaction_status="Completed",
                    credit_party=f"{SHORTCODE} - Test Shop",
                    debit_party="254708374149 - John Doe",
                    receipt_no=trans_id,
                )
            )
            ids[name] = (await book.apply(outcome.receipt.id, answer)).id
        payout, _ = await ledger.payouts.create(
            "lost-payout",
            PayoutSpec(
                phone="254708374149",
                amount=2500,
                command_id="BusinessPayment",
                remarks="Refund of deposit",
                account="default",
                shortcode=SHORTCODE,
            ),
            claim=timedelta(minutes=1),  # "sent" (an attempt counted) and never answered
        )
        await ledger.payouts.mark_unknown(payout.id, "no answer from Daraja (test)")
        # Past its deadline: flagged, still unknown, no longer checked: a person decides.
        ids["unknown_payout"] = (await ledger.payouts.expire(payout.id)).id
    finally:
        await ledger.close()
    return ids


@dataclass
class World:
    """A running gateway and the payments, receipts and payouts made on it, by name."""

    gateway: RunningGateway
    database_url: str
    payments: dict[str, dict[str, Any]]
    money: dict[str, str] = field(default_factory=dict)
    payouts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.gateway.url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=15,
        )

    def payment(self, name: str) -> dict[str, Any]:
        with self.api() as api:
            response = api.get(f"/v1/payments/{self.payments[name]['id']}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            return body


def create_payment(api: httpx.Client, phone: str, amount: int, reference: str) -> dict[str, Any]:
    response = api.post(
        "/v1/payments",
        json={
            "phone": phone,
            "amount": amount,
            "account_reference": reference,
            "description": "Test order",
        },
        headers={"Idempotency-Key": f"{reference}-{time.monotonic_ns()}"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(
    api: httpx.Client, payment_id: str, check: Any, timeout: float = 30.0
) -> dict[str, Any]:
    """Poll a payment until ``check`` holds. After a few seconds without it, ask Daraja
    (``/refresh``) on each round too: on a loaded machine the emulator's callback can miss
    its timeout, and the reconciler of these gateways waits an hour before querying."""
    start = time.monotonic()
    while True:
        payment: dict[str, Any] = api.get(f"/v1/payments/{payment_id}").json()
        if check(payment):
            return payment
        elapsed = time.monotonic() - start
        assert elapsed < timeout, f"payment never got there: {payment}"
        if elapsed > 3.0:
            api.post(f"/v1/payments/{payment_id}/refresh")
            time.sleep(0.2)
        time.sleep(0.05)


def flag_by_callback(gateway: RunningGateway, payment: dict[str, Any], paid: int) -> None:
    """Deliver Daraja-shaped callbacks for a payment whose own callback was lost: one
    forged (another MerchantRequestID: refused), then one paying a different amount (kept as
    evidence; the reconciler's STK query then settles the payment, flagged)."""
    with httpx.Client(timeout=10) as client:
        forged = stk_callback_payload(
            checkout_request_id=payment["checkout_request_id"],
            merchant_request_id="forged-merchant-request",
            amount=paid,
        )
        assert client.post(gateway.callback_url, json=forged).status_code >= 400
        real = stk_callback_payload(
            checkout_request_id=payment["checkout_request_id"],
            merchant_request_id=payment["merchant_request_id"],
            amount=paid,
            receipt="FLG1234567",
            phone=int(payment["phone"]),
        )
        assert client.post(gateway.callback_url, json=real).status_code == 200


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A gateway with: a paid, a cancelled, a pending (callback lost) and a flagged payment;
    every webhook delivery failing.

    A test module may define ``async def seed_before_gateway(database_url)``: it runs on the
    migrated database before the gateway (and its reconciler) starts.
    """
    directory: Path = tmp_path_factory.mktemp("dashboard")
    database_url = f"sqlite:///{directory / 'dashboard.db'}"
    add_operators(database_url)
    seed = getattr(request.module, "seed_before_gateway", None)
    if seed is not None:
        anyio.run(seed, database_url)
    money = anyio.run(seed_money, database_url)
    emulator = Emulator(EmulatorConfig(stk_delay=0.1, seed=11, callback_retries=2))
    # Customers who pay but whose callbacks never arrive (one open push per phone: Daraja
    # refuses a second push to a phone whose prompt is still open).
    for phone in (LOST_PHONE, FLAG_PHONE):
        emulator.add_rule(phone=phone, result_code=0, callback="drop")
    with run_gateway(dashboard_settings(database_url), emulator=emulator) as gateway:
        payments: dict[str, dict[str, Any]] = {}
        with httpx.Client(
            base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15
        ) as api:
            payments["paid"] = create_payment(api, "0708374149", 150, "ORDER-PAID")
            payments["cancelled"] = create_payment(api, "254700001032", 70, "ORDER-CANCEL")
            payments["pending"] = create_payment(api, LOST_PHONE, 90, "ORDER-LOST")
            payments["flagged"] = create_payment(api, FLAG_PHONE, 10, "ORDER-FLAG")
            for name in ("paid", "cancelled"):
                payments[name] = wait_for(
                    api, payments[name]["id"], lambda p: p["status"] in ("succeeded", "failed")
                )
            flag_by_callback(gateway, payments["flagged"], paid=20)
            payments["flagged"] = wait_for(api, payments["flagged"]["id"], lambda p: p["flagged"])
            payouts = {
                "salary": api.post(
                    "/v1/payouts",
                    json={"phone": "0708374149", "amount": 1500, "remarks": "Salary"},
                    headers={"Idempotency-Key": "salary-1"},
                ).json()
            }
            batch = api.post(
                "/v1/payouts/batches",
                json={
                    "batch_id": "december-bonus",
                    "payouts": [
                        {"phone": f"07110002{i:02d}", "amount": 100 + i, "remarks": "Bonus"}
                        for i in range(3)
                    ],
                },
            )
            assert batch.status_code == 202, batch.text
        yield World(gateway, database_url, payments, money, payouts)


class Browserless:
    """An HTTP client that signs in to the dashboard like a browser (cookies, CSRF)."""

    def __init__(self, world: World) -> None:
        self.world = world
        # A distinct client address per session (believed: 127.0.0.1 is a trusted proxy).
        n = next(_addresses)
        self.address = f"10.77.{n // 250}.{n % 250 + 1}"
        self.client = httpx.Client(
            base_url=world.gateway.url,
            headers={"X-Forwarded-For": self.address},
            follow_redirects=False,
            timeout=15,
        )
        self.csrf = ""

    def close(self) -> None:
        self.client.close()

    def sign_in_form(self) -> str:
        page = self.client.get("/dashboard/sign-in")
        assert page.status_code == 200
        return csrf_of(page.text)

    def sign_in(self, name: str, password: str = PASSWORD) -> httpx.Response:
        token = self.sign_in_form()
        response = self.client.post(
            "/dashboard/sign-in",
            data={"username": name, "password": password, "csrf_token": token},
        )
        if response.status_code == 303:
            self.csrf = csrf_of(self.client.get("/dashboard/payments").text)
        return response

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def post(
        self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> httpx.Response:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf
        return self.client.post(path, data=form)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def browserless(world: World) -> Iterator[Browserless]:
    client = Browserless(world)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def operator(browserless: Browserless) -> Browserless:
    assert browserless.sign_in(OPERATOR).status_code == 303
    return browserless


@pytest.fixture
def viewer(world: World) -> Iterator[Browserless]:
    client = Browserless(world)
    assert client.sign_in(VIEWER).status_code == 303
    try:
        yield client
    finally:
        client.close()
