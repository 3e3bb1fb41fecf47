"""Receipts, expected payments, payouts and refunds in the dashboard, over HTTP.

The refund action goes through the REST API's own path (``start_refund``): the ledger's rule
decides what may go back; the form only shows what remains as its default.
"""

from __future__ import annotations

import csv
import html
import io
import re
import time
from typing import Any

import anyio
import pytest

from pesa.ledger import Ledger, OperatorStore

from .conftest import OPERATOR, Browserless, World, csrf_of

pytestmark = pytest.mark.xdist_group("dashboard-money")


def _audit(world: World, **filters: Any) -> list[Any]:
    async def read() -> list[Any]:
        ledger = await Ledger.open(world.database_url)
        try:
            return (await OperatorStore(ledger.engine).audit_entries(limit=500, **filters)).items
        finally:
            await ledger.close()

    return anyio.run(read)


def _refunds(world: World, source_id: str) -> list[dict[str, Any]]:
    with world.api() as api:
        data: list[dict[str, Any]] = api.get(
            "/v1/refunds", params={"payment_id": source_id}
        ).json()["data"]
        return data


def _key(html: str) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', html)
    assert match, "no refund form"
    return match.group(1)


def test_receipts_are_found_by_phone_receipt_number_and_reference(
    operator: Browserless,
) -> None:
    listing = operator.get("/dashboard/receipts")
    assert listing.status_code == 200
    for trans_id in ("RCP1000001", "RCP2000002", "RCP3000003", "RCP4000004", "RCP5000005"):
        assert trans_id in listing.text
    # The payer's number, typed as people say it, matches the masked MSISDN of C2B v2.
    by_phone = operator.get("/dashboard/receipts", params={"q": "0708 374 149"}).text
    assert "RCP1000001" in by_phone and "RCP2000002" not in by_phone
    by_number = operator.get("/dashboard/receipts", params={"q": "rcp3000003"}).text
    assert "RCP3000003" in by_number and "RCP1000001" not in by_number
    by_reference = operator.get("/dashboard/receipts", params={"q": "inv 100"}).text
    assert "RCP1000001" in by_reference and "RCP5000005" in by_reference
    assert "RCP2000002" not in by_reference
    refuted = operator.get("/dashboard/receipts", params={"status": "refuted"}).text
    assert "RCP5000005" in refuted and "RCP1000001" not in refuted
    flagged = operator.get("/dashboard/receipts", params={"flagged": "1"}).text
    assert "RCP5000005" in flagged and "RCP1000001" not in flagged
    bad = operator.get("/dashboard/receipts", params={"status": "lost"})
    assert bad.status_code == 422 and "status: must be one of" in bad.text
    bad_day = operator.get("/dashboard/receipts", params={"from": "yesterday"})
    assert bad_day.status_code == 422 and "from: must be a date" in bad_day.text
    later = operator.get("/dashboard/receipts", params={"from": "2099-01-01"}).text
    assert "No receipt matches." in later


def test_receipts_show_their_expected_payment_and_unknown_references(
    world: World, operator: Browserless
) -> None:
    listing = operator.get("/dashboard/receipts").text
    for state in ("paid", "partially paid", "overpaid", "unknown reference"):
        assert state in listing, state
    page = operator.get(f"/dashboard/receipts/{world.money['under']}")
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert "partially paid" in text and "KES 1,000 expected, KES 400 paid" in text
    # Its raw confirmation and its events.
    assert "Callback received: c2b confirm (applied)" in text
    assert '"TransID": "RCP2000002"' in text
    assert "Event receipt.confirmed" in text
    unknown = operator.get(f"/dashboard/receipts/{world.money['unknown_reference']}").text
    assert "unknown reference" in unknown
    expected = operator.get("/dashboard/expected", params={"status": "overpaid"}).text
    assert "INV-300" in expected and "INV-200" not in expected
    assert operator.get("/dashboard/receipts/rcp_nobody").status_code == 404


def test_receipts_export_as_csv_and_the_export_is_audited(
    world: World, operator: Browserless
) -> None:
    response = operator.get("/dashboard/receipts.csv", params={"q": "INV-300"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "pesa-receipts-" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["trans_id"], r["amount"], r["status"]) for r in rows] == [
        ("RCP3000003", "250.00", "confirmed")
    ]
    exports = [e for e in _audit(world, operator_name=OPERATOR) if e.action == "export_csv"]
    assert any("receipts: q=INV-300" in (e.note or "") for e in exports)


def test_payouts_are_listed_searched_and_shown_with_their_timeline(
    world: World, operator: Browserless
) -> None:
    salary = world.payouts["salary"]["id"]
    listing = operator.get("/dashboard/payouts").text
    assert salary in listing and "december-bonus" in listing
    by_phone = operator.get("/dashboard/payouts", params={"q": "0711 000 201"}).text
    assert "254711000201" in by_phone and salary not in by_phone
    batch = operator.get("/dashboard/payouts", params={"batch": "december-bonus"}).text
    assert "rows in batch december-bonus" in batch and salary not in batch
    unknown = operator.get("/dashboard/payouts", params={"status": "unknown"}).text
    assert world.money["unknown_payout"] in unknown and salary not in unknown
    deadline = time.monotonic() + 20
    while True:
        page = operator.get(f"/dashboard/payouts/{salary}")
        assert page.status_code == 200
        if "Result received" in page.text:
            break
        assert time.monotonic() < deadline, "the payout's Result never came"
        time.sleep(0.2)
    for text in ("Payout requested (B2C BusinessPayment)", "Daraja accepted the request"):
        assert text in page.text
    assert '"ResultCode": 0' in html.unescape(page.text)  # the raw Result, pretty-printed
    assert operator.get("/dashboard/payouts/po_nobody").status_code == 404


def test_needs_attention_lists_unknown_payouts_and_flagged_receipts(
    world: World, operator: Browserless
) -> None:
    page = operator.get("/dashboard/attention").text
    assert "Payouts to look at" in page and world.money["unknown_payout"] in page
    assert "Flagged receipts" in page and "RCP5000005" in page
    # A failing webhook of a payout's event links to the payout.
    deadline = time.monotonic() + 20
    while not re.search(r'<a href="/dashboard/payouts/po_\w+">payout\.', page):
        assert time.monotonic() < deadline, "no failing payout webhook linked"
        time.sleep(0.2)
        page = operator.get("/dashboard/attention").text


def test_an_operator_refunds_part_of_a_payment_with_a_note(
    world: World, operator: Browserless
) -> None:
    paid = world.payments["paid"]
    path = f"/dashboard/payments/{paid['id']}"
    page = operator.get(path).text
    # The default is what remains, as the ledger computes it.
    assert 'name="amount" min="1" max="150" step="1" value="150"' in page
    key = _key(page)
    too_much = operator.post(
        f"{path}/refund", {"amount": "151", "note": "too much", "idempotency_key": key}
    )
    assert too_much.status_code == 409
    assert "more than remains" in too_much.text
    assert _refunds(world, paid["id"]) == []
    form = {"amount": "50", "note": "Customer returned one item", "idempotency_key": key}
    done = operator.post(f"{path}/refund", form)
    assert done.status_code == 303 and done.headers["location"].endswith("notice=refund-started")
    again = operator.post(f"{path}/refund", form)  # the same form sent twice
    assert again.headers["location"].endswith("notice=refund-replayed")
    refunds = _refunds(world, paid["id"])
    assert [(r["amount"], r["metadata"]["note"]) for r in refunds] == [
        (50, "Customer returned one item")
    ]
    after = operator.get(path).text
    assert "Refund of KES 50" in after and "Customer returned one item" in after
    assert 'value="100"' in after  # the remainder is the new default
    entries = [e for e in _audit(world, target=paid["id"]) if e.action == "refund"]
    assert [(e.outcome, e.note) for e in entries if e.outcome == "ok"] == [
        ("ok", "Customer returned one item"),
        ("ok", "Customer returned one item"),
    ]
    assert any(e.outcome == "refused" and "more than remains" in (e.detail or "") for e in entries)
    listed = operator.get("/dashboard/refunds").text
    assert refunds[0]["id"] in listed
    refund_page = operator.get(f"/dashboard/refunds/{refunds[0]['id']}")
    assert refund_page.status_code == 200 and "Refund requested (reversal)" in refund_page.text


def test_a_refund_needs_a_note_and_a_refundable_payment(
    world: World, operator: Browserless
) -> None:
    cancelled = world.payments["cancelled"]["id"]
    page = operator.get(f"/dashboard/payments/{cancelled}").text
    assert "Nothing to refund: payment" in page and "only a succeeded payment" in page
    refused = operator.post(f"/dashboard/payments/{cancelled}/refund", {"note": "try anyway"})
    assert refused.status_code == 409 and "only a succeeded payment" in refused.text
    paid = world.payments["paid"]["id"]
    no_note = operator.post(f"/dashboard/payments/{paid}/refund", {"amount": "1"})
    assert no_note.status_code == 422 and "note: required" in no_note.text
    bad_amount = operator.post(
        f"/dashboard/payments/{paid}/refund", {"amount": "1.5", "note": "half a shilling"}
    )
    assert bad_amount.status_code == 422 and "amount: must be a whole number" in bad_amount.text
    assert operator.post("/dashboard/payments/pay_nobody/refund", {"note": "x"}).status_code == 404
    assert _refunds(world, cancelled) == []


def test_a_confirmed_receipt_can_be_refunded_from_its_page(
    world: World, operator: Browserless
) -> None:
    over = world.money["over"]
    page = operator.get(f"/dashboard/receipts/{over}").text
    assert 'max="250"' in page
    refuted = operator.get(f"/dashboard/receipts/{world.money['refuted']}").text
    assert "Nothing to refund" in refuted and "only a receipt that counts" in refuted
    response = operator.post(
        f"/dashboard/receipts/{over}/refund",
        {"amount": "50", "note": "Paid 50 too much", "idempotency_key": _key(page)},
    )
    assert response.status_code == 303, response.text
    after = operator.get(f"/dashboard/receipts/{over}").text
    assert "Refund of KES 50" in after and "Paid 50 too much" in after


def test_the_refund_form_carries_the_csrf_token(world: World, operator: Browserless) -> None:
    html = operator.get(f"/dashboard/payments/{world.payments['paid']['id']}").text
    form = re.search(r'<form[^>]*action="[^"]*/refund".*?</form>', html, flags=re.S)
    assert form is not None
    assert csrf_of(form.group(0)) == operator.csrf
