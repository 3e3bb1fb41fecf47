"""Dashboard security: sessions, CSRF, roles, throttling, caching, switching it off."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from fastapi.routing import APIRoute

from pesa.ledger import Ledger, OperatorStore
from pesa.testing import run_gateway

from .conftest import (
    OPERATOR,
    PASSWORD,
    VIEWER,
    Browserless,
    World,
    csrf_of,
    dashboard_settings,
)

# One gateway for the module: every test of it runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("dashboard-security")

ACTIONS = ("refresh", "resolve-flag", "redeliver", "refund", "refund-receipt")


def _routes(world: World) -> list[tuple[str, str]]:
    """(method, path) of every dashboard route, with real ids filled in."""
    found = []
    for route in world.gateway.app.state.dashboard_router.routes:
        assert isinstance(route, APIRoute)
        path = "/dashboard" + route.path
        path = path.replace("{payment_id}", world.payments["flagged"]["id"])
        path = path.replace("{delivery_id}", "whd_01JDZ3Q4W8K6Y2V0C5N7R9T1XB")
        path = path.replace("{receipt_id}", world.money["settled"])
        path = path.replace("{payout_id}", world.money["unknown_payout"])
        path = path.replace("{refund_id}", "rf_01JDZ3Q4W8K6Y2V0C5N7R9T1XB")
        for method in sorted(route.methods):
            found.append((method, path))
    return found


def _audit(world: World, **filters: Any) -> list[Any]:
    async def read() -> list[Any]:
        ledger = await Ledger.open(world.database_url)
        try:
            page = await OperatorStore(ledger.engine).audit_entries(limit=500, **filters)
            return page.items
        finally:
            await ledger.close()

    return anyio.run(read)


def _data_in(body: str, world: World) -> list[str]:
    secrets_ = [
        world.payments["flagged"]["id"],
        world.payments["flagged"]["phone"],
        "ORDER-",
        "RCP1000001",
        "INV-100",
        world.money["unknown_payout"],
        "254708374149",
    ]
    return [s for s in secrets_ if s in body]


def test_the_dashboard_has_the_routes_the_tests_cover(world: World) -> None:
    paths = {re.sub(r"/(pay|whd|rcp|po|rf)_[0-9A-Z]+", "/{id}", path) for _, path in _routes(world)}
    assert paths == {
        "/dashboard/",
        "/dashboard/sign-in",
        "/dashboard/sign-out",
        "/dashboard/payments",
        "/dashboard/payments.csv",
        "/dashboard/payments/{id}",
        "/dashboard/payments/{id}/refresh",
        "/dashboard/payments/{id}/resolve-flag",
        "/dashboard/payments/{id}/refund",
        "/dashboard/deliveries/{id}/redeliver",
        "/dashboard/receipts",
        "/dashboard/receipts.csv",
        "/dashboard/receipts/{id}",
        "/dashboard/receipts/{id}/refund",
        "/dashboard/expected",
        "/dashboard/payouts",
        "/dashboard/payouts/{id}",
        "/dashboard/refunds",
        "/dashboard/refunds/{id}",
        "/dashboard/attention",
        "/dashboard/audit",
    }


@pytest.mark.parametrize("cookie", [None, "not-a-session-token-at-all-0123456789"])
def test_every_route_without_a_session_redirects_to_sign_in_and_shows_no_data(
    world: World, browserless: Browserless, cookie: str | None
) -> None:
    if cookie is not None:
        browserless.client.cookies.set("pesa_dashboard", cookie, path="/dashboard")
    checked = 0
    for method, path in _routes(world):
        if path.startswith("/dashboard/sign-in"):
            continue
        response = browserless.client.request(method, path, data={"note": "x"})
        assert response.status_code == 303, (method, path)
        assert response.headers["location"].startswith("/dashboard/sign-in?next="), path
        assert response.headers["cache-control"] == "no-store"
        assert _data_in(response.text, world) == [], path
        checked += 1
    assert checked >= 20


def test_static_files_need_no_session_and_hold_no_data(
    world: World, browserless: Browserless
) -> None:
    for name in ("dashboard.css", "dashboard.js"):
        response = browserless.get(f"/dashboard/static/{name}")
        assert response.status_code == 200
        assert _data_in(response.text, world) == []
        assert "http://" not in response.text and "https://" not in response.text  # no CDN


def test_sign_in_sets_an_httponly_samesite_session_cookie(browserless: Browserless) -> None:
    response = browserless.sign_in(OPERATOR)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/"
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith("pesa_dashboard=")
    )
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=lax", "path=/dashboard"} <= attributes
    assert "secure" not in attributes  # plain HTTP, and no proxy said HTTPS
    assert browserless.get("/dashboard/").status_code == 200


def _attributes(response: httpx.Response, name: str) -> set[str]:
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(name + "="))
    return {part.strip().lower() for part in cookie.split(";")}


def test_cookies_are_secure_behind_a_trusted_https_proxy(world: World) -> None:
    with httpx.Client(base_url=world.gateway.url, follow_redirects=False) as client:
        # The TLS-terminating proxy (127.0.0.1, trusted) says the browser used HTTPS.
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.66.0.1"}
        form = client.get("/dashboard/sign-in", headers=headers)
        assert "secure" in _attributes(form, "pesa_dashboard_csrf")
        token = csrf_of(form.text)
        response = client.post(
            "/dashboard/sign-in",
            data={"username": OPERATOR, "password": PASSWORD, "csrf_token": token},
            headers={**headers, "Cookie": f"pesa_dashboard_csrf={token}"},
        )
        assert response.status_code == 303
        assert "secure" in _attributes(response, "pesa_dashboard")


def test_wrong_passwords_and_unknown_names_fail_alike_and_are_audited(
    world: World, browserless: Browserless
) -> None:
    wrong = browserless.sign_in(VIEWER, "not the password")
    unknown = browserless.sign_in("nobody-here", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong name or password." in wrong.text and "Wrong name or password." in unknown.text
    assert "pesa_dashboard=" not in " ".join(wrong.headers.get_list("set-cookie")).replace(
        "pesa_dashboard_csrf=", ""
    )
    failures = [e for e in _audit(world) if e.action == "sign_in_failed"]
    assert {(e.operator_name, e.source_ip) for e in failures} >= {
        (VIEWER, browserless.address),
        ("nobody-here", browserless.address),
    }


def test_failed_sign_ins_are_throttled_per_address_and_per_name(world: World) -> None:
    attacker, other, third = Browserless(world), Browserless(world), Browserless(world)
    try:
        for _ in range(3):
            assert attacker.sign_in("mallory", "guess-guess-guess").status_code == 401
        blocked = attacker.sign_in(VIEWER)  # the right password, from the same address
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) > 0
        assert "Too many failed sign-ins" in blocked.text
        # Another address and name are not affected; the name "mallory" is, anywhere.
        assert other.sign_in(VIEWER).status_code == 303
        assert third.sign_in("mallory", "guess-guess-guess").status_code == 429
    finally:
        for client in (attacker, other, third):
            client.close()


def test_sign_in_without_its_csrf_token_is_refused(browserless: Browserless) -> None:
    browserless.sign_in_form()
    for token in ("", "forged-token"):
        response = browserless.client.post(
            "/dashboard/sign-in",
            data={"username": OPERATOR, "password": PASSWORD, "csrf_token": token},
        )
        assert response.status_code == 403
        assert "pesa_dashboard=" not in " ".join(response.headers.get_list("set-cookie")).replace(
            "pesa_dashboard_csrf=", ""
        )


def test_sign_in_never_redirects_off_the_dashboard(world: World) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/v1/payments", "/\\evil"):
        client = Browserless(world)
        try:
            page = client.client.get("/dashboard/sign-in", params={"next": target})
            response = client.client.post(
                "/dashboard/sign-in",
                data={
                    "username": OPERATOR,
                    "password": PASSWORD,
                    "csrf_token": csrf_of(page.text),
                    "next": target,
                },
            )
            assert response.status_code == 303
            assert response.headers["location"] == "/dashboard/"
            # Signed in already, the sign-in page sends on to the same safe place.
            again = client.client.get("/dashboard/sign-in", params={"next": target})
            assert again.headers["location"] == "/dashboard/"
        finally:
            client.close()


def test_every_post_form_on_every_page_carries_the_csrf_token(
    world: World, operator: Browserless
) -> None:
    pages = [
        "/dashboard/",
        "/dashboard/payments",
        "/dashboard/attention",
        "/dashboard/audit",
        f"/dashboard/payments/{world.payments['flagged']['id']}",
        f"/dashboard/payments/{world.payments['pending']['id']}",
        f"/dashboard/payments/{world.payments['paid']['id']}",
        f"/dashboard/receipts/{world.money['over']}",
        "/dashboard/receipts",
        "/dashboard/payouts",
        "/dashboard/refunds",
        f"/dashboard/payouts/{world.money['unknown_payout']}",
    ]
    forms = 0
    for page in pages:
        html = operator.get(page).text
        for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, flags=re.S):
            forms += 1
            assert f'name="csrf_token" value="{operator.csrf}"' in form, (page, form)
    assert forms >= 8


def _action_paths(world: World, delivery_id: str) -> dict[str, str]:
    return {
        "refresh": f"/dashboard/payments/{world.payments['pending']['id']}/refresh",
        "resolve-flag": f"/dashboard/payments/{world.payments['flagged']['id']}/resolve-flag",
        "redeliver": f"/dashboard/deliveries/{delivery_id}/redeliver",
        "refund": f"/dashboard/payments/{world.payments['paid']['id']}/refund",
        "refund-receipt": f"/dashboard/receipts/{world.money['settled']}/refund",
    }


def _refunds(world: World) -> list[Any]:
    async def read() -> list[Any]:
        ledger = await Ledger.open(world.database_url)
        try:
            return (await ledger.refunds.page(limit=500))[0]
        finally:
            await ledger.close()

    return anyio.run(read)


def _failed_delivery(world: World) -> str:
    async def find() -> str:
        from pesa.ledger import LedgerReports

        ledger = await Ledger.open(world.database_url)
        try:
            for _ in range(200):
                failing = await LedgerReports(ledger).failing_deliveries()
                failed = [d for d in failing if d.status == "failed"]
                if failed:
                    return failed[0].id
                await anyio.sleep(0.05)
            raise AssertionError("no webhook delivery failed")
        finally:
            await ledger.close()

    return anyio.run(find)


def test_actions_without_the_csrf_token_are_refused_and_change_nothing(
    world: World, operator: Browserless
) -> None:
    before = {name: world.payment(name) for name in ("pending", "flagged")}
    refunds = _refunds(world)
    for action, path in _action_paths(world, _failed_delivery(world)).items():
        missing = operator.post(path, {"note": "sneaky", "amount": "1"}, csrf=False)
        forged = operator.client.post(
            path, data={"note": "sneaky", "amount": "1", "csrf_token": "forged"}
        )
        assert missing.status_code == forged.status_code == 403, action
        assert "security token" in missing.text
    assert _refunds(world) == refunds
    assert operator.client.post("/dashboard/sign-out", data={}).status_code == 403
    assert operator.get("/dashboard/").status_code == 200  # still signed in
    assert {name: world.payment(name) for name in ("pending", "flagged")} == before


def test_a_viewer_reads_but_cannot_act(world: World, viewer: Browserless) -> None:
    flagged = world.payments["flagged"]["id"]
    page = viewer.get(f"/dashboard/payments/{flagged}")
    assert page.status_code == 200
    assert "Resolve flag" not in page.text and "Ask Daraja now" not in page.text
    for path in (
        f"/dashboard/payments/{world.payments['paid']['id']}",
        f"/dashboard/receipts/{world.money['settled']}",
    ):
        shown = viewer.get(path)
        assert shown.status_code == 200 and "Refund" in shown.text
        assert '/refund"' not in shown.text and 'name="amount"' not in shown.text, path
    before = {name: world.payment(name) for name in ("pending", "flagged")}
    refunds = _refunds(world)
    delivery = _failed_delivery(world)
    for action, path in _action_paths(world, delivery).items():
        response = viewer.post(path, {"note": "I am only a viewer", "amount": "1"})
        assert response.status_code == 403, action
        assert "can read the dashboard but not act" in response.text
    assert {name: world.payment(name) for name in ("pending", "flagged")} == before
    assert _refunds(world) == refunds
    refused = [e for e in _audit(world, operator_name=VIEWER) if e.outcome == "refused"]
    assert {e.action for e in refused} >= {"refresh", "resolve_flag", "redeliver", "refund"}


def test_pages_are_never_cached(world: World, operator: Browserless) -> None:
    paths = [
        "/dashboard/",
        "/dashboard/payments",
        "/dashboard/payments?q=0708374149",
        "/dashboard/payments.csv",
        "/dashboard/attention",
        "/dashboard/audit",
        f"/dashboard/payments/{world.payments['paid']['id']}",
        "/dashboard/payments/pay_does_not_exist",
        "/dashboard/receipts",
        "/dashboard/receipts?q=0708374149",
        "/dashboard/receipts.csv",
        f"/dashboard/receipts/{world.money['settled']}",
        "/dashboard/receipts/rcp_does_not_exist",
        "/dashboard/expected",
        "/dashboard/payouts",
        f"/dashboard/payouts/{world.money['unknown_payout']}",
        "/dashboard/payouts/po_does_not_exist",
        "/dashboard/refunds",
        "/dashboard/refunds/rf_does_not_exist",
        "/dashboard/sign-in",
    ]
    for path in paths:
        response = operator.get(path)
        assert response.status_code in (200, 303, 404), path
        assert response.headers["cache-control"] == "no-store", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"


def test_sign_out_ends_the_session_for_good(world: World, browserless: Browserless) -> None:
    assert browserless.sign_in(OPERATOR).status_code == 303
    cookie = browserless.client.cookies.get("pesa_dashboard")
    response = browserless.post("/dashboard/sign-out")
    assert response.status_code == 303
    replay = httpx.get(
        f"{world.gateway.url}/dashboard/",
        cookies={"pesa_dashboard": cookie or ""},
        follow_redirects=False,
    )
    assert replay.status_code == 303
    assert replay.headers["location"].startswith("/dashboard/sign-in")


def test_an_oversized_form_is_refused(operator: Browserless, world: World) -> None:
    path = f"/dashboard/payments/{world.payments['flagged']['id']}/resolve-flag"
    response = operator.post(path, {"note": "x" * 20_000})
    assert response.status_code == 413
    assert world.payment("flagged")["flagged"] is True


@pytest.fixture
def switched_off(tmp_path: Any) -> Iterator[str]:
    settings = dashboard_settings(
        f"sqlite:///{tmp_path / 'off.db'}", dashboard=False, run_workers=False, webhook_urls=[]
    )
    with run_gateway(settings) as gateway:
        yield gateway.url


def test_the_dashboard_can_be_switched_off(switched_off: str) -> None:
    for path in ("/dashboard/", "/dashboard/sign-in", "/dashboard/static/dashboard.css"):
        assert httpx.get(switched_off + path, follow_redirects=False).status_code == 404, path
    assert httpx.get(switched_off + "/healthz").status_code == 200
