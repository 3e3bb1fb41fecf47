"""``pesa listen``, ``pesa trigger``, ``pesa events tail`` and ``pesa payments`` as real processes.

A real ``pesa serve`` (emulator environment, SQLite), a real local webhook receiver, and
the commands started as subprocesses: the trigger is a real payment through the emulator,
the forwarded events are the gateway's own, signed.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pesa import verify_webhook

pytestmark = pytest.mark.slow

API_KEY = "cli-tools-api-key-0123456789"
SECRET = "whsec_cli_tools_test"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update({"PESA_API_KEY": API_KEY, "COLUMNS": "300", "PYTHONUNBUFFERED": "1", **extra})
    env["PESA_DATABASE_URL"] = f"sqlite:///{tmp_path / 'cli.db'}"
    return env


class _Lines:
    """A subprocess whose stdout lines arrive on a queue (read without blocking the test)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pesa", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._pumper = threading.Thread(target=self._pump, daemon=True)
        self._pumper.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matched {pattern!r}; got:\n{''.join(self.seen)}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self._pumper.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("cli-tools")
    env = _env(tmp, PESA_EMULATOR_STK_DELAY="0.1", PESA_RECONCILE_MIN_AGE="1")
    server = _Lines(["serve", "--port", "0"], env, tmp)
    try:
        url = server.wait_for(r"API:\s+(http://127\.0\.0\.1:\d+)/v1/payments").group(1)
        yield url, tmp
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]]]:
    got: queue.Queue[tuple[bytes, dict[str, str]]] = queue.Queue()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.put((body, dict(self.headers.items())))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            del args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks", got
    finally:
        server.shutdown()
        server.server_close()


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pesa", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_listen_forwards_the_real_signed_events_of_a_triggered_payment(
    serve: tuple[str, Path],
    receiver: tuple[str, queue.Queue[tuple[bytes, dict[str, str]]]],
) -> None:
    url, tmp = serve
    env = {**_env(tmp), "PESA_WEBHOOK_SECRET": SECRET}
    forward_to, got = receiver
    listener = _Lines(["listen", "--forward-to", forward_to, "--gateway-url", url], env, tmp)
    tail = _Lines(["events", "tail", "--gateway-url", url], env, tmp)
    try:
        listener.wait_for(r"forwarding events of")
        tail.wait_for(r"following the events of")
        triggered = _run(["trigger", "payment.succeeded", "--gateway-url", url, "--json"], env, tmp)
        assert triggered.returncode == 0, triggered.stdout + triggered.stderr
        payment = json.loads(triggered.stdout)["payment"]
        assert payment["status"] == "succeeded" and payment["receipt"]

        events: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 30
        while "payment.succeeded" not in events and time.monotonic() < deadline:
            try:
                body, headers = got.get(timeout=1)
            except queue.Empty:
                continue
            event = verify_webhook(body, headers["Pesa-Signature"], SECRET)
            if event["data"]["payment"]["id"] == payment["id"]:
                events[event["type"]] = event
        assert {"payment.pending", "payment.succeeded"} <= set(events)
        assert events["payment.succeeded"]["data"]["payment"]["receipt"] == payment["receipt"]
        listener.wait_for(rf"payment\.succeeded.*{payment['id']}.*-> 200")
        tail.wait_for(rf"payment\.succeeded.*{payment['id']}")
    finally:
        listener.stop()
        tail.stop()

    shown = _run(["payments", "show", payment["id"], "--gateway-url", url, "--json"], env, tmp)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["receipt"] == payment["receipt"]
    listed = _run(["payments", "list", "--gateway-url", url, "--json", "--limit", "5"], env, tmp)
    assert listed.returncode == 0, listed.stderr
    assert payment["id"] in {p["id"] for p in json.loads(listed.stdout)}


def test_trigger_failed_and_an_unknown_payment_in_json(serve: tuple[str, Path]) -> None:
    url, tmp = serve
    env = _env(tmp)
    failed = _run(["trigger", "payment.failed", "--gateway-url", url, "--json"], env, tmp)
    assert failed.returncode == 0, failed.stdout + failed.stderr
    assert json.loads(failed.stdout)["payment"]["result_code"] == "1032"
    missing = _run(["payments", "show", "pay_nope", "--gateway-url", url, "--json"], env, tmp)
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["type"] == "GatewayError"
