"""``pesa serve --processes N`` (issue 12): several gateway processes on one port, one
ledger. Real processes: the CLI, its spawned children, PostgreSQL."""

from __future__ import annotations

import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

from pesa.ledger import Ledger, PaymentStatus
from pesa.testing import stk_callback_payload

from .conftest import CALLBACK_TOKEN
from .processes import pesa_process, wait_healthy

PHONE = "254708374149"


def _children(pid: int) -> list[int]:
    """The gateway processes ``pid`` spawned (not multiprocessing's resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


async def _pending(url: str, n: int) -> list[bytes]:
    ledger = await Ledger.open(url)
    await ledger.migrate()
    bodies = []
    try:
        for index in range(n):
            payment, _ = await ledger.create_payment(f"k-{index}", PHONE, 10, "INV", "Order")
            cid = f"ws_CO_proc_{index}"
            await ledger.mark_accepted(payment.id, cid, f"mid-{index}")
            payload = stk_callback_payload(
                checkout_request_id=cid,
                merchant_request_id=f"mid-{index}",
                amount=10,
                receipt=f"RCP{index:07d}",
                phone=int(PHONE),
            )
            bodies.append(json.dumps(payload).encode())
    finally:
        await ledger.close()
    return bodies


async def _outcome(url: str) -> tuple[dict[str, int], dict[str, int], int]:
    ledger = await Ledger.open(url)
    try:
        stats = await ledger.stats()
        events = await ledger.list_events(limit=500)
        succeeded = sum(1 for e in events.items if e.type == "payment.succeeded")
        counts = {k: v for k, v in stats.payments.items() if v}
        return counts, {k: v for k, v in stats.callbacks.items() if v}, succeeded
    finally:
        await ledger.close()


@pytest.mark.postgres
@pytest.mark.timeout(300)  # two children import the gateway at once: slow on a loaded machine
def test_two_processes_share_the_port_and_apply_each_callback_once(pg_schema_url: str) -> None:
    n = 30
    bodies = anyio.run(_pending, pg_schema_url, n)
    env = {
        "PESA_ENV": "emulator",
        # Never contacted (no push is sent here); several processes may not mount the
        # emulator, each its own.
        "PESA_BASE_URL": "http://127.0.0.1:9",
        "PESA_DATABASE_URL": pg_schema_url,
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "PESA_CALLBACK_ALLOWLIST": "off",
    }
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--no-workers", "--processes", "2"]
    with pesa_process(args, env) as process:
        url = process.wait_for_line(r"API:\s+(http://127\.0\.0\.1:\d+)/v1/payments").group(1)
        process.wait_for_line(r"processes:\s+2")
        wait_healthy(url, process, timeout=120)
        deadline = time.monotonic() + 60
        while len(_children(process.popen.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _children(process.popen.pid)
        assert len(children) == 2, process.output()

        def post(body: bytes) -> int:
            # A connection each: the kernel spreads them over both processes' accepts.
            response = httpx.post(
                f"{url}/callbacks/{CALLBACK_TOKEN}/stk",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            return response.status_code

        # Every callback twice, at once: duplicates race across processes.
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, bodies + bodies))
        assert codes == [200] * (2 * n), process.output()
        process.popen.send_signal(signal.SIGTERM)
        assert process.popen.wait(30) == 0, process.output()
    for child in children:
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        ), "a gateway process outlived pesa serve"
    payments, callbacks, succeeded = anyio.run(_outcome, pg_schema_url)
    assert payments == {PaymentStatus.SUCCEEDED.value: n}
    assert callbacks == {"applied": n, "duplicate": n}
    assert succeeded == n


def test_several_processes_refuse_a_per_process_emulator(tmp_path: Path) -> None:
    env = {
        "PESA_ENV": "emulator",
        "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    with pesa_process(["serve", "--port", "0", "--processes", "2"], env) as process:
        assert process.popen.wait(60) != 0
    assert "PESA_BASE_URL" in process.output()
    assert "--processes" in process.output()


@pytest.mark.timeout(300)
def test_the_processes_stop_when_pesa_serve_is_killed(tmp_path: Path) -> None:
    """SIGKILL leaves the parent no chance to stop its children: they notice and stop."""
    env = {
        "PESA_ENV": "emulator",
        "PESA_BASE_URL": "http://127.0.0.1:9",
        "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    args = ["serve", "--host", "127.0.0.1", "--port", "0", "--no-workers", "--processes", "2"]
    with pesa_process(args, env) as process:
        url = process.wait_for_line(r"API:\s+(http://127\.0\.0\.1:\d+)/v1/payments").group(1)
        wait_healthy(url, process, timeout=120)
        deadline = time.monotonic() + 60
        while len(_children(process.popen.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = _children(process.popen.pid)
        assert len(children) == 2, process.output()
        process.kill()
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(Path(f"/proc/{c}").exists() for c in children), "orphaned gateway processes"
