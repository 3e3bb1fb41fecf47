"""Read-only views for people: search, a payment's history, outcome counts, the backlog."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pesa import ValidationError
from pesa.ledger import (
    DeliveryNotFoundError,
    Ledger,
    LedgerError,
    LedgerReports,
    Payment,
    PaymentStatus,
)

from .conftest import ManualClock, stk_callback


@pytest.fixture
def reports(ledger: Ledger) -> LedgerReports:
    return LedgerReports(ledger)


async def _paid(
    ledger: Ledger, n: int, phone: str = "0708374149", reference: str = "INV42", amount: int = 10
) -> Payment:
    payment, _ = await ledger.create_payment(None, phone, amount, reference, f"Order {n}")
    cid = f"ws_CO_{n}"
    await ledger.mark_accepted(payment.id, cid, f"m-{n}")
    outcome = await ledger.ingest_stk_callback(
        stk_callback(
            cid,
            merchant_request_id=f"m-{n}",
            receipt=f"RCP{n:07d}",
            amount=amount,
            phone=int("254" + phone[-9:]),
        ),
        source_ip="196.201.214.200",
    )
    assert outcome.payment is not None
    return outcome.payment


@pytest.mark.parametrize(
    "typed", ["0708 374 149", "+254 708-374-149", "254708374149", "708374149", "0708374149"]
)
async def test_search_finds_a_phone_typed_in_any_format(
    ledger: Ledger, reports: LedgerReports, typed: str
) -> None:
    mine = await _paid(ledger, 1)
    await _paid(ledger, 2, phone="0711000001")
    page = await reports.search_payments(typed)
    assert [p.id for p in page.items] == [mine.id]


async def test_search_by_receipt_reference_id_and_checkout_id(
    ledger: Ledger, reports: LedgerReports
) -> None:
    first = await _paid(ledger, 1, reference="ORDER-7")
    await _paid(ledger, 2, reference="ORDER-8")
    for typed in ("RCP0000001", "rcp0000001", "ORDER-7", "order-7", first.id, "ws_CO_1"):
        assert [p.id for p in (await reports.search_payments(typed)).items] == [first.id], typed
    assert (await reports.search_payments("nothing-like-this")).items == []


async def test_filters_and_cursor_pagination(
    ledger: Ledger, reports: LedgerReports, clock: ManualClock
) -> None:
    paid = []
    for n in range(5):
        paid.append(await _paid(ledger, n))
        clock.advance(minutes=1)
    open_payment, _ = await ledger.create_payment(None, "0708374149", 5, "INV9", "Open")
    assert [p.id for p in (await reports.search_payments(status="created")).items] == [
        open_payment.id
    ]
    page1 = await reports.search_payments(status=PaymentStatus.SUCCEEDED, limit=2)
    page2 = await reports.search_payments(status="succeeded", limit=2, cursor=page1.next_cursor)
    page3 = await reports.search_payments(status="succeeded", limit=2, cursor=page2.next_cursor)
    seen = [p.id for p in page1.items + page2.items + page3.items]
    assert seen == [p.id for p in reversed(paid)]
    assert page3.next_cursor is None
    window = await reports.search_payments(
        created_from=paid[1].created_at, created_to=paid[3].created_at
    )
    assert [p.id for p in window.items] == [paid[2].id, paid[1].id]
    assert (await reports.search_payments(flagged=True)).items == []
    assert len((await reports.search_payments(flagged=False)).items) == 6
    with pytest.raises(ValidationError) as caught:
        await reports.search_payments(status="lost")
    assert caught.value.field == "status"
    with pytest.raises(ValidationError):
        await reports.search_payments(created_from=paid[0].created_at.replace(tzinfo=None))


async def test_a_payments_history_keeps_refused_callbacks_and_deliveries(
    ledger: Ledger, reports: LedgerReports, clock: ManualClock
) -> None:
    payment = await _paid(ledger, 1)
    clock.advance(seconds=1)
    # A forged copy with another MerchantRequestID: refused, but kept with its reason.
    await ledger.ingest_stk_callback(
        stk_callback("ws_CO_1", merchant_request_id="forged"), source_ip="10.9.9.9"
    )
    stored = await reports.payment_callbacks(payment)
    assert [c.outcome for c in stored] == ["applied", "invalid"]
    assert stored[1].detail is not None and "MerchantRequestID" in stored[1].detail
    assert b"forged" in stored[1].body
    events = await reports.payment_events(payment.id)
    assert [e.type for e in events] == ["payment.pending", "payment.succeeded"]
    deliveries = await reports.payment_deliveries(payment.id)
    assert [(d.event_type, d.status) for d in deliveries] == [
        ("payment.pending", "pending"),
        ("payment.succeeded", "pending"),
    ]
    assert all(d.payment_id == payment.id for d in deliveries)


async def test_failing_deliveries_and_redeliver(ledger: Ledger, reports: LedgerReports) -> None:
    payment = await _paid(ledger, 1)
    claimed = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
    assert len(claimed) == 2
    gave_up, retrying = claimed
    await ledger.mark_delivery_failed(gave_up.id, "HTTP 500: boom", None, status_code=500)
    await ledger.mark_delivery_failed(
        retrying.id, "timed out", ledger._now() + timedelta(minutes=5)
    )
    failing = await reports.failing_deliveries()
    assert {(d.id, d.status) for d in failing} == {(gave_up.id, "failed"), (retrying.id, "pending")}
    assert all(d.payment_id == payment.id for d in failing)

    again = await ledger.redeliver(gave_up.id)
    assert again.status == "pending" and again.next_attempt_at == ledger._now()
    assert again.last_error == "HTTP 500: boom"  # kept until the next attempt
    # Pending (scheduled, maybe in flight) is never sent twice at once.
    with pytest.raises(LedgerError, match="already pending"):
        await ledger.redeliver(retrying.id)
    with pytest.raises(DeliveryNotFoundError):
        await ledger.redeliver("whd_nope")
    reclaimed = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
    assert [d.id for d in reclaimed] == [gave_up.id]
    assert reclaimed[0].attempts == 2


async def test_outcomes_count_by_range_status_and_code(
    ledger: Ledger, reports: LedgerReports, clock: ManualClock
) -> None:
    start = clock.now()
    await _paid(ledger, 1, amount=100)
    cancelled, _ = await ledger.create_payment(None, "0708374149", 7, "INV", "x")
    await ledger.mark_accepted(cancelled.id, "ws_CO_c", "m-c")
    await ledger.ingest_stk_callback(
        stk_callback("ws_CO_c", 1032, merchant_request_id="m-c"), source_ip=None
    )
    clock.advance(hours=1)
    await _paid(ledger, 2, amount=50)
    lost, _ = await ledger.create_payment(None, "0708374149", 9, "INV", "x")
    await ledger.mark_accepted(lost.id, "ws_CO_l", "m-l")
    await ledger.expire(lost.id)
    clock.advance(hours=1)
    counts = await reports.outcomes([start, start + timedelta(hours=1), start + timedelta(hours=2)])
    table = {(c.bucket, c.status, c.result_code, c.expired): (c.count, c.amount) for c in counts}
    assert table == {
        (0, PaymentStatus.SUCCEEDED, "0", False): (1, 100),
        (0, PaymentStatus.FAILED, "1032", False): (1, 7),
        (1, PaymentStatus.SUCCEEDED, "0", False): (1, 50),
        (1, PaymentStatus.FAILED, None, True): (1, 9),
    }
    with pytest.raises(ValidationError):
        await reports.outcomes([start])


async def test_backlog_counts_open_payments_and_deliveries(
    ledger: Ledger, reports: LedgerReports, clock: ManualClock
) -> None:
    await _paid(ledger, 1)
    first, _ = await ledger.create_payment(None, "0708374149", 5, "INV", "x")
    await ledger.mark_accepted(first.id, "ws_CO_p", "m-p")
    clock.advance(minutes=1)
    second, _ = await ledger.create_payment(None, "0708374149", 5, "INV", "y")
    await ledger.mark_unknown(second.id, "read timeout")
    backlog = await reports.backlog(now=clock.now(), min_age=timedelta(seconds=30))
    assert (backlog.created, backlog.pending, backlog.unknown) == (0, 1, 1)
    assert backlog.due == 1  # the unknown one is younger than min_age
    assert backlog.oldest_open == first.created_at
    assert backlog.deliveries_pending == 4 and backlog.deliveries_failed == 0
