"""Scenario 7: two ``pesa serve`` processes on one PostgreSQL database, under load.

Both take payments, receive callbacks, reconcile and dispatch webhooks at once (claims
with ``FOR UPDATE SKIP LOCKED`` and leases). 30% of callbacks are dropped so both
reconcilers have work. Pass: nothing lost, nothing applied twice, no webhook delivered
twice (no process crashes here, so at-least-once must come out exactly once).
"""

from __future__ import annotations

import random
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

SCENARIO = "7. Two gateways, one PostgreSQL"
CANCELLED, DROPPED = 13, 14

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(size(300, 3_600))]


def test_two_gateway_processes_never_reconcile_nor_deliver_twice(
    postgres_url: str, tmp_path: Path, recorder: Recorder
) -> None:
    orders_n = size(ci=60, soak=1_000)
    rng = random.Random(7_2026)
    orders = make_orders(orders_n, "twin")
    for order in orders:
        draw = rng.random()
        if draw < 0.2:
            order.amount, order.expected_code = CANCELLED, "1032"
        elif draw < 0.5:
            order.amount = DROPPED
    hooks = WebhookReceiver()
    started: list[Gateway | Load] = []  # stopped whatever happens, never left running
    try:
        with (
            emulator_process(
                ["--stk-delay", "0.5", "--seed", "7"], free_port(), tmp_path / "emulator.log"
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            control.add_rule(operation="stk", amount=CANCELLED, result_code=1032)
            control.add_rule(operation="stk", amount=DROPPED, callback="drop")
            env = gateway_env(postgres_url, daraja_url, hooks.url)
            first = Gateway(env, tmp_path / "gateway-1.log", free_port())
            started.append(first)
            first.start()  # migrates the schema before the second one starts
            second = Gateway(env, tmp_path / "gateway-2.log", free_port())
            started.append(second)
            second.start()
            load = Load([first.url, second.url], orders, threads=6)
            started.append(load)
            load.start()
            load.join(timeout=300)
            with api_client(first.url) as api:
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
            alive = first.process.alive and second.process.alive
            first.stop()
            second.stop()
            truth = DarajaTruth.read(control)
    finally:
        for running in reversed(started):
            running.stop()
        hooks.close()

    verdict = compare(orders, payments, truth)
    by_payment, applied_twice = event_audit(events)
    counts = {
        "gateways": 2,
        "orders": orders_n,
        "payments": len(payments),
        "stk_pushes_accepted": sum(len(v) for v in truth.accepted.values()),
        "pushes_processed_twice": sum(len(v) - 1 for v in truth.accepted.values() if len(v) > 1),
        "callbacks_dropped": sum(
            1 for o in orders if o.amount == DROPPED and o.reference in truth.accepted
        ),
        "stk_queries": sum(truth.queries_by_checkout.values()),
        "terminal": sum(1 for p in payments.values() if p["status"] in TERMINAL),
        "lost": len(verdict.lost),
        "paid_but_not_recorded": len(verdict.paid_not_recorded),
        "acknowledged_not_applied": acknowledged_not_applied(payments, truth),
        "applied_twice": applied_twice,
        "events": len(events),
        "final_event_missing": without_final_event(payments, by_payment),
        "webhooks_missing": len({e["id"] for e in events} - set(hooks.by_event)),
        "webhooks_delivered_twice": hooks.duplicates,
        "process_crashed": 0 if alive else 1,
    }
    result = recorder.record(
        SCENARIO,
        "postgresql",
        counts,
        must_be_zero=(
            "lost",
            "applied_twice",
            "final_event_missing",
            "pushes_processed_twice",
            "acknowledged_not_applied",
            "webhooks_missing",
            "webhooks_delivered_twice",
            "process_crashed",
        ),
        must_equal=(("terminal", "payments"), ("payments", "orders")),
        gaps=("paid_but_not_recorded",),
        about=(
            "Two `pesa serve` processes (each with its reconciler and dispatcher) on one "
            "PostgreSQL schema; 6 merchant threads spread payments over both; the emulator "
            "(own process) cancels 20% and drops 30% of callbacks."
        ),
    )
    assert result.passed, (result.failures, verdict.lost[:10])
