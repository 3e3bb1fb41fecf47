"""Scenario 8: callbacks race the reconciler.

Every customer answers within half a second, but Daraja's callback is held back by about
``PESA_RECONCILE_MIN_AGE`` (0.9 to 2.4 s, while the reconciler's first query comes 2 s
after the payment was created): for each payment either the callback or the STK query
arrives first, and often both within milliseconds. Slow callbacks are normal (REFERENCE §11).

Pass: no payment flagged (both sources tell the truth, so a flag would be false), every
paid payment holds the receipt Daraja's callback carried (a callback arriving after the
query completes the record), every payment ends as its customer answered, and exactly one
final event per payment. The scenario must actually race: some payments are settled by the
query first and completed by their callback (``completed_by_late_callback``) and some by the
callback first.
"""

from __future__ import annotations

import random
from collections import Counter
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

SCENARIO = "8. Callbacks racing the reconciler"
MIN_AGE = 2.0
CUSTOMER_DELAY = 0.5
# Amount → extra seconds before Daraja delivers the callback (customer answers at 0.5 s):
# callbacks land between 1.4 s and 2.9 s after the push, around the first query at 2 s.
CALLBACK_DELAYS = {20: 0.9, 21: 1.2, 22: 1.4, 23: 1.5, 24: 1.6, 25: 1.9, 26: 2.4}
CANCELLED_SHARE = 0.15

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]


def _receipt(callback: object) -> str | None:
    payload = callback.payload  # type: ignore[attr-defined]  # the emulator's record
    items = payload["Body"]["stkCallback"].get("CallbackMetadata", {}).get("Item", [])
    for item in items:
        if item.get("Name") == "MpesaReceiptNumber":
            return str(item.get("Value"))
    return None


def test_callbacks_racing_the_reconciler_are_never_flagged_and_complete_the_record(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    orders_n = size(ci=150, soak=1_000)
    rng = random.Random(8_2026)
    orders = make_orders(orders_n, "race")
    for order in orders:
        if rng.random() < CANCELLED_SHARE:
            order.expected_code = "1032"
    hooks = WebhookReceiver()
    started: list[Gateway | Load] = []
    try:
        with (
            emulator_process(
                ["--stk-delay", str(CUSTOMER_DELAY), "--seed", "8"],
                free_port(),
                tmp_path / "emulator.log",
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            # Rules are tried newest first: the general delays, then the cancellations.
            for amount, delay in CALLBACK_DELAYS.items():
                control.add_rule(
                    operation="stk", amount=amount, callback="delay", callback_delay=delay
                )
            for order in orders:
                if order.expected_code != "0":
                    control.add_rule(
                        operation="stk",
                        phone=order.phone,
                        result_code=1032,
                        callback="delay",
                        callback_delay=CALLBACK_DELAYS[order.amount],
                    )
            env = gateway_env(
                url,
                daraja_url,
                hooks.url,
                PESA_RECONCILE_MIN_AGE=str(MIN_AGE),
                PESA_RECONCILE_RECHECK_INTERVAL="0.3",
                PESA_RECONCILE_QUERY_RATE="200",
                PESA_RECONCILE_QUERY_BURST="50",
                PESA_RECONCILE_DEADLINE="120",
                PESA_CALLBACK_ON_MISMATCH="refuse",
            )
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            started.append(gateway)
            gateway.start()
            load = Load([gateway.url], orders, threads=4)
            started.append(load)
            load.start()
            load.join(timeout=size(240, 3_000))
            with api_client(gateway.url) as api:
                ids = {pid for o in orders for pid in o.payment_ids}

                def settled() -> bool:
                    payments = all_payments(api)
                    return all(payments.get(i, {}).get("status") in TERMINAL for i in ids)

                wait_for(settled, size(120, 1_800), "every payment terminal")
                # Every delayed callback delivered (and answered) before the audit.
                assert control.wait_idle(60)
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
    paid = [p for p in payments.values() if p["status"] == "succeeded"]
    receipt_wrong = 0
    for payment in paid:
        callback = truth.callbacks.get(payment["checkout_request_id"])
        if callback is None or _receipt(callback) != payment["receipt"]:
            receipt_wrong += 1
    kinds: Counter[str] = Counter()
    for counts in by_payment.values():
        if counts["payment.updated"]:
            kinds["completed_by_late_callback"] += 1
    finals = Counter(
        sum(c[t] for t in ("payment.succeeded", "payment.failed", "payment.rejected"))
        for c in by_payment.values()
    )
    counts = {
        "payments": len(payments),
        "orders": orders_n,
        "paid": len(paid),
        "cancelled": sum(1 for p in payments.values() if p["status"] == "failed"),
        "stk_queries": sum(truth.queries_by_checkout.values()),
        "callbacks_sent": len(truth.callbacks),
        # A callback that overtakes the commit of the push's answer is stored, answered 404
        # and applied when the answer is recorded: counted, not a failure.
        "callbacks_before_push_answer": sum(
            1 for c in truth.callbacks.values() if not any(a.status_code == 200 for a in c.attempts)
        ),
        "completed_by_late_callback": kinds["completed_by_late_callback"],
        "settled_by_callback_first": len(paid) - kinds["completed_by_late_callback"],
        "flagged": sum(1 for p in payments.values() if p["flagged"]),
        "receipt_missing_or_wrong": receipt_wrong,
        "lost": len(verdict.lost),
        "applied_twice": applied_twice,
        "not_one_final_event": sum(n for k, n in finals.items() if k != 1),
        "final_event_missing": without_final_event(payments, by_payment),
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "flagged",
            "receipt_missing_or_wrong",
            "lost",
            "applied_twice",
            "not_one_final_event",
            "final_event_missing",
        ),
        must_equal=(("payments", "orders"), ("callbacks_sent", "payments")),
        about=(
            "`pesa serve` against the emulator in its own process; each customer answers in "
            f"{CUSTOMER_DELAY} s and Daraja holds the callback back 0.9-2.4 s more, around "
            f"the reconciler's first query at {MIN_AGE:g} s, so query and callback race. "
            f"{CANCELLED_SHARE:.0%} of customers cancel. A query that wins settles the "
            "payment without a receipt; its callback then completes the record "
            "(`payment.updated`) instead of being flagged as a second success."
        ),
    )
    assert result.passed, (result.failures, verdict.lost[:10])
    # The scenario is only meaningful if both orders of arrival happened.
    assert counts["completed_by_late_callback"] > 0, counts
    assert counts["settled_by_callback_first"] > 0, counts
