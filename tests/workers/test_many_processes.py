"""Many processes, one PostgreSQL: one OAuth call per token lifetime, one global query rate.

Real processes, as deployed: one ``pesa emulator`` (Daraja), one ``pesa serve
--no-workers`` taking payments and four ``pesa worker`` processes reconciling them, all on
one PostgreSQL schema with ``PESA_SHARED_STATE=database`` (the default there). The
emulator's request log is the witness: when each OAuth call and each STK query arrived.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import anyio
import httpx
import pytest

from pesa.emulator import EmulatorControl

from .conftest import PG_URL, _pg_admin, _pg_schema_url

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

API_KEY = "many-processes-key-0123456789"
OAUTH = "/oauth/v1/generate"
QUERY = "/mpesa/stkpushquery/v1/query"
# Tokens live 12 s; pesa stops using one at half its life when that is under the 120 s
# margin: each token is used for 6 s.
TOKEN_LIFETIME = 12
TOKEN_USE = TOKEN_LIFETIME / 2
RATE = 4.0
PAYMENTS = int(os.environ.get("MANY_PAYMENTS", "120"))
WORKERS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def schema_url() -> Iterator[str]:
    if PG_URL is None:
        pytest.skip("PESA_TEST_DATABASE_URL is not set: the many-process test needs PostgreSQL")
    schema = f"pesa_many_{uuid.uuid4().hex[:12]}"
    anyio.run(_pg_admin, f'CREATE SCHEMA "{schema}"')
    try:
        yield _pg_schema_url(schema)
    finally:
        anyio.run(_pg_admin, f'DROP SCHEMA "{schema}" CASCADE')


def _wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def gaps(stamps: list[datetime]) -> list[float]:
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def test_four_workers_share_one_token_and_one_query_rate(schema_url: str, tmp_path: Path) -> None:
    emulator_port, gateway_port = free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(
        {
            "PESA_ENV": "emulator",
            "PESA_BASE_URL": emulator_url,
            "PESA_DATABASE_URL": schema_url,
            "PESA_SHARED_STATE": "database",
            "PESA_API_KEY": API_KEY,
            "PESA_GATEWAY_PORT": str(gateway_port),
            "PESA_CALLBACK_URL": f"http://127.0.0.1:{gateway_port}/callbacks/x/stk",
            "PESA_RECONCILE_QUERY_RATE": str(RATE),
            "PESA_RECONCILE_MIN_AGE": "2",
            "PESA_RECONCILE_INTERVAL": "0.5",
            # Small claims: every worker keeps some of the backlog, so the four together
            # always have a query waiting for the budget (one alone may be too slow on a
            # loaded machine to spend it all).
            "PESA_RECONCILE_BATCH_SIZE": "4",
            "PESA_LOG": os.environ.get("MANY_LOG", "warning"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    processes: list[subprocess.Popen[bytes]] = []
    stack, logs = ExitStack(), ExitStack()

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = logs.enter_context((tmp_path / f"{args[0]}-{len(processes)}.log").open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "pesa", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        processes.append(process)
        return process

    try:
        start(
            "emulator",
            "--port",
            str(emulator_port),
            "--token-lifetime",
            str(TOKEN_LIFETIME),
            "--stk-delay",
            "0.1",
        )
        control = stack.enter_context(EmulatorControl(emulator_url))
        _wait_until(lambda: control.requests() is not None, 60, "the emulator")
        # Every customer pays, but no callback is ever delivered: only queries settle.
        control.add_rule(callback="drop", delay=0.05)
        start("serve", "--no-workers")
        headers = {"Authorization": f"Bearer {API_KEY}"}
        api = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{gateway_port}", headers=headers)
        )
        _wait_until(lambda: api.get("/v1/payments").status_code == 200, 60, "pesa serve")
        for n in range(PAYMENTS):
            created = api.post(
                "/v1/payments",
                json={
                    "phone": f"25471{n:07d}",
                    "amount": 10,
                    "account_reference": f"M{n}",
                    "description": "Many",
                },
            )
            assert created.status_code == 201, created.text
        for _ in range(WORKERS):
            start("worker")
        _wait_until(
            lambda: len(control.requests(QUERY)) >= PAYMENTS, 60 + PAYMENTS / RATE * 3, "queries"
        )
        oauth = [r.received_at for r in control.requests(OAUTH)]
        queries = sorted(r.received_at for r in control.requests(QUERY))
    finally:
        stack.close()
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        logs.close()
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))

    # One OAuth call per token lifetime across all six processes: never a second one while
    # a token was still in use (four processes each fetching would be four at once).
    assert oauth, logs
    assert all(gap >= TOKEN_USE - 0.1 for gap in gaps(oauth)), (gaps(oauth), logs)
    span = (queries[-1] - oauth[0]).total_seconds()
    assert len(oauth) <= span / TOKEN_USE + 1, (len(oauth), span)

    # The query rate is global: four workers together, not four times the budget. The first
    # and last second are left out (workers starting, the last ones finishing).
    first, last = queries[0], queries[-1]
    window = [
        q for q in queries if (q - first).total_seconds() > 1 and (last - q).total_seconds() > 1
    ]
    measured = (len(window) - 1) / (window[-1] - window[0]).total_seconds()
    assert RATE * 0.9 <= measured <= RATE * 1.1, (measured, logs)
