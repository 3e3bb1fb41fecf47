"""End to end: the real ``pesa serve`` (and ``pesa emulator``, ``pesa demo``) as subprocesses.

Each test speaks HTTP on loopback to processes started exactly as a user starts them, on
SQLite and (with ``PESA_TEST_DATABASE_URL``) on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa import verify_webhook
from pesa.emulator import EmulatorControl

from .processes import emulator, pesa_process, serve, wait_healthy, webhook_receiver

pytestmark = pytest.mark.slow

API_KEY = "e2e-api-key-0123456789"
TOKEN = "e2e-callback-token-0123456789"
WEBHOOK_SECRET = "whsec_e2e_0123456789"
TERMINAL = {"succeeded", "failed", "rejected"}

# phone → (final status, result code): the emulator's scenario table.
SCENARIOS: dict[str, tuple[str, str | None]] = {
    "254708374149": ("succeeded", "0"),
    "254700001032": ("failed", "1032"),
    "254700000001": ("failed", "1"),
    "254700001037": ("failed", "1037"),
    "254700002001": ("failed", "2001"),
    "254700001001": ("rejected", "500.001.1001"),
    "254700000404": ("succeeded", "0"),
    "254700000202": ("succeeded", "0"),
}


def gateway_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "PESA_ENV": "emulator",
        "PESA_DATABASE_URL": database_url,
        "PESA_API_KEY": API_KEY,
        "PESA_CALLBACK_TOKEN": TOKEN,
        "PESA_EMULATOR_STK_DELAY": "0.3",
        "PESA_RECONCILE_INTERVAL": "0.25",
        "PESA_RECONCILE_MIN_AGE": "1.0",
        "PESA_RECONCILE_RECHECK_INTERVAL": "0.3",
        "PESA_RECONCILE_QUERY_RATE": "50",
        "PESA_RECONCILE_QUERY_BURST": "10",
        "PESA_RECONCILE_STALE_CREATED_AFTER": "2",
        "PESA_WEBHOOK_INTERVAL": "0.5",
        "PESA_WEBHOOK_BACKOFF_BASE": "0.2",
        "PESA_LOG": "warning",
    }
    env.update(extra)
    return env


def api_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)


def create(
    api: httpx.Client, phone: str, amount: int = 10, key: str | None = None
) -> dict[str, Any]:
    body = {
        "phone": phone,
        "amount": amount,
        "account_reference": "E2E",
        "description": "e2e test",
    }
    response = api.post(
        "/v1/payments", json=body, headers={"Idempotency-Key": key or secrets.token_hex(8)}
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def wait_terminal(
    api: httpx.Client, ids: list[str], timeout: float = 40.0
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    latest: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        for payment_id in ids:
            if latest.get(payment_id, {}).get("status") not in TERMINAL:
                latest[payment_id] = api.get(f"/v1/payments/{payment_id}").json()
        if all(p["status"] in TERMINAL for p in latest.values()):
            return latest
        time.sleep(0.1)
    stuck = {i: p["status"] for i, p in latest.items() if p["status"] not in TERMINAL}
    raise AssertionError(f"payments not terminal after {timeout}s: {stuck}")


def all_events(api: httpx.Client) -> list[dict[str, Any]]:
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


def payment_id_of(event: dict[str, Any]) -> str:
    return str(event["data"]["payment"]["id"])


def test_serve_end_to_end(database_url: str) -> None:
    """Scenario phones, duplicates, lost callbacks, idempotency, forgeries and webhooks."""
    with contextlib.ExitStack() as stack, webhook_receiver() as receiver:
        env = gateway_env(
            database_url, PESA_WEBHOOK_URLS=receiver.url, PESA_WEBHOOK_SECRET=WEBHOOK_SECRET
        )
        with serve(env) as (process, url), api_client(url) as api:
            control = stack.enter_context(EmulatorControl(f"{url}/emulator", api_key=API_KEY))
            # A customer who never answers: the target of the forged callbacks below.
            control.add_rule(phone="254711999999", delay=120, callback="drop")

            ids = {phone: create(api, phone, 10 + i)["id"] for i, phone in enumerate(SCENARIOS)}

            # Idempotent retry: one payment, one STK push; other parameters → 409.
            first = create(api, "254711000042", 42, key="order-42")
            again = api.post(
                "/v1/payments",
                json={
                    "phone": "254711000042",
                    "amount": 42,
                    "account_reference": "E2E",
                    "description": "e2e test",
                },
                headers={"Idempotency-Key": "order-42"},
            )
            assert again.status_code == 201
            assert again.json()["id"] == first["id"]
            conflict = api.post(
                "/v1/payments",
                json={
                    "phone": "254711000042",
                    "amount": 43,
                    "account_reference": "E2E",
                    "description": "e2e test",
                },
                headers={"Idempotency-Key": "order-42"},
            )
            assert conflict.status_code == 409
            pushes = [
                r
                for r in control.requests("/mpesa/stkpush/v1/processrequest")
                if str(r.body.get("PhoneNumber")) == "254711000042"
            ]
            assert len(pushes) == 1

            # Forged callbacks change nothing.
            target = create(api, "254711999999", 500)
            forged = {
                "Body": {
                    "stkCallback": {
                        "MerchantRequestID": target["merchant_request_id"],
                        "CheckoutRequestID": target["checkout_request_id"],
                        "ResultCode": 0,
                        "ResultDesc": "The service request is processed successfully.",
                        "CallbackMetadata": {
                            "Item": [
                                {"Name": "Amount", "Value": 1},
                                {"Name": "MpesaReceiptNumber", "Value": "FORGED0001"},
                                {"Name": "TransactionDate", "Value": 20261129101500},
                                {"Name": "PhoneNumber", "Value": 254711999999},
                            ]
                        },
                    }
                }
            }
            assert httpx.post(f"{url}/callbacks/wrong-token/stk", json=forged).status_code == 404
            unknown = {
                "Body": {
                    "stkCallback": {
                        **forged["Body"]["stkCallback"],
                        "CheckoutRequestID": "ws_CO_forged",
                    }
                }
            }
            assert httpx.post(f"{url}/callbacks/{TOKEN}/stk", json=unknown).status_code == 404
            assert httpx.post(f"{url}/callbacks/{TOKEN}/stk", json=forged).status_code == 400
            untouched = api.get(f"/v1/payments/{target['id']}").json()
            assert untouched["status"] == "pending"
            assert untouched["receipt"] is None

            final = wait_terminal(api, [*ids.values(), first["id"]])
            for phone, (status, code) in SCENARIOS.items():
                payment = final[ids[phone]]
                assert (payment["status"], payment["result_code"]) == (status, code), phone
                assert not payment["flagged"], phone

            duplicated = [c for c in control.callbacks() if "254700000202" in str(c.payload)]
            assert sum(1 for c in duplicated if c.delivered) == 2

            # Every payment's final event reaches the webhook receiver, signed; it verifies.
            final_types = {
                "succeeded": "payment.succeeded",
                "failed": "payment.failed",
                "rejected": "payment.rejected",
            }
            wanted = {(final_types[p["status"]], i) for i, p in final.items()}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                received = receiver.events()
                seen = {(e["type"], payment_id_of(e)) for e in received}
                if wanted <= seen and {e["id"] for e in all_events(api)} <= {
                    e["id"] for e in received
                }:
                    break
                time.sleep(0.1)
            assert wanted <= {(e["type"], payment_id_of(e)) for e in receiver.events()}
            unique: dict[str, dict[str, Any]] = {}
            for headers, body in receiver.received:
                event = verify_webhook(body, headers["Pesa-Signature"], WEBHOOK_SECRET)
                unique[event["id"]] = event  # at least once: a redelivery keeps its id
            successes = [
                payment_id_of(e) for e in unique.values() if e["type"] == "payment.succeeded"
            ]
            assert len(successes) == len(set(successes)), "a success was applied twice"
            # The event feed agrees with what was delivered (it may lag on PostgreSQL).
            assert {e["id"] for e in all_events(api)} <= set(unique)

            metrics = api.get("/metrics").text
            assert 'pesa_payments{status="rejected"} 1' in metrics
            assert process.stop() in (0, -signal.SIGTERM), process.output()
            assert "Traceback" not in process.output()


def test_gateway_survives_sigkill_with_payments_in_flight(database_url: str) -> None:
    """Daraja (the emulator, its own process) keeps going while the gateway is SIGKILLed."""
    with (
        emulator(["--stk-delay", "1.5"]) as (_, daraja_url),
        EmulatorControl(daraja_url) as control,
    ):
        # A short deadline so that an intent the kill caught before its push was recorded
        # (created → unknown without a CheckoutRequestID) expires within the test.
        env = gateway_env(database_url, PESA_BASE_URL=daraja_url, PESA_RECONCILE_DEADLINE="12")
        acknowledged_ids: list[str] = []
        with serve(env) as (first_process, url), api_client(url) as api:
            early = [create(api, f"25471200000{i}")["id"] for i in range(3)]
            wait_terminal(api, early, timeout=20)
            # Prompts still open on the phones when the gateway dies: their callbacks will
            # hit a dead port and only the reconciler can settle them.
            in_flight = [
                create(api, phone)["id"]
                for phone in (
                    "254712000010",
                    "254712000011",
                    "254700001032",
                    "254700000001",
                    "254700000404",
                    "254700000202",
                )
            ]
            # And requests still arriving when it dies.
            stop_load = threading.Event()

            def load() -> None:
                with api_client(url) as client:
                    for i in range(100):
                        if stop_load.is_set():
                            return
                        try:
                            acknowledged_ids.append(create(client, f"2547130000{i:02d}")["id"])
                        except (httpx.HTTPError, AssertionError):
                            return

            loader = threading.Thread(target=load)
            loader.start()
            # Kill while requests are arriving: after the first one is answered (a loaded
            # machine may take longer than any fixed pause), with more still in flight.
            deadline = time.monotonic() + 20
            while not acknowledged_ids and time.monotonic() < deadline and loader.is_alive():
                time.sleep(0.01)
            time.sleep(0.2)
            first_process.kill()
            stop_load.set()
            loader.join(20)
        assert acknowledged_ids, "no request was acknowledged under load before the kill"
        assert control.wait_idle(20)
        with serve(env) as (second_process, url2), api_client(url2) as api2:
            final = wait_terminal(api2, [*early, *in_flight, *acknowledged_ids], timeout=40)
            # Every callback the first gateway acknowledged (200) is in the ledger.
            acknowledged = [
                c
                for c in control.callbacks()
                if c.delivered and any(a.status_code == 200 for a in c.attempts)
            ]
            assert acknowledged, "no callback was acknowledged before the kill"
            by_checkout = {p["checkout_request_id"]: p for p in final.values()}
            for callback in acknowledged:
                stk = callback.payload["Body"]["stkCallback"]
                payment = by_checkout[stk["CheckoutRequestID"]]
                assert payment["result_code"] == str(stk["ResultCode"])
                if stk["ResultCode"] == 0:
                    items = {i["Name"]: i.get("Value") for i in stk["CallbackMetadata"]["Item"]}
                    assert payment["receipt"] == items["MpesaReceiptNumber"]
            expected = {"254700001032": "failed", "254700000001": "failed"}
            for payment in final.values():
                assert payment["status"] == expected.get(payment["phone"], "succeeded"), payment
            # Whatever the kill interrupted (an intent without a recorded push) ends too.
            everything = api2.get("/v1/payments", params={"limit": 500}).json()["data"]
            stragglers = [p["id"] for p in everything if p["id"] not in final]
            ended = wait_terminal(api2, stragglers, timeout=40) if stragglers else {}
            for payment in ended.values():
                assert payment["checkout_request_id"] is None or payment["status"] != "failed"
            assert second_process.stop() in (0, -signal.SIGTERM), second_process.output()


def test_serve_refuses_sandbox_without_keys(tmp_path: Path) -> None:
    env = {"PESA_ENV": "sandbox", "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    with pesa_process(["serve", "--port", "0"], env) as process:
        assert process.popen.wait(30) == 1
    output = process.output()
    assert "PESA_API_KEY" in output
    assert "Traceback" not in output


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    env = {"PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    with pesa_process(["db", "upgrade"], env) as process:
        assert process.popen.wait(60) == 0, process.output()
    assert (tmp_path / "fresh.db").exists()
    assert "up to date" in process.output()


def test_demo_passes_with_no_configuration(tmp_path: Path) -> None:
    """What ``make demo`` runs, from an empty directory with no PESA_* variable."""
    with pesa_process(["demo"], {}, cwd=str(tmp_path)) as process:
        code = process.popen.wait(90)
    output = process.output()
    assert code == 0, output
    assert "all 11 payments ended as expected" in output
    assert "customers pay PayBill 600997" in output and "partially_paid" in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"


def test_separate_worker_process_settles_payments(database_url: str) -> None:
    """``pesa serve --no-workers`` plus ``pesa worker``: the worker's queries settle them."""
    env = gateway_env(database_url, PESA_RUN_WORKERS="false")
    with serve(env) as (gateway, url), api_client(url) as api:
        lost = create(api, "254700000404")["id"]
        time.sleep(2.0)  # past the reconciler's minimum age: only a worker would query now
        assert api.get(f"/v1/payments/{lost}").json()["status"] == "pending"
        worker_env = {**env, "PESA_BASE_URL": f"{url}/emulator"}
        with pesa_process(["worker"], worker_env) as worker:
            worker.wait_for_line(r"pesa worker")
            final = wait_terminal(api, [lost], timeout=20)
            assert final[lost]["status"] == "succeeded"
            assert worker.stop() in (0, -signal.SIGTERM), worker.output()
            assert "Traceback" not in worker.output()
        assert gateway.stop() in (0, -signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sandbox_configuration_against_a_separate_daraja(tmp_path: Path) -> None:
    """PESA_ENV=sandbox: no emulator mounted, callbacks to PESA_PUBLIC_URL, key enforced."""
    with emulator(["--stk-delay", "0.3"]) as (_, daraja_url):
        port = _free_port()
        env = gateway_env(
            f"sqlite:///{tmp_path / 'sandbox.db'}",
            PESA_ENV="sandbox",
            PESA_BASE_URL=daraja_url,
            PESA_PUBLIC_URL=f"http://127.0.0.1:{port}",
            PESA_GATEWAY_PORT=str(port),
            PESA_CONSUMER_KEY="sandbox-key",
            PESA_CONSUMER_SECRET="sandbox-secret",
            PESA_SHORTCODE="174379",
            PESA_PASSKEY="bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
        )
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        with pesa_process(args, env) as process:
            process.wait_for_line(r"API:")
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, process)
            output = process.output()
            assert TOKEN not in output, "the callback token was printed"
            assert "emulator:" not in output
            assert httpx.get(f"{url}/v1/payments").status_code == 401
            with api_client(url) as api:
                assert api.get("/emulator/__emulator__/health").status_code == 404
                paid = create(api, "254711444001")
                final = wait_terminal(api, [paid["id"]], timeout=20)
            assert final[paid["id"]]["status"] == "succeeded"
            assert final[paid["id"]]["receipt"], "settled by the callback, not by a query"
            assert process.stop() in (0, -signal.SIGTERM)
