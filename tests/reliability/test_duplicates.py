"""Scenario 1: callbacks duplicated, shuffled and concurrent are applied exactly once, and
every event reaches the webhook and the Python handler exactly once."""

from __future__ import annotations

import json
import random
from collections import Counter

import httpx
import pytest

from pesa.gateway import DispatcherOptions, WebhookDispatcher, delivery_endpoints
from pesa.ledger import Event, Ledger, PaymentStatus
from pesa.testing import stk_callback_payload, stk_failure_payload

from ._harness import (
    WEBHOOK_SECRET,
    CallbackSink,
    WebhookSink,
    audit,
    bounded_gather,
    phone_for,
    serve_asgi,
    size,
)
from ._report import Recorder

SCENARIO = "1. Duplicates"
pytestmark = pytest.mark.timeout(size(180, 3_600))
DUPLICATED_SHARE = 0.3
# What the customers do: mostly pay, some cancel, some lack funds, some never answer.
FAILURES = [(1032, "Request cancelled by user"), (1, "The balance is insufficient"), (1037, "")]


async def drain_outbox(dispatcher: WebhookDispatcher, max_rounds: int = 10_000) -> int:
    """Dispatch until nothing is due; returns the number of deliveries made."""
    delivered = 0
    for _ in range(max_rounds):
        report = await dispatcher.run_once()
        delivered += report.delivered
        if report.claimed == 0:
            return delivered
    raise AssertionError("the outbox never drained")


async def test_duplicated_shuffled_concurrent_callbacks_apply_exactly_once(
    database: tuple[str, str], recorder: Recorder
) -> None:
    backend, url = database
    # Soak: 7,692 payments + 30% duplicated = 10,000 callbacks (issue 5, scenario 1).
    payments_n = size(ci=120, soak=7_692)
    rng = random.Random(5_2026)
    hooks = WebhookSink()
    handled: Counter[str] = Counter()

    async def on_event(event: Event) -> None:
        handled[event.id] += 1

    handlers = {"*": on_event}
    async with serve_asgi(hooks.app()) as hooks_base:
        endpoints = delivery_endpoints([f"{hooks_base}/hooks"], handlers)
        ledger = await Ledger.open(url, webhook_endpoints=endpoints)
        try:
            await ledger.migrate()

            expected: dict[str, PaymentStatus] = {}
            bodies: list[bytes] = []

            async def create(i: int) -> None:
                phone, amount = phone_for(i), 1 + i % 250
                payment, _ = await ledger.create_payment(
                    f"dup-{i}", phone, amount, f"INV{i}", "Reliability"
                )
                cid, mid = f"ws_CO_DUP{i:010d}", f"mr-dup-{i}"
                await ledger.mark_accepted(payment.id, cid, mid)
                if rng.random() < 0.8:
                    body = stk_callback_payload(
                        checkout_request_id=cid,
                        merchant_request_id=mid,
                        amount=amount,
                        receipt=f"RD{i:08d}",
                        phone=int(phone),
                    )
                    expected[payment.id] = PaymentStatus.SUCCEEDED
                else:
                    code, desc = rng.choice(FAILURES)
                    body = stk_failure_payload(
                        code, desc, checkout_request_id=cid, merchant_request_id=mid
                    )
                    expected[payment.id] = PaymentStatus.FAILED
                bodies.append(json.dumps(body).encode())

            await bounded_gather([lambda i=i: create(i) for i in range(payments_n)], 8)

            duplicates = rng.sample(bodies, k=round(DUPLICATED_SHARE * len(bodies)))
            deliveries = bodies + duplicates
            rng.shuffle(deliveries)

            sink = CallbackSink(ledger)
            async with (
                serve_asgi(sink.app()) as callbacks_base,
                httpx.AsyncClient(base_url=callbacks_base, timeout=60) as http,
            ):

                async def post(body: bytes) -> int:
                    response = await http.post("/callbacks/stk", content=body)
                    return response.status_code

                statuses = await bounded_gather([lambda b=b: post(b) for b in deliveries], 32)

            dispatcher = WebhookDispatcher(
                ledger,
                secret=WEBHOOK_SECRET,
                handlers=handlers,
                options=DispatcherOptions(batch_size=200, concurrency=16),
            )
            async with dispatcher:
                await drain_outbox(dispatcher)
            book = await audit(ledger)
            stats = await ledger.stats()
        finally:
            await ledger.close()

    wrong = [pid for pid, status in expected.items() if book.payments[pid].status != status]
    event_ids = set(book.event_ids)
    counts = {
        "payments": payments_n,
        "callbacks_sent": len(deliveries),
        "duplicates_sent": len(duplicates),
        "applied": sink.outcomes["applied"],
        "reported_duplicate": sink.outcomes["duplicate"],
        "refused": sum(1 for s in statuses if s != 200),
        "callbacks_stored": sum(stats.callbacks.values()),
        "lost": len(wrong),
        "applied_twice": book.applied_twice,
        "events": len(book.event_ids),
        "expected_events": 2 * payments_n,
        "webhooks_missing": len(event_ids - set(hooks.by_event)),
        "webhook_duplicates": hooks.duplicates,
        "bad_signatures": hooks.bad_signatures,
        "handler_missing": len(event_ids - set(handled)),
        "handler_duplicates": sum(n - 1 for n in handled.values() if n > 1),
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "lost",
            "applied_twice",
            "refused",
            "webhooks_missing",
            "webhook_duplicates",
            "bad_signatures",
            "handler_missing",
            "handler_duplicates",
        ),
        must_equal=(
            ("applied", "payments"),
            ("reported_duplicate", "duplicates_sent"),
            ("callbacks_stored", "callbacks_sent"),
            ("events", "expected_events"),
        ),
        about=(
            "Pending payments (80% paid, 20% cancelled / insufficient funds / no answer) get "
            f"their STK callback over loopback HTTP, {DUPLICATED_SHARE:.0%} of them a second "
            "time, all shuffled and 32 at a time; then the dispatcher drains the outbox to a "
            "signed webhook receiver and a Python handler."
        ),
    )
    assert result.passed, result.failures
