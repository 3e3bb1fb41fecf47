"""Real ``pesa serve`` / ``pesa emulator`` processes on loopback, a webhook receiver thread
and an API load generator, for the crash, fault and multi-process scenarios."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from pesa import verify_webhook

from ._harness import WEBHOOK_SECRET

API_KEY = "reliability-api-key-5f2e9c1d"
CALLBACK_TOKEN = "reliability-callback-token-8a7b6c5d"
TERMINAL = {"succeeded", "failed", "rejected"}


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without PESA_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


class PesaProcess:
    """One ``python -m pesa ...`` subprocess; its output goes to a file (kept across kills)."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.args = args
        self.env = clean_env(env)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1}: pesa {' '.join(self.args)}\n".encode())
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "pesa", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: nothing of the process's shutdown runs (a crash, an OOM kill)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait for the graceful shutdown; SIGKILL if it hangs."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def wait_http(url: str, process: PesaProcess, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (or fail with the process's output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive:
            raise AssertionError(f"pesa {process.args[0]} exited:\n{process.output()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready in {timeout}s:\n{process.output()[-4000:]}")


@contextmanager
def emulator_process(args: list[str], port: int, log: Path) -> Iterator[str]:
    """``pesa emulator`` in its own process (Daraja does not crash with the gateway)."""
    process = PesaProcess(["emulator", "--host", "127.0.0.1", "--port", str(port), *args], {}, log)
    process.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/__emulator__/health", process)
        yield url
    finally:
        process.stop()


def gateway_env(database_url: str, daraja_url: str, hook_url: str, **extra: str) -> dict[str, str]:
    """Settings of a gateway under test: fast workers, short deadlines, webhooks on."""
    env = {
        "PESA_ENV": "emulator",
        "PESA_BASE_URL": daraja_url,
        "PESA_DATABASE_URL": database_url,
        "PESA_API_KEY": API_KEY,
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "PESA_WEBHOOK_URLS": hook_url,
        "PESA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PESA_WEBHOOK_INTERVAL": "0.1",
        "PESA_WEBHOOK_BACKOFF_BASE": "0.2",
        "PESA_WEBHOOK_BACKOFF_CAP": "2",
        "PESA_WEBHOOK_LEASE": "15",
        "PESA_WEBHOOK_TIMEOUT": "5",
        "PESA_RECONCILE_INTERVAL": "0.2",
        "PESA_RECONCILE_MIN_AGE": "2",
        "PESA_RECONCILE_RECHECK_INTERVAL": "0.5",
        "PESA_RECONCILE_QUERY_RATE": "50",
        "PESA_RECONCILE_QUERY_BURST": "10",
        "PESA_RECONCILE_STALE_CREATED_AFTER": "2",
        "PESA_RECONCILE_DEADLINE": "20",
        "PESA_RECONCILE_LEASE": "10",
        "PESA_RECONCILE_BACKOFF_BASE": "0.5",
        "PESA_RECONCILE_BACKOFF_CAP": "2",
        "PESA_TIMEOUT": "5",
        "PESA_LOG": "warning",
    }
    env.update(extra)
    return env


class Gateway:
    """``pesa serve`` on a fixed port, so that Daraja's callbacks reach each restart."""

    def __init__(
        self, env: Mapping[str, str], log: Path, port: int, *, workers: bool = True
    ) -> None:
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        self.url = f"http://127.0.0.1:{port}"
        env = dict(env)
        if not workers:
            env["PESA_RUN_WORKERS"] = "false"
        self.process = PesaProcess(args, env, log)

    def start(self) -> None:
        self.process.start()
        wait_http(f"{self.url}/healthz", self.process)

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> int | None:
        return self.process.stop()


def api_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=15)


@dataclass
class WebhookReceiver:
    """A threaded HTTP server on loopback counting verified webhooks per event id."""

    by_event: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0
    url: str = ""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    verify_webhook(body, self.headers.get("Pesa-Signature", ""), WEBHOOK_SECRET)
                    event_id = json.loads(body)["id"]
                except Exception:
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    self.send_response(400)
                else:
                    with receiver._lock:
                        receiver.by_event[event_id] += 1
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.by_event.values() if n > 1)


@dataclass
class Order:
    """One payment the load generator asks for, retried with its key until answered."""

    index: int
    key: str
    phone: str
    amount: int
    reference: str
    expected_code: str = "0"
    payment_ids: set[str] = field(default_factory=set)
    attempts: int = 0
    answered: bool = False


class Load:
    """Threads creating payments through ``POST /v1/payments`` as a careful merchant would:
    every request carries an Idempotency-Key and is retried with it until answered."""

    def __init__(
        self,
        urls: list[str],
        orders: list[Order],
        *,
        threads: int = 4,
    ) -> None:
        self.urls = urls
        self.orders = orders
        self._next = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.answered = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()

    def stop(self) -> None:
        """Give up on unanswered orders (the test is ending, maybe on a failure)."""
        self._stop.set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            raise AssertionError("the load generator did not finish")

    def _take(self) -> Order | None:
        with self._lock:
            if self._next >= len(self.orders):
                return None
            order = self.orders[self._next]
            self._next += 1
            return order

    def _run(self) -> None:
        clients = [api_client(u) for u in self.urls]
        try:
            while not self._stop.is_set() and (order := self._take()) is not None:
                self._place(order, clients)
        finally:
            for client in clients:
                client.close()

    def _place(self, order: Order, clients: list[httpx.Client]) -> None:
        body = {
            "phone": order.phone,
            "amount": order.amount,
            "account_reference": order.reference,
            "description": "Reliability",
        }
        while not self._stop.is_set():
            client = clients[order.attempts % len(clients)]
            order.attempts += 1
            try:
                response = client.post(
                    "/v1/payments", json=body, headers={"Idempotency-Key": order.key}
                )
            except httpx.TransportError as err:
                self.errors[type(err).__name__] += 1
                time.sleep(0.1)
                continue
            if response.status_code in (200, 201):
                order.payment_ids.add(response.json()["id"])
                order.answered = True
                with self._lock:
                    self.answered += 1
                return
            self.errors[f"HTTP {response.status_code}"] += 1
            time.sleep(0.1)


def make_orders(n: int, prefix: str) -> list[Order]:
    """``n`` distinct payments (distinct phones, so no prompt blocks another)."""
    tag = secrets.token_hex(3)
    return [
        Order(
            index=i,
            key=f"{prefix}-{tag}-{i}",
            phone=f"2547{12_000_000 + i:08d}",
            amount=20 + i % 7,  # 20..26: the scenarios steer customers with 11..19
            reference=f"{prefix[:3].upper()}{i}",
        )
        for i in range(n)
    ]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``predicate()`` until true; a hang guard, never a performance assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout}s")


def all_payments(api: httpx.Client) -> dict[str, dict[str, Any]]:
    """Every payment through ``GET /v1/payments`` (cursor pagination)."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/payments", params=params).json()
        found.update((p["id"], p) for p in page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return found


def all_events(api: httpx.Client) -> list[dict[str, Any]]:
    """Every event through ``GET /v1/events``."""
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


def event_audit(events: list[dict[str, Any]]) -> tuple[dict[str, Counter[str]], int]:
    """Events per payment and type, and how many payments had one applied twice."""
    by_payment: dict[str, Counter[str]] = {}
    for event in events:
        by_payment.setdefault(event["data"]["payment"]["id"], Counter())[event["type"]] += 1
    twice = 0
    for counts in by_payment.values():
        finals = sum(counts[t] for t in ("payment.succeeded", "payment.failed", "payment.rejected"))
        if any(n > 1 for n in counts.values()) or finals > 1 + counts["payment.corrected"]:
            twice += 1
    return by_payment, twice


STK_PUSH = "/mpesa/stkpush/v1/processrequest"
STK_QUERY = "/mpesa/stkpushquery/v1/query"


@dataclass
class DarajaTruth:
    """What the emulator knows: pushes per AccountReference, and each customer's answer."""

    requests_by_ref: Counter[str]
    accepted: dict[str, list[str]]
    callbacks: dict[str, Any]
    error_codes: Counter[str]
    queries_by_checkout: Counter[str]
    total_requests: int = 0

    @classmethod
    def read(cls, control: Any) -> DarajaTruth:
        requests_by_ref: Counter[str] = Counter()
        accepted: dict[str, list[str]] = {}
        error_codes: Counter[str] = Counter()
        queries: Counter[str] = Counter()
        received = control.requests()
        for request in received:
            response = request.response if isinstance(request.response, dict) else {}
            if request.status_code >= 400:
                error_codes[str(response.get("errorCode", request.status_code))] += 1
            body = request.body if isinstance(request.body, dict) else {}
            if request.path == STK_PUSH:
                ref = str(body.get("AccountReference"))
                requests_by_ref[ref] += 1
                if request.status_code == 200:
                    accepted.setdefault(ref, []).append(response["CheckoutRequestID"])
            elif request.path == STK_QUERY:
                queries[str(body.get("CheckoutRequestID"))] += 1
        callbacks = {
            c.payload["Body"]["stkCallback"]["CheckoutRequestID"]: c
            for c in control.callbacks("stk")
        }
        return cls(requests_by_ref, accepted, callbacks, error_codes, queries, len(received))

    def result_code(self, checkout_request_id: str) -> str | None:
        """The customer's answer (from the callback Daraja sent or dropped), if known."""
        callback = self.callbacks.get(checkout_request_id)
        if callback is None:
            return None
        return str(callback.payload["Body"]["stkCallback"]["ResultCode"])


@dataclass
class Verdict:
    """Each order's payment compared with Daraja's truth."""

    lost: list[str] = field(default_factory=list)
    paid_not_recorded: list[str] = field(default_factory=list)
    raw_kept: int = 0


def compare(
    orders: list[Order], payments: dict[str, dict[str, Any]], truth: DarajaTruth
) -> Verdict:
    """Lost = a payment whose final state is not what its customer did at Daraja.

    The known gap is apart: Daraja accepted the push (the customer paid) but the gateway
    never learnt the CheckoutRequestID (it died, or the answer never came back), so the
    payment is "unknown" with nothing to query and expires as failed. Its callback names an
    id the ledger never issued (kept raw when the gateway was up to receive it).
    """
    verdict = Verdict()
    by_ref = {p["account_reference"]: p for p in payments.values()}
    for order in orders:
        payment = by_ref.get(order.reference)
        pushes = truth.accepted.get(order.reference, [])
        if payment is None:
            verdict.lost.append(f"{order.reference}: no payment")
            continue
        if not pushes:
            if payment["status"] not in ("failed", "rejected"):
                verdict.lost.append(
                    f"{order.reference}: never accepted, ledger {payment['status']}"
                )
            continue
        # The callback Daraja sent says what the customer did; a dropped one is not recorded
        # by the emulator, so fall back on what the scenario told the customer to do.
        code = truth.result_code(pushes[0]) or order.expected_code
        expected = "succeeded" if code == "0" else "failed"
        if payment["status"] == expected:
            continue
        if (
            expected == "succeeded"
            and payment["checkout_request_id"] is None
            and payment["failure_reason"] == "expired"
        ):
            verdict.paid_not_recorded.append(order.reference)
            callback = truth.callbacks.get(pushes[0])
            if callback is not None:
                verdict.raw_kept += any(a.status_code == 404 for a in callback.attempts)
        else:
            verdict.lost.append(
                f"{order.reference}: Daraja says {expected}, ledger {payment['status']} "
                f"({payment['failure_reason']}; {payment['checkout_request_id']} queried "
                f"{truth.queries_by_checkout[pushes[0]]} times)"
            )
    return verdict


def acknowledged_not_applied(payments: dict[str, dict[str, Any]], truth: DarajaTruth) -> int:
    """Callbacks the gateway answered 200 whose result is not on their payment."""
    by_checkout = {p["checkout_request_id"]: p for p in payments.values()}
    missing = 0
    for checkout_id, callback in truth.callbacks.items():
        if not any(a.status_code == 200 for a in callback.attempts):
            continue
        payment = by_checkout.get(checkout_id)
        code = str(callback.payload["Body"]["stkCallback"]["ResultCode"])
        if payment is None or str(payment["result_code"]) != code:
            missing += 1
    return missing


def without_final_event(
    payments: dict[str, dict[str, Any]], by_payment: dict[str, Counter[str]]
) -> int:
    """Terminal payments whose final transition is missing from the event feed."""
    finals = {"succeeded": "payment.succeeded", "failed": "payment.failed"}
    finals["rejected"] = "payment.rejected"
    return sum(
        1
        for p in payments.values()
        if p["status"] in finals and by_payment.get(p["id"], Counter())[finals[p["status"]]] == 0
    )
