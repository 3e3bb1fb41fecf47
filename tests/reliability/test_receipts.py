"""Scenario 9: customers pay a PayBill from the phone menu; confirmations repeat and go missing.

The real ``pesa serve`` (PostgreSQL or SQLite) receives C2B confirmations from ``pesa
emulator`` in its own process. 30% of confirmations are delivered twice, 20% are never
delivered; half the account numbers have an expected payment. Every receipt is confirmed by
Transaction Status before it counts; the lost ones are recovered by lookup ("I paid, here
is my code"). Pass: every payment the emulator's books hold is a confirmed receipt, each
exactly once (one ``receipt.received`` per TransID), every expected payment paid with
exactly what its customer paid, nothing refuted.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa.emulator import EmulatorControl

from ._harness import free_port, size
from ._processes import (
    Gateway,
    WebhookReceiver,
    all_events,
    api_client,
    emulator_process,
    gateway_env,
    wait_for,
)
from ._report import Recorder

SCENARIO = "9. Receipts (C2B)"
DUPLICATED_SHARE = 0.3
DROPPED_SHARE = 0.2
PAYBILL = "600997"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 3_600))]

ACCOUNTS = """
[accounts.paybill]
shortcode = "600997"
initiator_name = "testapi"
initiator_password = "Safaricom999!*!"
certificate_path = "emulator.pem"
c2b_register = true
"""


def all_receipts(api: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500}
    while True:
        page = api.get("/v1/receipts", params=params).json()
        found += page["data"]
        if page["next_cursor"] is None:
            return found
        params = {"limit": 500, "cursor": page["next_cursor"]}


def test_every_paid_confirmation_is_one_confirmed_receipt(
    database: tuple[str, str], tmp_path: Path, recorder: Recorder
) -> None:
    backend, url = database
    customers = size(ci=60, soak=1_000)
    rng = random.Random(9_2026)
    references = [f"RCP-{n:05d}" for n in range(customers)]
    draws = {r: rng.random() for r in references}
    duplicated = {r for r in references if draws[r] < DUPLICATED_SHARE}
    dropped = {
        r for r in references if DUPLICATED_SHARE <= draws[r] < DUPLICATED_SHARE + DROPPED_SHARE
    }
    expected_refs = set(rng.sample(references, customers // 2))
    amounts = {r: 50 + n for n, r in enumerate(references)}
    hooks = WebhookReceiver()
    gateway: Gateway | None = None
    try:
        port = free_port()
        with (
            emulator_process(
                ["--result-delay", "0.05", "--seed", "92026"], port, tmp_path / "emulator.log"
            ) as daraja_url,
            EmulatorControl(daraja_url) as control,
        ):
            (tmp_path / "emulator.pem").write_bytes(control.certificate())
            (tmp_path / "accounts.toml").write_text(ACCOUNTS, encoding="utf-8")
            for reference in duplicated:
                control.add_rule(operation="c2b", account_reference=reference, callback="duplicate")
            for reference in dropped:
                control.add_rule(operation="c2b", account_reference=reference, callback="drop")
            env = gateway_env(
                url,
                daraja_url,
                hooks.url,
                PESA_ACCOUNTS_FILE=str(tmp_path / "accounts.toml"),
                PESA_RECONCILE_DEADLINE=str(size(120, 1_800)),
                PESA_RECONCILE_RECHECK_INTERVAL="2",
            )
            gateway = Gateway(env, tmp_path / "gateway.log", free_port())
            gateway.start()
            with api_client(gateway.url) as api:
                wait_for(
                    lambda: (
                        (api.get("/v1/accounts").json()["data"][0]["c2b_registration"] or {}).get(
                            "status"
                        )
                        == "registered"
                    ),
                    30,
                    "C2B URLs registered",
                )
                for reference in sorted(expected_refs):
                    created = api.post(
                        "/v1/expected-payments",
                        json={"account_reference": reference, "amount": amounts[reference]},
                        headers={"Idempotency-Key": reference},
                    )
                    assert created.status_code == 201, created.text

                def pay(reference: str) -> Any:
                    return control.customer_pays(
                        shortcode=PAYBILL,
                        account_reference=reference,
                        amount=amounts[reference],
                        phone=f"2547{11_000_000 + int(reference[4:]):08d}",
                        wait=30,
                    )

                with ThreadPoolExecutor(8) as pool:
                    paid = dict(zip(references, pool.map(pay, references), strict=True))
                truth = {p.trans_id: r for r, p in paid.items() if p.status == "completed"}
                # The emulator's view: confirmations it did not deliver (the rule's drops,
                # and on a loaded machine a delivery it gave up on, which may still have
                # reached the gateway).
                undelivered = {
                    p.trans_id
                    for r, p in paid.items()
                    if p.status == "completed" and not p.notified
                }

                def confirmed() -> set[str]:
                    return {r["trans_id"] for r in all_receipts(api) if r["status"] == "confirmed"}

                announced = set(truth) - undelivered
                wait_for(lambda: announced <= confirmed(), size(90, 1_500), "receipts confirmed")
                time.sleep(1)  # a delivery the emulator gave up on may land a moment later
                # "I paid, here is my code": each payment the gateway never heard of.
                missing = set(truth) - {r["trans_id"] for r in all_receipts(api)}
                for trans_id in sorted(missing):
                    started = api.post(
                        "/v1/receipts/lookup",
                        json={"trans_id": trans_id, "account_reference": truth[trans_id]},
                    )
                    assert started.status_code in (200, 202), started.text
                wait_for(lambda: set(truth) <= confirmed(), size(90, 1_500), "lookups confirmed")
                time.sleep(1)  # late duplicates land
                receipts = all_receipts(api)
                events = all_events(api)
                expected = [
                    e
                    for e in api.get("/v1/expected-payments", params={"limit": 500}).json()["data"]
                ]
                stored = control.callbacks("c2b_confirmation")
    finally:
        if gateway is not None:
            gateway.stop()
        hooks.close()

    received = Counter(
        e["data"]["receipt"]["trans_id"] for e in events if e["type"] == "receipt.received"
    )
    by_trans = Counter(r["trans_id"] for r in receipts)
    delivered = [c for c in stored if c.delivered]
    delivered_ids = Counter(c.payload.get("TransID") for c in delivered)
    wrong_amounts = sum(
        1
        for e in expected
        if e["status"] != "paid" or e["paid_amount"] != amounts[e["account_reference"]]
    )
    counts = {
        "customers": customers,
        "payments_completed": len(truth),
        "confirmations_delivered": len(delivered),
        "duplicates_delivered": sum(n - 1 for n in delivered_ids.values() if n > 1),
        "confirmations_dropped": sum(1 for t, r in truth.items() if r in dropped),
        "confirmations_undelivered": len(undelivered),
        "missing_before_lookup": len(missing),
        "recovered_by_lookup": sum(1 for r in receipts if r["source"] == "lookup"),
        "receipts": len(receipts),
        "receipts_confirmed": sum(1 for r in receipts if r["status"] == "confirmed"),
        "expected_payments": len(expected_refs),
        "expected_paid_exactly": len(expected) - wrong_amounts,
        "lost": len(set(truth) - {r["trans_id"] for r in receipts if r["status"] == "confirmed"}),
        "applied_twice": sum(n - 1 for n in by_trans.values() if n > 1)
        + sum(n - 1 for n in received.values() if n > 1),
        "refuted": sum(1 for r in receipts if r["status"] == "refuted"),
        "expected_wrong": wrong_amounts,
        "webhook_bad_signatures": hooks.bad_signatures,
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=(
            "lost",
            "applied_twice",
            "refuted",
            "expected_wrong",
            "webhook_bad_signatures",
        ),
        must_equal=(
            ("receipts", "payments_completed"),
            ("receipts_confirmed", "payments_completed"),
            ("expected_paid_exactly", "expected_payments"),
        ),
        about=(
            f"Customers pay PayBill {PAYBILL} from the phone menu through the emulator's "
            f"control API ({DUPLICATED_SHARE:.0%} of confirmations delivered twice, "
            f"{DROPPED_SHARE:.0%} never delivered; half the account numbers have an expected "
            "payment) to the real `pesa serve`; each receipt is confirmed by Transaction "
            "Status before it counts, and each lost confirmation is recovered by "
            "`POST /v1/receipts/lookup` with its receipt number."
        ),
    )
    assert result.failures == [], result.failures
    assert counts["duplicates_delivered"] > 0 and counts["confirmations_dropped"] > 0
    # Dropped confirmations never reach the gateway: only a lookup records them.
    assert counts["recovered_by_lookup"] >= counts["confirmations_dropped"]
