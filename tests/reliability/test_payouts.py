"""Scenario 10: bulk payouts through every money-out fault, with the gateway SIGKILLed.

A batch of payouts goes out through ``pesa serve`` to the emulator in its own process,
which loses some answers (the request was carried out, the gateway got a 504), drops some
Results, times some out in its queue (carried out anyway), carries some out slowly, refuses
some for insufficient funds, and applies spike arrest. The gateway is SIGKILLed while it
sends, and restarted on the same port.

Truth is Daraja's: the emulator's request log says which B2C requests it accepted (one per
OriginatorConversationID at most, or someone was paid twice), the rules say which of them
paid, and its Utility account says how much left in all.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pesa.emulator import EmulatorControl

from ._harness import free_port, size
from ._processes import (
    Gateway,
    WebhookReceiver,
    api_client,
    emulator_process,
    gateway_env,
    wait_for,
)
from ._report import Recorder

SCENARIO = "10. Payouts"
SHORTCODE = "174379"
B2C = "/mpesa/b2c/v3/paymentrequest"
# The emulator answers by amount: what each does to a payout.
RESULT_LOST = 11  # carried out, its Result dropped
FAILS = 12  # insufficient funds (ResultCode 1)
QUEUE_TIMEOUT = 13  # QueueTimeOutURL called, carried out anyway
SLOW = 14  # carried out 3 s later
OPEN = ("created", "pending", "unknown")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]


def _all_payouts(api: Any) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/payouts", params=params).json()
        found.update((p["id"], p) for p in page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def _events(api: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after:
            params["after"] = after
        page = api.get("/v1/events", params=params).json()
        events.extend(page["data"])
        after = page["next_cursor"]
        if not page["data"]:
            return events


def test_bulk_payouts_through_faults_and_crashes_pay_everyone_once(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    rows = size(ci=200, soak=3_000)
    kills = size(ci=1, soak=4)
    rng = random.Random(10_2026)
    amounts = [
        rng.choice([10, 20, 30, RESULT_LOST, FAILS, QUEUE_TIMEOUT, SLOW]) for _ in range(rows)
    ]
    hooks = WebhookReceiver()
    gateway: Gateway | None = None
    try:
        with (
            emulator_process(
                ["--result-delay", "0.2", "--seed", "10", "--rate-limit", "60"],
                free_port(),
                tmp_path / "emulator.log",
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            control.add_rule(operation="b2c", amount=RESULT_LOST, callback="drop")
            control.add_rule(operation="b2c", amount=FAILS, result_code=1)
            control.add_rule(
                operation="b2c", amount=QUEUE_TIMEOUT, callback="timeout", processed=True
            )
            control.add_rule(operation="b2c", amount=SLOW, delay=3.0)
            control.add_fault(kind="lost_answer", rate=0.1, path="/mpesa/b2c")
            before = control.balances(SHORTCODE)["Utility Account"]
            env = gateway_env(
                url,
                daraja_url,
                hooks.url,
                # Daraja's limit is per app: B2C sends and status queries share it.
                PESA_PAYOUT_RATE="40",
                PESA_RECONCILE_QUERY_RATE="15",
                PESA_PAYOUT_STATUS_AFTER="2",
                PESA_PAYOUT_DEADLINE="30",
                PESA_RECONCILE_RECHECK_CAP="2",
            )
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            gateway.start()
            body = {
                "batch_id": "reliability",
                "payouts": [
                    {"phone": f"2547{i:08d}", "amount": a, "remarks": "Reliability"}
                    for i, a in enumerate(amounts)
                ],
            }
            with api_client(gateway.url) as api:
                assert api.post("/v1/payouts/batches", json=body).status_code == 202
            points = sorted(rng.sample(range(rows // 10, rows * 8 // 10), kills))
            for point in points:
                wait_for(lambda p=point: len(control.requests(B2C)) >= p, 120, f"{point} sent")
                time.sleep(rng.uniform(0.0, 0.3))
                gateway.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                gateway.start()
                # The batch is posted again, as a resumed client would: nothing is stored twice.
                with api_client(gateway.url) as api:
                    again = api.post("/v1/payouts/batches", json=body)
                    assert again.status_code == 202 and again.json()["created"] == 0
            with api_client(gateway.url) as api:

                def settled() -> bool:
                    # Final, or flagged for a person at the deadline (still unknown).
                    return all(
                        p["status"] not in OPEN or p["flagged"] for p in _all_payouts(api).values()
                    )

                wait_for(settled, size(180, 1_800), "every payout final or flagged", 2.0)
                control.wait_idle(30)
                payouts = _all_payouts(api)
                events = _events(api)
                wait_for(
                    lambda: {e["id"] for e in events} <= set(hooks.by_event),
                    120,
                    "every event delivered by webhook",
                )
            gateway.stop()
            requests = control.requests(B2C)
            after = control.balances(SHORTCODE)["Utility Account"]
            status_queries = len(control.requests("/mpesa/transactionstatus/v1/query"))
    finally:
        if gateway is not None:
            gateway.stop()
        hooks.close()

    accepted = Counter(
        str(r.body["OriginatorConversationID"]) for r in requests if r.status_code == 200
    )
    errors = Counter(
        str(r.response.get("errorCode"))
        for r in requests
        if isinstance(r.response, dict) and r.status_code >= 400
    )
    by_ocid = {p["originator_conversation_id"]: p for p in payouts.values()}
    paid_truth = {ocid for ocid in accepted if by_ocid[ocid]["amount"] != FAILS}
    succeeded = {
        p["originator_conversation_id"] for p in payouts.values() if p["status"] == "succeeded"
    }
    finals: dict[str, Counter[str]] = {}
    for event in events:
        if event["type"].startswith("payout."):
            finals.setdefault(event["data"]["payout"]["id"], Counter())[event["type"]] += 1
    final_types = {
        "succeeded": "payout.succeeded",
        "failed": "payout.failed",
        "rejected": "payout.rejected",
    }
    counts = {
        "kills": kills,
        "payouts": len(payouts),
        "rows": rows,
        "b2c_requests": len(requests),
        "answers_lost": sum(1 for r in requests if getattr(r, "answer_lost", False)),
        "duplicates_refused": errors["500.002.1001"],
        "spike_arrests": errors["500.003.02"],
        "status_queries": status_queries,
        "succeeded": len(succeeded),
        "failed": sum(1 for p in payouts.values() if p["status"] == "failed"),
        "unsettled": sum(1 for p in payouts.values() if p["status"] in OPEN and not p["flagged"]),
        "flagged_unknown": sum(1 for p in payouts.values() if p["status"] in OPEN and p["flagged"]),
        "paid_left_unknown": sum(
            1
            for p in payouts.values()
            if p["status"] in OPEN and p["originator_conversation_id"] in paid_truth
        ),
        "flagged_final": sum(
            1 for p in payouts.values() if p["status"] not in OPEN and p["flagged"]
        ),
        "paid_twice": sum(1 for n in accepted.values() if n > 1),
        "paid_recorded_failed": sum(
            1
            for p in payouts.values()
            if p["status"] in ("failed", "rejected")
            and p["originator_conversation_id"] in paid_truth
        ),
        "recorded_paid_unpaid": len(succeeded - paid_truth),
        # Every shilling that left is a succeeded payout, or one left unknown for a person.
        "kes_paid_not_matching": int(
            abs(
                (before - after)
                - sum(
                    Decimal(p["amount"])
                    for p in payouts.values()
                    if p["status"] == "succeeded"
                    or (p["status"] in OPEN and p["originator_conversation_id"] in paid_truth)
                )
            )
        ),
        "final_event_missing_or_twice": sum(
            1
            for p in payouts.values()
            if p["status"] in final_types
            and finals.get(p["id"], Counter())[final_types[p["status"]]] != 1
        ),
        "webhooks_missing": len({e["id"] for e in events} - set(hooks.by_event)),
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "paid_twice",
            "paid_recorded_failed",
            "recorded_paid_unpaid",
            "kes_paid_not_matching",
            "final_event_missing_or_twice",
            "unsettled",
            "webhooks_missing",
        ),
        must_equal=(("payouts", "rows"),),
        # Never failed nor paid twice, but left for a person: a failed B2C whose Result was
        # lost (see about); a paid one only when the machine is so loaded that the last
        # status answer misses its grace period (the flag says "verify").
        # A late answer then settles it, the flag staying ("flagged_final").
        gaps=("flagged_unknown", "paid_left_unknown", "flagged_final"),
        about=(
            "One batch through `pesa serve` (B2C paced at 40/s, status queries at 15/s) to "
            "`pesa emulator` in its own process (spike arrest beyond 60/s), which loses 10% "
            "of B2C answers (carried out, the gateway gets a 504), drops the Result of one "
            "amount in seven, times one in "
            "seven out in its queue (carried out anyway), carries one in seven out 3 s late, "
            "and refuses one in seven for insufficient funds; the gateway is SIGKILLed while "
            "it sends and restarted, and the batch is posted again. Truth is the emulator's "
            "request log (accepted B2C per OriginatorConversationID), its rules (which paid) "
            "and its Utility account. The gap: a payout refused for insufficient funds whose "
            "failure Result was lost (the gateway was down) is a request Daraja holds (a "
            "re-send is a duplicate) but Transaction Status cannot find (the emulator, like "
            "Daraja as far as is known, records no failed B2C): it stays unknown and is "
            "flagged after the deadline (30 s here) and one last status query, never failed "
            "nor paid twice."
        ),
    )
    unsettled_paid = [
        (p["id"], p["amount"], p["attempts"], p["flag_reason"])
        for p in payouts.values()
        if p["status"] in OPEN and p["originator_conversation_id"] in paid_truth
    ]
    assert result.passed, (result.failures, unsettled_paid[:5])
