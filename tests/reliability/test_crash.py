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

import pytest

from pesa.emulator import EmulatorControl

from ._harness import free_port, size
from ._processes import (
    TERMINAL,
    DarajaTruth,
    Gateway,
    Load,
    WebhookReceiver,
    acknowledged_not_applied,
    all_events,
    all_payments,
    api_client,
    compare,
    emulator_process,
    event_audit,
    gateway_env,
    make_orders,
    wait_for,
    without_final_event,
)
from ._report import Recorder

SCENARIO = "3. Crash"
CANCELLED_AMOUNT = 13  # the emulator's customers cancel (1032) payments of this amount

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]


def test_sigkill_under_load_loses_nothing_and_pushes_nothing_twice(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    orders_n = size(ci=40, soak=300)
    kills = size(ci=3, soak=10)
    rng = random.Random(3_2026)
    orders = make_orders(orders_n, "crash")
    for order in orders[::5]:
        order.amount, order.expected_code = CANCELLED_AMOUNT, "1032"
    hooks = WebhookReceiver()
    started: list[Gateway | Load] = []  # stopped whatever happens, never left running
    try:
        with (
            emulator_process(
                ["--stk-delay", "5", "--seed", "3"], free_port(), tmp_path / "emulator.log"
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            control.add_rule(operation="stk", amount=CANCELLED_AMOUNT, result_code=1032)
            env = gateway_env(url, daraja_url, hooks.url)
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            started.append(gateway)
            gateway.start()
            load = Load([gateway.url], orders, threads=4)
            started.append(load)
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
            truth = DarajaTruth.read(control)
    finally:
        for running in reversed(started):
            running.stop()
        hooks.close()

    verdict = compare(orders, payments, truth)
    by_payment, applied_twice = event_audit(events)
    counts = {
        "kills": kills,
        "gateway_starts": gateway.process.starts,
        "orders": orders_n,
        "api_retries": sum(o.attempts - 1 for o in orders),
        "payments": len(payments),
        "keys_with_two_payments": sum(1 for o in orders if len(o.payment_ids) > 1),
        "stk_pushes": sum(len(v) for v in truth.accepted.values()),
        "duplicate_stk_pushes": sum(len(v) - 1 for v in truth.accepted.values() if len(v) > 1),
        "never_pushed": sum(1 for o in orders if o.reference not in truth.accepted),
        "callbacks_acknowledged": sum(
            1 for c in truth.callbacks.values() if any(a.status_code == 200 for a in c.attempts)
        ),
        "acknowledged_not_applied": acknowledged_not_applied(payments, truth),
        "terminal": sum(1 for p in payments.values() if p["status"] in TERMINAL),
        "succeeded": sum(1 for p in payments.values() if p["status"] == "succeeded"),
        "failed_expired": sum(1 for p in payments.values() if p["failure_reason"] == "expired"),
        "lost": len(verdict.lost),
        "paid_but_not_recorded": len(verdict.paid_not_recorded),
        "of_which_callback_kept_raw": verdict.raw_kept,
        "applied_twice": applied_twice,
        "events": len(events),
        "final_event_missing": without_final_event(payments, by_payment),
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
            "final_event_missing",
            "keys_with_two_payments",
            "duplicate_stk_pushes",
            "acknowledged_not_applied",
            "webhooks_missing",
        ),
        must_equal=(("terminal", "payments"), ("payments", "orders")),
        gaps=("paid_but_not_recorded",),
        about=(
            "`pesa serve` (SQLite file or PostgreSQL) with the emulator in its own process "
            "(customers answer after 5 s, longer than a restart; 20% cancel); 4 merchant "
            "threads create payments "
            "with Idempotency-Keys and retry until answered; the gateway is SIGKILLed after a "
            "random number of answered orders plus a random delay, and restarted on the same "
            "port. Truth is the emulator's record of pushes, customer answers and "
            "acknowledged callbacks. Webhook redeliveries after a crash are allowed "
            "(at-least-once) and counted."
        ),
    )
    assert result.passed, (result.failures, verdict.lost[:10], gateway.process.output()[-3000:])
