"""End to end: payouts, batches and refunds through real ``pesa serve`` and ``pesa emulator``.

Daraja (the emulator) runs in its own process, so it keeps its books while the gateway is
killed, and its request log is the independent witness: every payout must have exactly one
accepted B2C request, however many times it was sent. On SQLite and, with
``PESA_TEST_DATABASE_URL``, on PostgreSQL.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa.emulator import EmulatorControl

from .processes import clean_env, emulator, serve
from .test_e2e import API_KEY, TOKEN, api_client, gateway_env, wait_terminal

pytestmark = pytest.mark.slow

OPEN = ("created", "pending", "unknown")
SHORTCODE = "174379"


def payout_env(database_url: str, daraja_url: str, **extra: str) -> dict[str, str]:
    return gateway_env(
        database_url,
        PESA_BASE_URL=daraja_url,
        PESA_TIMEOUT="2",
        PESA_RECONCILE_LEASE="5",
        PESA_PAYOUT_STATUS_AFTER="1",
        PESA_RECONCILE_RECHECK_INTERVAL="0.5",
        PESA_RECONCILE_RECHECK_CAP="1",
        **extra,
    )


def pay(api: httpx.Client, amount: int, key: str, phone: str = "254708374149") -> dict[str, Any]:
    response = api.post(
        "/v1/payouts",
        json={"phone": phone, "amount": amount, "remarks": "e2e payout"},
        headers={"Idempotency-Key": key},
    )
    assert response.status_code == 201, response.text
    payout: dict[str, Any] = response.json()
    return payout


def wait_payouts(
    api: httpx.Client, ids: list[str], timeout: float = 40.0, path: str = "/v1/payouts"
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    latest: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for item in ids:
            if latest.get(item, {}).get("status") in (None, *OPEN):
                latest[item] = api.get(f"{path}/{item}").json()
        if all(p["status"] not in OPEN for p in latest.values()):
            return latest
        time.sleep(0.1)
    stuck = {i: p["status"] for i, p in latest.items() if p["status"] in OPEN}
    raise AssertionError(f"not final after {timeout}s: {stuck}")


def accepted_b2c(control: EmulatorControl, expected: int = 0, timeout: float = 15) -> Counter[str]:
    """OriginatorConversationID → B2C requests Daraja accepted (the emulator's own log).

    Requests are logged as the emulator answers them: wait until ``expected`` payouts appear.
    """
    deadline = time.monotonic() + timeout
    while True:
        accepted = Counter(
            str(r.body["OriginatorConversationID"])
            for r in control.requests("/mpesa/b2c/v3/paymentrequest")
            if r.status_code == 200
        )
        if len(accepted) >= expected or time.monotonic() >= deadline:
            return accepted
        time.sleep(0.1)


def utility(control: EmulatorControl) -> Decimal:
    return control.balances(SHORTCODE)["Utility Account"]


def test_payouts_whose_answer_or_result_is_lost_are_paid_once(database_url: str) -> None:
    """Lost answers, lost Results, a re-send refused as a duplicate: each paid exactly once."""
    with (
        emulator(["--result-delay", "0.2"]) as (_, daraja_url),
        EmulatorControl(daraja_url) as control,
    ):
        before = utility(control)
        env = payout_env(database_url, daraja_url)
        with serve(env) as (process, url), api_client(url) as api:
            normal = pay(api, 100, "normal")
            # Its Result is lost: Transaction Status (by OriginatorConversationID) settles it.
            control.add_rule(operation="b2c", amount=111, callback="drop")
            result_lost = pay(api, 111, "result-lost")
            # Its answer is lost (Daraja carried it out, the client got a 504): unknown, then
            # the Result (whose ConversationID cannot be checked) is confirmed by status.
            control.add_fault(kind="lost_answer", path="/mpesa/b2c", times=1)
            answer_lost = pay(api, 222, "answer-lost")
            assert answer_lost["status"] == "unknown"
            # Answer lost and M-Pesa slow to carry it out: status finds nothing at first, the
            # payout is sent again with the same OriginatorConversationID, and Daraja refuses
            # the copy as a duplicate.
            control.add_rule(operation="b2c", amount=333, delay=4.0)
            control.add_fault(kind="lost_answer", path="/mpesa/b2c", times=1)
            resent = pay(api, 333, "re-sent")
            # Answer and Result both lost.
            control.add_rule(operation="b2c", amount=444, callback="drop")
            control.add_fault(kind="lost_answer", path="/mpesa/b2c", times=1)
            both_lost = pay(api, 444, "both-lost")
            # A genuine failure (insufficient funds) is failed, never re-sent.
            control.add_rule(operation="b2c", amount=555, result_code=1)
            failed = pay(api, 555, "failed")
            # An idempotent retry sends nothing.
            again = api.post(
                "/v1/payouts",
                json={"phone": "254708374149", "amount": 100, "remarks": "e2e payout"},
                headers={"Idempotency-Key": "normal"},
            )
            assert again.status_code == 201 and again.json()["id"] == normal["id"]
            assert again.headers["Idempotent-Replayed"] == "true"

            paid = [normal, result_lost, answer_lost, resent, both_lost]
            final = wait_payouts(api, [p["id"] for p in [*paid, failed]], timeout=60)
            for payout in paid:
                got = final[payout["id"]]
                assert got["status"] == "succeeded", got
                assert got["receipt"], got
                assert not got["flagged"], got
                assert got["recipient_name"], got
            assert final[failed["id"]]["status"] == "failed"
            assert final[failed["id"]]["result_code"] == "1"
            assert final[resent["id"]]["attempts"] >= 2
            assert control.wait_idle(20)
            # The emulator's log: one accepted B2C per payout, whatever was re-sent.
            accepted = accepted_b2c(control, len(paid) + 1)
            for payout in [*paid, failed]:
                assert accepted[payout["id"]] == 1, (payout["amount"], accepted)
            duplicates = [
                r
                for r in control.requests("/mpesa/b2c/v3/paymentrequest")
                if r.body["OriginatorConversationID"] == resent["id"] and r.status_code == 500
            ]
            assert duplicates and all(r.response["errorCode"] == "500.002.1001" for r in duplicates)
            # Daraja's books: exactly what was paid left the Utility account.
            assert before - utility(control) == sum(p["amount"] for p in paid)
            # ... and the gateway reads the same balance through its own callback.
            balance = api.get("/v1/balance").json()
            accounts = {a["name"]: Decimal(a["available"]) for a in balance["accounts"]}
            assert accounts["Utility Account"] == utility(control)
            assert balance["fresh"] is True
            # One payout.succeeded event per payout, however many Results and status answers.
            events = api.get("/v1/events", params={"limit": 1000}).json()["data"]
            succeeded = Counter(
                e["data"]["payout"]["id"] for e in events if e["type"] == "payout.succeeded"
            )
            assert succeeded == Counter(p["id"] for p in paid)
            assert "Traceback" not in process.output()


def _paid(api: httpx.Client, key: str, amount: int = 100) -> dict[str, Any]:
    created = api.post(
        "/v1/payments",
        json={
            "phone": "254708374149",
            "amount": amount,
            "account_reference": "REFUND",
            "description": "refund e2e",
        },
        headers={"Idempotency-Key": key},
    ).json()
    payment = wait_terminal(api, [created["id"]])[created["id"]]
    assert payment["status"] == "succeeded" and payment["receipt"], payment
    return payment


def _race(url: str, payment_id: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    lock = threading.Lock()
    start = threading.Barrier(len(bodies))

    def refund(index: int) -> None:
        with api_client(url) as client:
            start.wait(10)
            response = client.post(
                f"/v1/payments/{payment_id}/refund",
                json=bodies[index],
                headers={"Idempotency-Key": f"{payment_id}-{index}"},
            )
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=refund, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == len(bodies)
    return answers


def test_refunds_never_exceed_what_was_paid_under_concurrency(database_url: str) -> None:
    """Concurrent refund requests against one payment: never more than it paid, in all."""
    with (
        emulator(["--stk-delay", "0.2", "--result-delay", "1.5"]) as (_, daraja_url),
        EmulatorControl(daraja_url) as control,
    ):
        # Callbacks, not the reconciler's receipt-less query, settle the payments (a reversal
        # needs the receipt), however loaded the machine.
        env = payout_env(
            database_url, daraja_url, PESA_REFUND_PARTIAL="allow", PESA_RECONCILE_MIN_AGE="30"
        )
        with serve(env) as (process, url), api_client(url) as api:
            # Twenty parts of 30 against 100: three fit, whatever the interleaving.
            parts = _paid(api, "pay-parts")
            answers = _race(url, parts["id"], [{"amount": 30, "remarks": "part"}] * 20)
            codes = Counter(r.status_code for r in answers)
            assert codes == {201: 3, 409: 17}, [r.text for r in answers]
            assert all(
                r.json()["error"]["type"] == "refund_not_allowed"
                for r in answers
                if r.status_code == 409
            )
            made = [r.json() for r in answers if r.status_code == 201]
            # Ten "everything that remains" against another payment: one gets it all.
            whole = _paid(api, "pay-whole")
            answers = _race(url, whole["id"], [{"remarks": "all of it"}] * 10)
            assert Counter(r.status_code for r in answers) == {201: 1, 409: 9}
            full = next(r.json() for r in answers if r.status_code == 201)
            assert full["amount"] == 100

            final = wait_payouts(api, [r["id"] for r in [*made, full]], path="/v1/refunds")
            assert final[full["id"]]["status"] == "succeeded", final[full["id"]]
            assert final[full["id"]]["receipt"]
            again = api.post(
                f"/v1/payments/{whole['id']}/refund",
                json={"amount": 1},
                headers={"Idempotency-Key": "one-more"},
            )
            assert again.status_code == 409
            assert "refunded in full" in again.json()["error"]["message"]
            # Whether Daraja reverses a part is undocumented: either way, never more than paid.
            assert control.wait_idle(20)
            for payment in (parts, whole):
                reversed_ok = [
                    c
                    for c in control.callbacks("result")
                    if c.payload["Result"]["ResultCode"] == 0
                    and any(
                        p.get("Value") == payment["receipt"]
                        for p in c.payload["Result"]
                        .get("ResultParameters", {})
                        .get("ResultParameter", [])
                    )
                ]
                refunded = sum(
                    Decimal(str(p["Value"]))
                    for c in reversed_ok
                    for p in c.payload["Result"]["ResultParameters"]["ResultParameter"]
                    if p["Key"] == "Amount"
                )
                assert refunded <= 100, (payment["id"], refunded)
                stored = api.get("/v1/refunds", params={"payment_id": payment["id"]}).json()
                succeeded = sum(r["amount"] for r in stored["data"] if r["status"] == "succeeded")
                assert succeeded == refunded
            events = api.get("/v1/events", params={"limit": 1000}).json()["data"]
            finals = Counter(
                e["data"]["refund"]["id"]
                for e in events
                if e["type"] in ("refund.succeeded", "refund.failed")
            )
            assert set(finals.values()) == {1}
            assert "Traceback" not in process.output()


def _kill_when(control: EmulatorControl, count: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = len(control.requests("/mpesa/b2c/v3/paymentrequest"))
        if seen >= count:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} B2C requests in {timeout}s")


def test_a_batch_of_1000_payouts_killed_midway_resumes_paying_no_one_twice(
    sqlite_url: str, tmp_path: Path
) -> None:
    """SIGKILL the gateway while it sends a 1,000-row batch; resume it with the CLI.

    On SQLite, the default store (half a minute of CPU per run): the same kill on
    PostgreSQL is tests/reliability/test_payouts.py's, with faults on top (3,000 rows and
    four kills under ``make soak``).
    """
    database_url = sqlite_url
    rows = 1000
    csv_path = tmp_path / "payouts.csv"
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["phone", "amount", "remarks", "command"])
        for i in range(rows):
            writer.writerow([f"2547{i:08d}", 10 + i % 7, "Bulk e2e", "SalaryPayment"])
    with (
        emulator(["--result-delay", "0.05"]) as (_, daraja_url),
        EmulatorControl(daraja_url) as control,
    ):
        before = utility(control)
        env = payout_env(database_url, daraja_url, PESA_PAYOUT_RATE="150")
        with serve(env) as (first, url):
            posted = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pesa",
                    "payouts",
                    "send",
                    str(csv_path),
                    "--url",
                    url,
                    "--wait",
                    "0",
                ],
                env=clean_env({"PESA_API_KEY": API_KEY, "PESA_CALLBACK_TOKEN": TOKEN}),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert "1000 rows" in posted.stdout, posted.stdout + posted.stderr
            _kill_when(control, rows // 3)
            first.kill()
        killed_at = len(control.requests("/mpesa/b2c/v3/paymentrequest"))
        assert killed_at < rows, "the batch finished before the kill"
        with serve(env) as (second, url2):
            results = tmp_path / "results.csv"
            resumed = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pesa",
                    "payouts",
                    "send",
                    str(csv_path),
                    "--url",
                    url2,
                    "--results",
                    str(results),
                    "--wait",
                    "120",
                ],
                env=clean_env({"PESA_API_KEY": API_KEY}),
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            assert "resumed" in resumed.stdout
            assert "Traceback" not in second.output()
        with results.open() as handle:
            outcome = list(csv.DictReader(handle))
        assert len(outcome) == rows
        assert {row["status"] for row in outcome} == {"succeeded"}
        assert len({row["payout_id"] for row in outcome}) == rows
        assert control.wait_idle(20)
        accepted = accepted_b2c(control, rows)
        assert len(accepted) == rows
        assert set(accepted.values()) == {1}, "a payout was accepted twice"
        assert set(accepted) == {row["payout_id"] for row in outcome}
        assert before - utility(control) == sum(10 + i % 7 for i in range(rows))
