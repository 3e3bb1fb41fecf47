"""``pesa serve`` plus ``pesa worker`` as the README shows them: banners and no PESA_BASE_URL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pesa import Daraja, TransportError

pytestmark = pytest.mark.slow

API_KEY = "serve-worker-key-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _read_banner(process: subprocess.Popen[str], until: str) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if until in line:
            return "".join(lines)
    raise AssertionError("".join(lines))


def test_a_worker_beside_serve_settles_lost_callbacks_with_no_base_url(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(
        {
            "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'pesa.db'}",
            "PESA_API_KEY": API_KEY,
            "PESA_GATEWAY_PORT": str(port),
            "PESA_EMULATOR_STK_DELAY": "0.1",
            "PESA_RECONCILE_MIN_AGE": "0.5",
            "PESA_RECONCILE_INTERVAL": "0.2",
            "COLUMNS": "300",
            "PYTHONUNBUFFERED": "1",
        }
    )
    serve = subprocess.Popen(
        [sys.executable, "-m", "pesa", "serve", "--no-workers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    worker = None
    try:
        banner = _read_banner(serve, "Daraja:")
        assert f"Daraja:    http://127.0.0.1:{port}/emulator" in banner
        worker = subprocess.Popen(
            [sys.executable, "-m", "pesa", "worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        shown = _read_banner(worker, "public:")
        assert "database:  sqlite:///" in shown
        assert f"Daraja:    http://127.0.0.1:{port}/emulator" in shown
        assert f"public:    http://127.0.0.1:{port}" in shown
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as api:
            # Paid, but the emulator never delivers the callback: only a query settles it.
            created = api.post(
                "/v1/payments",
                json={
                    "phone": "254700000404",
                    "amount": 10,
                    "account_reference": "LOST1",
                    "description": "Lost callback",
                },
            )
            assert created.status_code == 201, created.text
            payment = created.json()
            deadline = time.monotonic() + 40
            while payment["status"] != "succeeded" and time.monotonic() < deadline:
                time.sleep(0.2)
                payment = api.get(f"/v1/payments/{payment['id']}").json()
        assert payment["status"] == "succeeded", payment
    finally:
        for process in (worker, serve):
            if process is not None:
                process.terminate()
                process.communicate(timeout=30)


def test_a_connection_error_names_the_url_and_the_setting() -> None:
    port = _free_port()
    with (
        Daraja(
            base_url=f"http://127.0.0.1:{port}",
            consumer_key="k",
            consumer_secret="s",
            max_retries=0,
        ) as client,
        pytest.raises(TransportError) as info,
    ):
        client.access_token()
    assert f"127.0.0.1:{port}" in str(info.value) and "PESA_BASE_URL" in str(info.value)
