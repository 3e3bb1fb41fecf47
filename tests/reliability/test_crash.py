"""Scenario 3: SIGKILL ``pesa serve`` at random points under load, restart it, several times.

The emulator runs in its own process (Daraja does not crash with us) and keeps answering
customers and delivering callbacks while the gateway is down. Merchants' threads keep
creating payments, each with its Idempotency-Key, retrying until they get an answer.

Truth comes from the emulator: which STK pushes it accepted (per AccountReference, one per
payment), what each customer answered, and which callbacks the gateway acknowledged.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from pesa.emulator import EmulatorControl

from ._harness import free_port, size
from ._processes import (
    TERMINAL,
    Gateway,
    Load,
    WebhookReceiver,
    all_events,
    all_payments,
    api_client,
    emulator_process,
    event_audit,
    gateway_env,
    make_orders,
    wait_for,
)
from ._report import Recorder

SCENARIO = "3. Crash"
CANCELLED_AMOUNT = 13  # the emulator's customers cancel (1032) payments of this amount
STK_PUSH = "/mpesa/stkpush/v1/processrequest"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]


def daraja_truth(control: EmulatorControl) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """AccountReference → CheckoutRequestIDs Daraja accepted; CheckoutRequestID → callback."""
    accepted: dict[str, list[str]] = {}
    for request in control.requests(STK_PUSH):
        if request.status_code == 200 and isinstance(request.body, dict):
            ref = str(request.body.get("AccountReference"))
            accepted.setdefault(ref, []).append(request.response["CheckoutRequestID"])
    callbacks = {
        c.payload["Body"]["stkCallback"]["CheckoutRequestID"]: c for c in control.callbacks("stk")
    }
    return accepted, callbacks


def expected_status(result_code: Any) -> str:
    return "succeeded" if str(result_code) == "0" else "failed"


def test_sigkill_under_load_loses_nothing_and_pushes_nothing_twice(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    orders_n = size(ci=40, soak=600)
    kills = size(ci=3, soak=12)
    rng = random.Random(3_2026)
    orders = make_orders(orders_n, "crash")
    for order in orders[::5]:
        order.amount = CANCELLED_AMOUNT
    hooks = WebhookReceiver()
    try:
        with (
            emulator_process(
                ["--stk-delay", "0.6", "--seed", "3"], free_port(), tmp_path / "emulator.log"
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            control.add_rule(operation="stk", amount=CANCELLED_AMOUNT, result_code=1032)
            env = gateway_env(url, daraja_url, hooks.url)
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            gateway.start()
            load = Load([gateway.url], orders, threads=4)
            load.start()
            # Kill points: after random numbers of answered orders, plus a random delay so
            # the kill lands anywhere in a request's life (before, during or after commits).
            points = sorted(rng.sample(range(2, orders_n - 2), kills))
            for point in points:
                wait_for(lambda p=point: load.answered >= p, 120, f"{point} orders answered")
                time.sleep(rng.uniform(0.0, 0.4))
                gateway.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                gateway.start()
            load.join(timeout=300)
            with api_client(gateway.url) as api:
                ids = {pid for o in orders for pid in o.payment_ids}

                def settled() -> bool:
                    payments = all_payments(api)
                    return all(payments.get(i, {}).get("status") in TERMINAL for i in ids)

                wait_for(settled, size(120, 1_800), "every payment terminal")
                control.wait_idle(30)
                events = all_events(api)
                wait_for(
                    lambda: {e["id"] for e in events} <= set(hooks.by_event),
                    120,
                    "every event delivered by webhook",
                )
                payments = all_payments(api)
            gateway.stop()
            accepted, callbacks = daraja_truth(control)
    finally:
        hooks.close()

    by_ref = {p["account_reference"]: p for p in payments.values()}
    lost: list[str] = []
    # The known gap: Daraja accepted the push (the customer paid) but the gateway died before
    # committing the CheckoutRequestID, so the payment is "unknown" with nothing to query and
    # expires as failed. Its callback names an id the ledger never learnt (kept raw if the
    # gateway was up to receive it). Counted apart from "lost", and reported.
    paid_not_recorded: list[str] = []
    raw_kept = 0
    for order in orders:
        payment = by_ref.get(order.reference)
        pushes = accepted.get(order.reference, [])
        if payment is None:
            lost.append(f"{order.reference}: no payment")
            continue
        if not pushes:
            if payment["status"] not in ("failed", "rejected"):
                lost.append(f"{order.reference}: never pushed, ledger {payment['status']}")
            continue
        callback = callbacks.get(pushes[0])
        if callback is None:
            continue  # the customer never answered: any terminal state is right
        truth = expected_status(callback.payload["Body"]["stkCallback"]["ResultCode"])
        if payment["status"] == truth:
            continue
        if (
            truth == "succeeded"
            and payment["checkout_request_id"] is None
            and payment["failure_reason"] == "expired"
        ):
            paid_not_recorded.append(order.reference)
            raw_kept += any(a.status_code == 404 for a in callback.attempts)
        else:
            lost.append(f"{order.reference}: Daraja says {truth}, ledger {payment['status']}")
    acknowledged = [c for c in callbacks.values() if any(a.status_code == 200 for a in c.attempts)]
    by_checkout = {p["checkout_request_id"]: p for p in payments.values()}
    unapplied = [
        c
        for c in acknowledged
        if str(
            by_checkout.get(c.payload["Body"]["stkCallback"]["CheckoutRequestID"], {}).get(
                "result_code"
            )
        )
        != str(c.payload["Body"]["stkCallback"]["ResultCode"])
    ]
    _, applied_twice = event_audit(events)
    counts = {
        "kills": kills,
        "gateway_starts": gateway.process.starts,
        "orders": orders_n,
        "api_retries": sum(o.attempts - 1 for o in orders),
        "payments": len(payments),
        "keys_with_two_payments": sum(1 for o in orders if len(o.payment_ids) > 1),
        "stk_pushes": sum(len(v) for v in accepted.values()),
        "duplicate_stk_pushes": sum(len(v) - 1 for v in accepted.values() if len(v) > 1),
        "never_pushed": sum(1 for o in orders if o.reference not in accepted),
        "callbacks_acknowledged": len(acknowledged),
        "acknowledged_not_applied": len(unapplied),
        "terminal": sum(1 for p in payments.values() if p["status"] in TERMINAL),
        "succeeded": sum(1 for p in payments.values() if p["status"] == "succeeded"),
        "failed_expired": sum(1 for p in payments.values() if p["failure_reason"] == "expired"),
        "lost": len(lost),
        "paid_but_not_recorded": len(paid_not_recorded),
        "of_which_callback_kept_raw": raw_kept,
        "applied_twice": applied_twice,
        "webhooks_missing": len({e["id"] for e in events} - set(hooks.by_event)),
        "webhook_redeliveries": hooks.duplicates,
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "lost",
            "applied_twice",
            "keys_with_two_payments",
            "duplicate_stk_pushes",
            "acknowledged_not_applied",
            "webhooks_missing",
        ),
        must_equal=(("terminal", "payments"), ("payments", "orders")),
        gaps=("paid_but_not_recorded",),
        about=(
            "`pesa serve` (SQLite file or PostgreSQL) with the emulator in its own process "
            "(customers answer after 0.6 s, 20% cancel); 4 merchant threads create payments "
            "with Idempotency-Keys and retry until answered; the gateway is SIGKILLed after a "
            "random number of answered orders plus a random delay, and restarted on the same "
            "port. Truth is the emulator's record of pushes, customer answers and "
            "acknowledged callbacks. Webhook redeliveries after a crash are allowed "
            "(at-least-once) and counted."
        ),
    )
    assert result.passed, (result.failures, lost[:10], gateway.process.output()[-3000:])
