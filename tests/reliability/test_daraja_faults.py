"""Scenario 4: Daraja misbehaves (5xx, spike arrest, slow answers, revoked tokens) while
``pesa serve`` takes payments; 30% of callbacks are lost too, so the reconciler has to get
its answers through the same faults.

Pass: the gateway never crashes, no STK push is processed twice (a push refused for a bad
token is re-sent once with a new token, which Daraja never processed), every payment is
settled and agrees with what its customer did.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
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

SCENARIO = "4. Daraja faults"
CANCELLED, DROPPED, CANCELLED_DROPPED = 13, 14, 15
FAULTS = [
    {"kind": "http_500", "rate": 0.07},
    {"kind": "http_503", "rate": 0.03},
    {"kind": "spike_arrest", "rate": 0.05},
    {"kind": "invalid_token", "rate": 0.05},
    {"kind": "slow", "rate": 0.2, "delay": 0.8},
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]


def test_daraja_faults_never_crash_the_gateway_nor_push_twice_and_every_payment_settles(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    orders_n = size(ci=40, soak=300)
    rng = random.Random(4_2026)
    orders = make_orders(orders_n, "fault")
    for order in orders:
        # 15% cancel, 25% pay but lose the callback, 5% cancel and lose it, 55% pay.
        draw = rng.random()
        if draw < 0.15:
            order.amount, order.expected_code = CANCELLED, "1032"
        elif draw < 0.40:
            order.amount = DROPPED
        elif draw < 0.45:
            order.amount, order.expected_code = CANCELLED_DROPPED, "1032"
    hooks = WebhookReceiver()
    started: list[Gateway | Load] = []  # stopped whatever happens, never left running
    try:
        with (
            emulator_process(
                ["--stk-delay", "0.5", "--seed", "4"], free_port(), tmp_path / "emulator.log"
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            control.add_rule(operation="stk", amount=CANCELLED, result_code=1032)
            control.add_rule(operation="stk", amount=DROPPED, callback="drop")
            control.add_rule(
                operation="stk", amount=CANCELLED_DROPPED, result_code=1032, callback="drop"
            )
            for fault in FAULTS:
                control.add_fault(**fault)
            env = gateway_env(url, daraja_url, hooks.url)
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            started.append(gateway)
            gateway.start()
            load = Load([gateway.url], orders, threads=4)
            started.append(load)
            load.start()
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
            alive = gateway.process.alive
            healthy = alive and httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
            gateway.stop()
            control.clear_faults()
            truth = DarajaTruth.read(control)
    finally:
        for running in reversed(started):
            running.stop()
        hooks.close()

    verdict = compare(orders, payments, truth)
    by_payment, applied_twice = event_audit(events)
    log = gateway.process.output()
    counts = {
        "orders": orders_n,
        "payments": len(payments),
        "daraja_requests": truth.total_requests,
        "answered_http_500": truth.error_codes["500.003.1001"],
        "answered_http_503": truth.error_codes["503"],
        "answered_spike_arrest": truth.error_codes["500.003.02"],
        "answered_invalid_token": truth.error_codes["404.001.03"],
        "stk_push_requests": sum(truth.requests_by_ref.values()),
        "stk_pushes_accepted": sum(len(v) for v in truth.accepted.values()),
        "pushes_processed_twice": sum(len(v) - 1 for v in truth.accepted.values() if len(v) > 1),
        "stk_queries": sum(truth.queries_by_checkout.values()),
        "rejected": sum(1 for p in payments.values() if p["status"] == "rejected"),
        "failed_expired": sum(1 for p in payments.values() if p["failure_reason"] == "expired"),
        "terminal": sum(1 for p in payments.values() if p["status"] in TERMINAL),
        "lost": len(verdict.lost),
        "paid_but_not_recorded": len(verdict.paid_not_recorded),
        "acknowledged_not_applied": acknowledged_not_applied(payments, truth),
        "applied_twice": applied_twice,
        "events": len(events),
        "final_event_missing": without_final_event(payments, by_payment),
        "gateway_crashed": 0 if healthy else 1,
        "tracebacks_logged": log.count("Traceback"),
        "webhooks_missing": len({e["id"] for e in events} - set(hooks.by_event)),
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "lost",
            "applied_twice",
            "final_event_missing",
            "pushes_processed_twice",
            "acknowledged_not_applied",
            "gateway_crashed",
            "webhooks_missing",
        ),
        must_equal=(("terminal", "payments"), ("payments", "orders")),
        gaps=("paid_but_not_recorded",),
        about=(
            "`pesa serve` against the emulator in its own process with faults on every Daraja "
            "path, OAuth included: 7% HTTP 500, 3% HTTP 503, 5% spike arrest, 5% revoked "
            "token, 20% slowed by 0.8 s (under the client timeout); customers cancel 20% and "
            "30% of callbacks are dropped. A push answered 5xx may have been processed as far "
            "as the gateway can tell: it becomes `unknown` and, with no CheckoutRequestID to "
            "query, fails as expired (`failed_expired`); the emulator's record shows whether "
            "Daraja processed it, so a paid one would count as `paid_but_not_recorded`. "
            "Tracebacks in the gateway's log are counted (a handled error logged with its "
            "stack), not failed."
        ),
    )
    assert result.passed, (result.failures, verdict.lost[:10], log[-3000:])
