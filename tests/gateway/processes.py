"""Run ``pesa serve`` / ``pesa emulator`` as real subprocesses on loopback, for the e2e tests."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
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


def _open_file_limit(soft: int) -> Callable[[], None]:
    def apply() -> None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))

    return apply


@contextmanager
def pesa_process(
    args: list[str],
    env: Mapping[str, str],
    cwd: str | None = None,
    *,
    open_file_limit: int | None = None,
) -> Iterator[Process]:
    """``python -m pesa <args>``; ``open_file_limit`` starts it with that soft RLIMIT_NOFILE
    (1024 is the common default of Linux distributions, which the test machine may not use).
    """
    popen = subprocess.Popen(
        [sys.executable, "-m", "pesa", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(env),
        cwd=cwd,
        preexec_fn=None if open_file_limit is None else _open_file_limit(open_file_limit),
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


@contextmanager
def strict_emulator(
    consumer_key: str, consumer_secret: str, passkey: str, *args: str
) -> Iterator[tuple[Process, str]]:
    """``pesa emulator --strict`` in its own process: exact credentials, shortcode 174379."""
    env = {"PESA_CONSUMER_KEY": consumer_key, "PESA_CONSUMER_SECRET": consumer_secret}
    command = ["emulator", "--host", "127.0.0.1", "--port", "0", "--strict"]
    command += ["--passkey", f"174379={passkey}", *args]
    with pesa_process(command, env) as process:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def sandbox_gateway(
    env: Mapping[str, str], *, open_file_limit: int | None = None
) -> Iterator[tuple[Process, str]]:
    """``pesa serve`` in ``sandbox`` on a free port (``PESA_PUBLIC_URL`` must name it).

    ``env`` carries the rest: PESA_BASE_URL (a strict emulator), the API key, the callback
    token and the Daraja credentials.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = {"PESA_ENV": "sandbox", "PESA_PUBLIC_URL": url, **env}
    args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    with pesa_process(args, settings, open_file_limit=open_file_limit) as process:
        process.wait_for_line(r"API:")
        wait_healthy(url, process)
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
