"""The dashboard in a real browser: Playwright driving headless Chromium (Debian's package).

One browser and one gateway for the whole module. Each test opens pages that fail the test
on any console error, and saves a screenshot of each page it visits (into
``$PESA_SCREENSHOTS`` when set — ``make screenshots`` writes ``docs/screenshots`` — or a
temporary directory).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa.ledger import Ledger
from pesa.testing import FrozenClock, stk_callback_payload, stk_failure_payload

from .conftest import API_KEY, OPERATOR, PASSWORD, World, create_payment

playwright_api = pytest.importorskip("playwright.sync_api")

# One browser and one gateway: every test of this module runs on one xdist worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("dashboard-browser")]

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        message = "Chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI"):
            pytest.fail(message + ", so CI must have it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser(scene: World) -> Iterator[Any]:
    # After the gateway and its data: Playwright's sync API runs an event loop in this
    # thread from here on, and the setup above needs its own.
    del scene
    executable = _chromium()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("PESA_SCREENSHOTS")
    directory = Path(target) if target else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


async def seed_before_gateway(database_url: str, days: int = 13, per_day: int = 5) -> None:
    """Two weeks of past payments, written through the ledger with a clock set back
    (before the gateway starts: its reconciler would expire them half-written)."""
    now = datetime.now(UTC)
    clock = FrozenClock(now)
    ledger = await Ledger.open(database_url, clock=clock)
    draw = random.Random(7)
    try:
        for day in range(days, 0, -1):
            for n in range(per_day + draw.randint(0, 4)):
                clock.set(now - timedelta(days=day, hours=draw.randint(0, 8), minutes=n))
                amount = draw.choice((50, 120, 300, 450, 1000, 2500))
                phone = f"25472{draw.randint(1000000, 9999999)}"
                payment, _ = await ledger.create_payment(
                    None, phone, amount, f"INV{day:02d}{n}", "Shop order"
                )
                cid, mid = f"ws_CO_hist_{day}_{n}", f"hist-{day}-{n}"
                await ledger.mark_accepted(payment.id, cid, mid)
                clock.advance(seconds=20)
                outcome = draw.choice((0,) * 14 + (1032, 1032, 1032, 1, 1, 1037, 2001, None))
                if outcome is None:
                    await ledger.expire(payment.id)
                    continue
                body = (
                    stk_callback_payload(
                        checkout_request_id=cid,
                        merchant_request_id=mid,
                        amount=amount,
                        receipt=f"HST{day:02d}{n:03d}XY",
                        phone=int(phone),
                    )
                    if outcome == 0
                    else stk_failure_payload(
                        outcome, checkout_request_id=cid, merchant_request_id=mid
                    )
                )
                await ledger.ingest_stk_callback(json.dumps(body).encode(), source_ip=None)
    finally:
        await ledger.close()


@pytest.fixture(scope="module")
def scene(world: World) -> World:
    """A few more outcomes today, so that the overview has something to draw."""
    with world.api() as api:
        for phone, amount in (
            ("254700000001", 500),  # insufficient funds
            ("254700001037", 250),  # unreachable
            ("254700002001", 80),  # wrong PIN
            ("254722000101", 1200),
            ("0110 000 101", 300),
        ):
            create_payment(api, phone, amount, f"SHOP-{amount}")
    return world


@pytest.fixture(scope="module")
def signed_in_state(browser: Any, scene: World) -> dict[str, Any]:
    """A signed-in browser state, made through the sign-in form (as a person does)."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    page.goto(f"{scene.gateway.url}/dashboard/")
    page.fill("input[name=username]", OPERATOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{scene.gateway.url}/dashboard/")
    state: dict[str, Any] = context.storage_state()
    context.close()
    return state


Opener = Callable[..., Any]


@pytest.fixture
def open_page(browser: Any, scene: World, signed_in_state: dict[str, Any]) -> Iterator[Opener]:
    """Open dashboard pages in a signed-in context; any console error fails the test."""
    errors: list[str] = []
    contexts: list[Any] = []

    def opener(path: str, *, viewport: dict[str, int] = WIDE, signed_in: bool = True) -> Any:
        context = browser.new_context(
            viewport=viewport,
            storage_state=signed_in_state if signed_in else None,
            accept_downloads=True,
        )
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(scene.gateway.url + path)
        return page

    yield opener
    for context in contexts:
        context.close()
    assert errors == [], errors


def _live_wait(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the page did not update"
        time.sleep(0.1)


def test_sign_in(browser: Any, scene: World, shots: Path) -> None:
    context = browser.new_context(viewport=WIDE)
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{scene.gateway.url}/dashboard/payments?q=0708374149")
        assert "/dashboard/sign-in" in page.url
        page.screenshot(path=str(shots / "sign-in.png"))
        page.fill("input[name=username]", OPERATOR)
        page.fill("input[name=password]", "wrong password here")
        page.click("button[type=submit]")
        assert page.get_by_role("alert").inner_text() == "Wrong name or password."
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r".*/dashboard/payments\?q=0708374149$"))
        assert page.get_by_role("link", name="254708374149").count() == 1
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(re.compile(r".*/dashboard/sign-in.*"))
        assert "You are signed out." in page.content()
    finally:
        context.close()
    # The sign-in page logs nothing; a wrong password is a 401 answer, which Chromium
    # reports as a failed resource load, and nothing else.
    assert all("401" in e for e in errors), errors


def test_overview(open_page: Opener, shots: Path) -> None:
    page = open_page("/dashboard/")
    assert page.locator("svg.chart").count() == 2
    assert page.get_by_text("success rate").is_visible()
    page.screenshot(path=str(shots / "overview.png"), full_page=True)


def test_find_a_payment_by_typing_its_phone(open_page: Opener, scene: World, shots: Path) -> None:
    page = open_page("/dashboard/payments")
    paid, cancelled = scene.payments["paid"]["id"], scene.payments["cancelled"]["id"]
    rows = page.locator("table.payments tbody")
    assert cancelled in rows.inner_text()
    # Typed the way people say it; the list follows without pressing Enter.
    page.get_by_label("Search").press_sequentially("0708 374 149", delay=20)
    _live_wait(lambda: paid in (shown := rows.inner_text()) and cancelled not in shown)
    assert "q=0708+374+149" in page.url
    page.screenshot(path=str(shots / "payments.png"), full_page=True)


def test_open_a_payments_timeline(open_page: Opener, scene: World, shots: Path) -> None:
    page = open_page("/dashboard/payments?q=0708374149")
    page.get_by_role("link", name="254708374149").first.click()
    page.wait_for_url(re.compile(rf".*/dashboard/payments/{scene.payments['paid']['id']}$"))
    timeline = page.locator("ol.timeline")
    for text in (
        "Payment requested (STK push)",
        "Daraja accepted the push",
        "Callback received (applied)",
        "Event payment.succeeded",
        "Webhook failed",
    ):
        assert text in timeline.inner_text(), text
    page.screenshot(path=str(shots / "payment.png"), full_page=True)


def test_ask_daraja_now(open_page: Opener, scene: World, shots: Path) -> None:
    pending = scene.payments["pending"]["id"]
    page = open_page(f"/dashboard/payments/{pending}")
    assert page.locator(".headline .status").first.inner_text() == "pending"
    deadline = time.monotonic() + 20
    while True:
        page.get_by_role("button", name="Ask Daraja now").click()
        page.wait_for_load_state()
        if "Daraja answered: the payment is settled." in page.content():
            break
        assert time.monotonic() < deadline, "Daraja never settled the payment"
        time.sleep(0.3)
    assert page.locator(".headline .status").first.inner_text() == "succeeded"
    timeline = page.locator("ol.timeline").inner_text()
    assert "Operator action: refresh" in timeline and "STK query: succeeded" in timeline
    page.screenshot(path=str(shots / "ask-daraja-now.png"), full_page=True)


def test_resolve_a_flag_with_a_note(open_page: Opener, scene: World, shots: Path) -> None:
    flagged = scene.payments["flagged"]["id"]
    page = open_page(f"/dashboard/payments/{flagged}")
    assert page.locator(".flag").is_visible()
    assert "amount 20 differs from requested 10" in page.locator(".flag").inner_text()
    page.screenshot(path=str(shots / "flagged-payment.png"), full_page=True)
    page.get_by_label("What did you find or do?").fill(
        "M-Pesa statement shows KES 20 paid; refunded KES 10 by hand"
    )
    page.get_by_role("button", name="Resolve flag").click()
    page.wait_for_url(re.compile(r".*notice=flag-resolved$"))
    assert page.get_by_role("status").inner_text().startswith("Flag resolved.")
    assert page.locator(".flag").count() == 0
    timeline = page.locator("ol.timeline").inner_text()
    assert "Event payment.flag_resolved" in timeline
    assert "refunded KES 10 by hand" in timeline
    with scene.api() as api:
        assert api.get(f"/v1/payments/{flagged}").json()["flagged"] is False


def test_export_csv(open_page: Opener, scene: World) -> None:
    page = open_page("/dashboard/payments?status=failed")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert download.suggested_filename.startswith("pesa-payments-")
    assert download.suggested_filename.endswith(".csv")
    text = Path(download.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and {row["status"] for row in rows} == {"failed"}
    assert scene.payments["cancelled"]["id"] in {row["id"] for row in rows}


def test_lists_update_live(open_page: Opener, scene: World, shots: Path) -> None:
    page = open_page("/dashboard/payments")
    rows = page.locator("table.payments tbody")
    with httpx.Client(
        base_url=scene.gateway.url, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as api:
        fresh = create_payment(api, "254799000111", 42, "LIVE-42")
    _live_wait(lambda: fresh["id"] in rows.inner_text())
    attention = open_page("/dashboard/attention")
    assert attention.get_by_role("heading", name="Failing webhooks").is_visible()
    attention.screenshot(path=str(shots / "attention.png"), full_page=True)
    attention.get_by_role("button", name="Redeliver").first.click()
    attention.wait_for_url(re.compile(r".*/dashboard/attention\?notice=redelivered$"))
    audit = open_page("/dashboard/audit")
    assert "redeliver" in audit.locator("table").inner_text()
    audit.screenshot(path=str(shots / "audit.png"), full_page=True)


def test_refund_a_payment_with_a_note(open_page: Opener, scene: World, shots: Path) -> None:
    """From the payment's page: part of it back, with a note; the refund shows in the
    timeline (with its outcome, live) and in the audit log."""
    paid = scene.payments["paid"]["id"]
    page = open_page(f"/dashboard/payments/{paid}")
    amount = page.get_by_label("Amount to refund (KES)")
    assert amount.input_value() == "150"  # what remains, as the ledger says
    amount.fill("40")
    page.get_by_label("Why does the money go back?").fill("Customer returned one of three mugs")
    page.screenshot(path=str(shots / "refund-form.png"), full_page=True)
    page.get_by_role("button", name="Refund", exact=True).click()
    page.wait_for_url(re.compile(r".*notice=refund-started$"))
    assert page.get_by_role("status").inner_text().startswith("Refund sent to M-Pesa.")
    timeline = page.locator("ol.timeline")
    assert "Customer returned one of three mugs" in timeline.inner_text()
    # The reversal's Result arrives; the page follows without a reload.
    _live_wait(lambda: "Refund of KES 40: succeeded" in timeline.inner_text(), timeout=30)
    page.reload()
    assert page.get_by_label("Amount to refund (KES)").input_value() == "110"
    page.screenshot(path=str(shots / "payment-refunded.png"), full_page=True)
    page.get_by_role("link", name="Refund of KES 40: succeeded").click()
    page.wait_for_url(re.compile(r".*/dashboard/refunds/rf_.*"))
    assert "Refund requested (reversal)" in page.locator("ol.timeline").inner_text()
    page.screenshot(path=str(shots / "refund.png"), full_page=True)
    audit = open_page("/dashboard/audit")
    row = audit.locator("tr", has_text="Customer returned one of three mugs")
    assert row.count() == 1 and "refund" in row.inner_text() and OPERATOR in row.inner_text()
    refunds = open_page("/dashboard/refunds")
    assert paid in refunds.locator("table.refunds").inner_text()
    refunds.screenshot(path=str(shots / "refunds.png"), full_page=True)


def test_find_a_receipt_and_open_it(open_page: Opener, scene: World, shots: Path) -> None:
    page = open_page("/dashboard/receipts")
    rows = page.locator("table.receipts tbody")
    for text in ("paid", "partially paid", "overpaid", "unknown reference", "refuted"):
        assert text in rows.inner_text(), text
    page.screenshot(path=str(shots / "receipts.png"), full_page=True)
    page.get_by_label("Search").press_sequentially("0708 374 149", delay=20)
    _live_wait(lambda: "RCP2000002" not in rows.inner_text())
    assert "RCP1000001" in rows.inner_text()
    page.get_by_role("link", name="RCP1000001").click()
    page.wait_for_url(re.compile(rf".*/dashboard/receipts/{scene.money['settled']}$"))
    timeline = page.locator("ol.timeline").inner_text()
    assert "c2b confirm" in timeline and "Event receipt.confirmed" in timeline
    page.screenshot(path=str(shots / "receipt.png"), full_page=True)
    expected = open_page("/dashboard/expected")
    assert "INV-200" in expected.locator("table.expected").inner_text()
    expected.screenshot(path=str(shots / "expected.png"), full_page=True)


def test_open_payouts_and_a_payouts_timeline(open_page: Opener, scene: World, shots: Path) -> None:
    page = open_page("/dashboard/payouts")
    rows = page.locator("table.payouts tbody")
    assert scene.payouts["salary"]["id"] in rows.inner_text()
    page.screenshot(path=str(shots / "payouts.png"), full_page=True)
    page.get_by_label("State").select_option("unknown")
    _live_wait(lambda: scene.payouts["salary"]["id"] not in rows.inner_text())
    assert scene.money["unknown_payout"] in rows.inner_text()
    salary = open_page(f"/dashboard/payouts/{scene.payouts['salary']['id']}")
    timeline = salary.locator("ol.timeline")
    _live_wait(lambda: "Result received" in timeline.inner_text(), timeout=30)
    assert "Daraja accepted the request" in timeline.inner_text()
    salary.screenshot(path=str(shots / "payout.png"), full_page=True)
    attention = open_page("/dashboard/attention")
    assert attention.get_by_role("heading", name="Payouts to look at").is_visible()


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("overview", "/dashboard/"),
        ("payments", "/dashboard/payments"),
        ("payment", "/dashboard/payments/{paid}"),
        ("receipts", "/dashboard/receipts"),
        ("receipt", "/dashboard/receipts/{receipt}"),
        ("payouts", "/dashboard/payouts"),
        ("payout", "/dashboard/payouts/{payout}"),
        ("refunds", "/dashboard/refunds"),
        ("attention", "/dashboard/attention"),
        ("audit", "/dashboard/audit"),
        ("sign-in", "/dashboard/sign-in"),
    ],
)
def test_every_page_is_usable_at_375_px(
    open_page: Opener, scene: World, shots: Path, name: str, path: str
) -> None:
    signed_in = name != "sign-in"
    address = path.format(
        paid=scene.payments["paid"]["id"],
        receipt=scene.money["under"],
        payout=scene.money["unknown_payout"],
    )
    page = open_page(address, viewport=PHONE, signed_in=signed_in)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
    if signed_in:
        for link in (
            "Overview",
            "Payments",
            "Receipts",
            "Payouts",
            "Refunds",
            "Needs attention",
            "Audit",
        ):
            nav = page.get_by_role("navigation", name="Dashboard")
            box = nav.get_by_role("link", name=link, exact=True).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, link
        assert page.get_by_role("button", name="Sign out").is_visible()
    else:
        assert page.get_by_role("button", name="Sign in").is_visible()
    if name in ("payments", "receipts", "payouts", "refunds"):
        search = page.get_by_label("Search")
        assert search.is_visible()
        box = search.bounding_box()
        assert box is not None and box["width"] >= 250  # room to type a phone number
        if name != "refunds":  # the refunds list may still be empty
            assert page.locator(f"table.{name} .status").first.is_visible()
        # The list fits: no column hides past the right edge.
        wrap = page.locator(".table-wrap").first
        assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth")
    page.screenshot(path=str(shots / f"{name}-375.png"), full_page=True)
