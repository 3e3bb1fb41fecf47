"""What the dashboard shows and does, over HTTP: search, export, timelines, actions, audit."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import anyio
import httpx
import pytest

from pesa.ledger import Ledger, LedgerReports, OperatorStore

from .conftest import OPERATOR, Browserless, World

# One gateway for the module: every test of it runs on one xdist worker.
pytestmark = pytest.mark.xdist_group("dashboard-pages")


def _audit(world: World) -> list[Any]:
    async def read() -> list[Any]:
        ledger = await Ledger.open(world.database_url)
        try:
            return (await OperatorStore(ledger.engine).audit_entries(limit=500)).items
        finally:
            await ledger.close()

    return anyio.run(read)


def test_search_finds_a_phone_typed_with_spaces(world: World, operator: Browserless) -> None:
    paid = world.payments["paid"]
    page = operator.get("/dashboard/payments", params={"q": "0708 374 149"})
    assert page.status_code == 200
    assert paid["id"] in page.text
    for other in ("cancelled", "pending", "flagged"):
        assert world.payments[other]["id"] not in page.text


def test_filters_by_state_flag_and_dates(world: World, operator: Browserless) -> None:
    failed = operator.get("/dashboard/payments", params={"status": "failed"}).text
    assert world.payments["cancelled"]["id"] in failed
    assert world.payments["paid"]["id"] not in failed
    flagged = operator.get("/dashboard/payments", params={"flagged": "1"}).text
    assert world.payments["flagged"]["id"] in flagged
    assert world.payments["paid"]["id"] not in flagged
    future = operator.get("/dashboard/payments", params={"from": "2099-01-01"}).text
    assert "No payment matches." in future
    bad = operator.get("/dashboard/payments", params={"from": "yesterday"})
    assert bad.status_code == 422
    assert "from: must be a date (YYYY-MM-DD)" in bad.text
    bad_status = operator.get("/dashboard/payments", params={"status": "lost"})
    assert bad_status.status_code == 422 and "status: must be one of" in bad_status.text


def test_pages_of_fifty_with_a_cursor(world: World, operator: Browserless) -> None:
    first = operator.get("/dashboard/payments").text
    assert "Older →" not in first  # four payments: one page
    older = operator.get("/dashboard/payments", params={"cursor": world.payments["paid"]["id"]})
    assert world.payments["paid"]["id"] not in older.text.split("<tbody>")[1]


def test_the_live_fragment_is_the_list_alone(world: World, operator: Browserless) -> None:
    fragment = operator.get(
        "/dashboard/payments", params={"q": "0708374149"}, headers={"X-Pesa-Live": "1"}
    )
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and "<table" in fragment.text
    assert world.payments["paid"]["id"] in fragment.text
    assert fragment.headers["cache-control"] == "no-store"


def test_csv_export_for_accounting(world: World, operator: Browserless) -> None:
    response = operator.get("/dashboard/payments.csv", params={"status": "succeeded"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    by_id = {row["id"]: row for row in rows}
    paid = world.payments["paid"]
    assert set(by_id) == {paid["id"], world.payments["flagged"]["id"]}
    assert by_id[paid["id"]]["phone"] == "254708374149"
    assert by_id[paid["id"]]["amount"] == "150"
    assert by_id[paid["id"]]["receipt"] == world.payment("paid")["receipt"]
    assert by_id[world.payments["flagged"]["id"]]["flagged"] == "true"
    exports = [e for e in _audit(world) if e.action == "export_csv"]
    assert any(e.note == "status=succeeded" and e.operator_name == OPERATOR for e in exports)


def test_a_timeline_shows_request_answer_callbacks_events_and_webhooks(
    world: World, operator: Browserless
) -> None:
    flagged = world.payments["flagged"]
    html = operator.get(f"/dashboard/payments/{flagged['id']}").text
    for text in (
        "Payment requested (STK push)",
        "Daraja accepted the push",
        flagged["checkout_request_id"],
        "Callback received (invalid)",
        "MerchantRequestID does not match",  # the refused callback's reason
        "forged-merchant-request",  # its raw body, as received
        "Callback received (unverified)",  # KES 20 for 10 asked: evidence, not proof
        "&#34;MpesaReceiptNumber&#34;",  # pretty JSON, escaped
        "STK query: succeeded",  # Daraja's own answer settled it
        "Event payment.succeeded",
        "Event payment.flagged",
        "Webhook failed",
        "ConnectError",
        "amount 20 differs from requested 10",
    ):
        assert text in html, text


def test_ask_daraja_now_settles_a_payment_whose_callback_was_lost(
    world: World, operator: Browserless
) -> None:
    pending = world.payments["pending"]
    assert world.payment("pending")["status"] == "pending"
    path = f"/dashboard/payments/{pending['id']}/refresh"
    deadline = time.monotonic() + 20
    while True:
        response = operator.post(path)
        assert response.status_code == 303
        if response.headers["location"].endswith("notice=refresh-settled"):
            break
        assert time.monotonic() < deadline, response.headers["location"]
        time.sleep(0.2)  # the emulated customer has not answered yet
    assert world.payment("pending")["status"] == "succeeded"
    page = operator.get(response.headers["location"]).text
    assert "Daraja answered: the payment is settled." in page
    assert "STK query: succeeded" in page  # the query is in the timeline
    refreshes = [e for e in _audit(world) if e.action == "refresh" and e.target == pending["id"]]
    assert refreshes[0].detail == "pending -> succeeded"


def test_resolving_a_flag_needs_a_note_and_is_audited(world: World, operator: Browserless) -> None:
    flagged = world.payments["flagged"]
    path = f"/dashboard/payments/{flagged['id']}/resolve-flag"
    empty = operator.post(path, {"note": "   "})
    assert empty.status_code == 422
    assert "note: must be a non-empty string" in empty.text
    assert world.payment("flagged")["flagged"] is True
    done = operator.post(path, {"note": "Statement shows KES 20; refunded 10 by hand"})
    assert done.status_code == 303
    assert world.payment("flagged")["flagged"] is False
    again = operator.post(path, {"note": "twice"})
    assert again.status_code == 409
    page = operator.get(done.headers["location"]).text
    assert "Flag resolved." in page and "Event payment.flag_resolved" in page
    assert "refunded 10 by hand" in page  # the note, in the timeline
    with world.api() as api:
        events = api.get("/v1/events", params={"payment_id": flagged["id"]}).json()["data"]
    assert events[-1]["type"] == "payment.flag_resolved"
    assert "otto" in events[-1]["data"]["detail"]
    entries = [e for e in _audit(world) if e.action == "resolve_flag" and e.outcome == "ok"]
    assert entries[0].note == "Statement shows KES 20; refunded 10 by hand"
    assert entries[0].operator_name == OPERATOR


def test_redeliver_sends_a_failed_webhook_again(world: World, operator: Browserless) -> None:
    async def failed() -> list[Any]:
        ledger = await Ledger.open(world.database_url)
        try:
            return [
                d for d in await LedgerReports(ledger).failing_deliveries() if d.status == "failed"
            ]
        finally:
            await ledger.close()

    delivery = anyio.run(failed)[0]
    attention = operator.get("/dashboard/attention").text
    assert f"/dashboard/deliveries/{delivery.id}/redeliver" in attention
    response = operator.post(
        f"/dashboard/deliveries/{delivery.id}/redeliver", {"back": "/dashboard/attention"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/attention?notice=redelivered"
    deadline = time.monotonic() + 15
    while True:  # the dispatcher tries once more (the port is still closed) and gives up
        again = {d.id: d for d in anyio.run(failed)}.get(delivery.id)
        if again is not None and again.attempts == delivery.attempts + 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any(e.action == "redeliver" and e.target == delivery.id for e in _audit(world))


def test_overview_and_audit_pages(operator: Browserless) -> None:
    overview = operator.get("/dashboard/")
    assert overview.status_code == 200
    assert overview.text.count("<svg") == 2
    assert "success rate" in overview.text
    audit = operator.get("/dashboard/audit").text
    assert "sign in" in audit and OPERATOR in audit


def test_an_unknown_payment_is_a_404_page(operator: Browserless) -> None:
    response = operator.get("/dashboard/payments/pay_nothing_here")
    assert response.status_code == 404
    assert "No payment" in response.text


def test_pesa_serve_style_health_is_untouched(world: World) -> None:
    assert httpx.get(world.gateway.url + "/healthz").status_code == 200


def test_every_live_page_has_a_fragment(world: World, operator: Browserless) -> None:
    for path in (
        "/dashboard/",
        "/dashboard/attention",
        "/dashboard/audit",
        f"/dashboard/payments/{world.payments['paid']['id']}",
    ):
        full = operator.get(path)
        fragment = operator.get(path, headers={"X-Pesa-Live": "1"})
        assert full.status_code == fragment.status_code == 200, path
        assert 'id="live"' in full.text and "<html" not in fragment.text, path
        assert len(fragment.text) < len(full.text)
