"""An unreachable database: one line and exit 1 at start; lost later, one warning per pause."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy.exc import OperationalError

from pesa.gateway._backoff import describe_outage

from .conftest import pg_url

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update({"COLUMNS": "80", "PYTHONUNBUFFERED": "1", **extra})
    return env


def test_outages_are_recognised_and_bugs_are_not() -> None:
    refused = OperationalError("SELECT 1", {}, ConnectionRefusedError(111, "Connection refused"))
    line = describe_outage(refused)
    assert line is not None and "Connection refused" in line and "\n" not in line
    assert describe_outage(TimeoutError()) is not None
    assert describe_outage(KeyError("bug")) is None


@pytest.mark.parametrize("command", [["worker"], ["serve", "--no-migrate", "--port", "0"]])
def test_an_unreachable_database_at_start_is_one_line_and_exit_1(
    command: list[str], tmp_path: Path
) -> None:
    env = _env(PESA_DATABASE_URL="postgresql://nobody:s3cret@127.0.0.1:1/none")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pesa", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout + result.stderr  # not even the banner
    assert "cannot reach the database" in lines[0] and "PESA_DATABASE_URL" in lines[0]
    assert "s3cret" not in lines[0]
    assert time.monotonic() - started < 60


def test_an_unmigrated_database_with_no_migrate_says_to_upgrade(tmp_path: Path) -> None:
    env = _env(PESA_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "worker"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
    )
    assert result.returncode == 1
    assert "pesa db upgrade" in result.stderr and "Traceback" not in result.stderr


class _Proxy:
    """A loopback TCP proxy to PostgreSQL that the test can pull the plug on."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.open:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def proxied_pg(pg_schema_url: str) -> Iterator[tuple[str, _Proxy]]:
    parts = urlsplit(pg_schema_url)
    assert parts.hostname is not None
    proxy = _Proxy(parts.hostname, parts.port or 5432)
    netloc = parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    if parts.port is None:
        netloc = netloc.replace(parts.hostname, f"127.0.0.1:{proxy.port}")
    try:
        yield urlunsplit(parts._replace(netloc=netloc)), proxy
    finally:
        proxy.cut()


@pytest.mark.postgres
def test_a_database_lost_while_running_is_one_warning_per_backoff_interval(
    proxied_pg: tuple[str, _Proxy], tmp_path: Path
) -> None:
    if pg_url() is None:  # pragma: no cover - the fixture skips first
        pytest.skip("no PostgreSQL")
    url, proxy = proxied_pg
    migrate = subprocess.run(
        [sys.executable, "-m", "pesa", "db", "upgrade"],
        capture_output=True,
        text=True,
        env=_env(PESA_DATABASE_URL=url),
        cwd=tmp_path,
        timeout=90,
    )
    assert migrate.returncode == 0, migrate.stderr
    env = _env(
        PESA_DATABASE_URL=url,
        PESA_LOG="info",
        PESA_RECONCILE_INTERVAL="0.2",
        PESA_WEBHOOK_INTERVAL="0.2",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "pesa", "worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    banner = ""
    try:
        assert worker.stdout is not None
        deadline = time.monotonic() + 60
        while "public:" not in banner and time.monotonic() < deadline:
            line = worker.stdout.readline()
            if not line:
                break
            banner += line
        assert "public:" in banner, banner  # started: the database answered
        time.sleep(1.0)  # rounds succeeding
        proxy.cut()
        time.sleep(4.0)
    finally:
        worker.terminate()
        rest, _ = worker.communicate(timeout=30)
    output = banner + rest
    assert "Traceback" not in output, output
    failures = [line for line in output.splitlines() if "round failed" in line]
    assert failures, output
    assert all("WARNING" in line and "retrying in" in line for line in failures), output
    # Exponential backoff from 0.2 s: a handful of lines in 4 s, not one per round.
    assert len(failures) <= 14, output
    assert all(len(line) < 600 for line in output.splitlines())
    assert re.search(r"database:\s+postgresql", output)
