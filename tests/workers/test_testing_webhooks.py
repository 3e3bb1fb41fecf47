"""``pesa.testing`` webhook helpers: events shaped like the gateway's, signed like it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pesa import verify_webhook
from pesa.gateway import WebhookDispatcher
from pesa.testing import signed_webhook, webhook_event

from .conftest import ManualClock, OpenLedger, Receiver, pending_payment


def test_signed_request_verifies_and_carries_the_event() -> None:
    event = webhook_event("payment.succeeded", amount=250, event_id="evt_TEST")
    body, headers = signed_webhook(event, "whsec_test", timestamp=1_767_225_600, attempt=3)
    assert verify_webhook(body, headers["Pesa-Signature"], "whsec_test", now=1_767_225_600) == event
    assert headers["Pesa-Event-Id"] == "evt_TEST"
    assert headers["Pesa-Event-Type"] == "payment.succeeded"
    assert headers["Pesa-Delivery-Attempt"] == "3"


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("payment.succeeded", "succeeded"),
        ("payment.failed", "failed"),
        ("payment.pending", "pending"),
        ("payment.rejected", "rejected"),
        ("payment.unknown", "unknown"),
    ],
)
def test_payment_status_follows_the_event_type(event_type: str, status: str) -> None:
    assert webhook_event(event_type)["data"]["payment"]["status"] == status


def test_overrides_and_times() -> None:
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    event = webhook_event("payment.failed", payment={"metadata": {"order": 42}}, created_at=at)
    assert event["data"]["payment"]["metadata"] == {"order": 42}
    assert event["created_at"] == "2026-11-29T12:00:00+00:00"


async def test_helper_events_have_the_shape_of_real_ones(
    open_ledger: OpenLedger, receiver: Receiver, clock: ManualClock
) -> None:
    ledger = await open_ledger(endpoints=[receiver.url])
    await pending_payment(ledger, 1)
    async with WebhookDispatcher(ledger, secret="whsec_x", clock=clock) as dispatcher:
        await dispatcher.run_once()
    [request] = receiver.requests
    real = verify_webhook(request.body, request.headers["Pesa-Signature"], "whsec_x", None)
    helper = webhook_event("payment.pending")
    assert set(helper) == set(real)
    assert set(helper["data"]) == set(real["data"])
    assert set(helper["data"]["payment"]) == set(real["data"]["payment"])
    _, headers = signed_webhook(helper, "whsec_x")
    sent = {k.lower() for k in request.headers}
    assert {k.lower() for k in headers} <= sent
