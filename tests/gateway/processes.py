"""Run ``pesa serve`` / ``pesa emulator`` as real subprocesses on loopback, for the e2e tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


@dataclass
class Process:
    """A ``pesa`` subprocess whose output is collected by a reader thread."""

    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                seen += 1
                match = regex.search(line)
                if match:
                    return match
            if self.popen.poll() is not None and seen >= len(self.lines):
                raise AssertionError(
                    f"process exited {self.popen.returncode} before {pattern!r}:\n{self.output()}"
                )
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r} in {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash or an OOM kill."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: a graceful shutdown.

        uvicorn finishes its shutdown (lifespan included) and then re-raises the signal,
        so a clean stop ends with ``-SIGTERM``.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The current environment without any PESA_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "200"
    return env


@contextmanager
def pesa_process(
    args: list[str], env: Mapping[str, str], cwd: str | None = None
) -> Iterator[Process]:
    popen = subprocess.Popen(
        [sys.executable, "-m", "pesa", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(env),
        cwd=cwd,
    )
    process = Process(popen)

    def read() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            process.lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield process
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait(10)
        reader.join(5)
        if popen.stdout is not None:
            popen.stdout.close()


@contextmanager
def serve(env: Mapping[str, str]) -> Iterator[tuple[Process, str]]:
    """``pesa serve --port 0``; yields the process and its base URL once healthy."""
    with pesa_process(["serve", "--host", "127.0.0.1", "--port", "0"], env) as process:
        match = process.wait_for_line(r"API:\s+(http://127\.0\.0\.1:\d+)/v1/payments")
        url = match.group(1)
        wait_healthy(url, process)
        yield process, url


@contextmanager
def emulator(args: list[str]) -> Iterator[tuple[Process, str]]:
    """``pesa emulator --port 0`` in its own process; yields it and its base URL."""
    with pesa_process(["emulator", "--host", "127.0.0.1", "--port", "0", *args], {}) as process:
        match = process.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)")
        url = match.group(1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/__emulator__/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield process, url


def wait_healthy(url: str, process: Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise AssertionError(f"gateway exited {process.popen.returncode}:\n{process.output()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"gateway not healthy in {timeout}s:\n{process.output()}")


@dataclass
class WebhookReceiver:
    """A tiny HTTP server on loopback recording every webhook it receives."""

    url: str
    received: list[tuple[dict[str, str], bytes]]
    server: ThreadingHTTPServer

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    received: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with lock:
                received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}/hook", received, server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
