"""The same client, over loopback, against pesa's own Daraja emulator (strict mode)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from pesa import AsyncDaraja, Daraja, DarajaError, TransportError, parse_stk_callback
from pesa.daraja import parse_result
from pesa.emulator import SANDBOX_PASSKEY, Emulator, EmulatorConfig, create_app
from pesa.testing import RunningEmulator, run_emulator

KEY = "emulator-key"
SECRET = "emulator-secret"


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/cb"


@pytest.fixture(scope="module")
def running() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(
        strict=True,
        consumer_key=KEY,
        consumer_secret=SECRET,
        stk_delay=0.1,
        result_delay=0.05,
        callback_timeout=0.5,
        seed=7,
    )
    with run_emulator(config) as emulator:
        yield emulator


@pytest.fixture
def certificate(running: RunningEmulator, tmp_path: Path) -> Path:
    path = tmp_path / "emulator.pem"
    path.write_bytes(running.control.certificate())
    return path


def _kwargs(running: RunningEmulator, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "environment": "emulator",
        "base_url": running.base_url,
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "shortcode": "174379",
        "passkey": SANDBOX_PASSKEY,
        "callback_url": _closed_port_url(),
        "result_url": _closed_port_url(),
        "timeout_url": _closed_port_url(),
        "initiator_name": "testapi",
        "initiator_password": "Safaricom999!*!",
        "verify": running.verify,
    }
    kwargs.update(overrides)
    return kwargs


def _final_query(client: Daraja, checkout_id: str) -> Any:
    for _ in range(200):
        result = client.stk_query(checkout_id)
        if not result.pending:
            return result
        time.sleep(0.05)
    raise AssertionError("the STK push never reached a final state")


def _callback_for(running: RunningEmulator, checkout_id: str) -> Any:
    for _ in range(200):
        for sent in running.control.callbacks("stk"):
            if sent.payload["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id:
                return sent.payload
        time.sleep(0.05)
    raise AssertionError("no STK callback was sent")


def test_stk_push_pending_then_paid_and_the_callback_parses(running: RunningEmulator) -> None:
    with Daraja(**_kwargs(running)) as client:
        push = client.stk_push("0708374149", 10, "INV0042", "Order 42")
        first = client.stk_query(push.checkout_request_id)
        assert first.pending and first.result_code is None
        final = _final_query(client, push.checkout_request_id)
    assert final.succeeded and final.result_code == "0"
    callback = parse_stk_callback(_callback_for(running, push.checkout_request_id))
    assert callback.succeeded
    assert callback.amount == 10
    assert callback.receipt
    assert callback.transaction_date is not None


def test_cancelled_push_is_a_final_value_not_an_exception(running: RunningEmulator) -> None:
    with Daraja(**_kwargs(running)) as client:
        push = client.stk_push("0700001032", 10, "INV0043")
        final = _final_query(client, push.checkout_request_id)
    assert final.result_code == "1032" and not final.succeeded
    assert final.code is not None and final.code.final


def test_busy_subscriber_is_refused_at_push(running: RunningEmulator) -> None:
    with Daraja(**_kwargs(running)) as client, pytest.raises(DarajaError) as info:
        client.stk_push("0700001001", 10, "INV0044")
    assert info.value.error_code == "500.001.1001"


def test_b2c_with_the_emulators_certificate(running: RunningEmulator, certificate: Path) -> None:
    with Daraja(**_kwargs(running, certificate_path=certificate, shortcode="600997")) as client:
        ack = client.b2c_payment(
            "0708374149", 100, "Refund 1234", originator_conversation_id="client-test-b2c-1"
        )
    assert ack.conversation_id
    for _ in range(200):
        results = [
            parse_result(sent.payload)
            for sent in running.control.callbacks("result")
            if sent.payload["Result"].get("OriginatorConversationID") == "client-test-b2c-1"
        ]
        if results:
            break
        time.sleep(0.05)
    assert results and results[0].succeeded, results


def test_an_invalid_token_fault_is_refreshed_and_resent(running: RunningEmulator) -> None:
    with Daraja(**_kwargs(running)) as client:
        push = client.stk_push("0708374150", 10, "INV0045")
        tokens_before = len(running.control.requests("/oauth/v1/generate"))
        running.control.add_fault("invalid_token", times=1, path="/mpesa/stkpushquery")
        result = client.stk_query(push.checkout_request_id)
    assert result.checkout_request_id == push.checkout_request_id
    assert len(running.control.requests("/oauth/v1/generate")) == tokens_before + 1
    queries = running.control.requests("/mpesa/stkpushquery/v1/query")
    assert [q.status_code for q in queries[-2:]][0] in (401, 404)


def test_spike_arrest_on_a_query_is_retried(running: RunningEmulator) -> None:
    with Daraja(**_kwargs(running, retry_policy=None, max_retries=3)) as client:
        push = client.stk_push("0708374151", 10, "INV0046")
        running.control.add_fault("spike_arrest", times=1, path="/mpesa/stkpushquery")
        result = client.stk_query(push.checkout_request_id)
    assert result.checkout_request_id == push.checkout_request_id


@pytest.mark.parametrize("pool", ["httpx", "aiohttp"])
async def test_concurrent_async_pushes_share_one_token(running: RunningEmulator, pool: str) -> None:
    before = len(running.control.requests("/oauth/v1/generate"))
    client = AsyncDaraja(**_kwargs(running), async_http=pool)
    async with client, anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(client.stk_push, f"07083{pool == 'httpx':d}50{i:02d}", 10, "INV0047")
    assert len(running.control.requests("/oauth/v1/generate")) - before == 1


# run_emulator(tls=True) builds its own control client with a string ``verify=`` (emulator
# code, deprecated by httpx); the client under test gets the CA path and must not warn.
@pytest.mark.filterwarnings("ignore:`verify=<str>` is deprecated:DeprecationWarning")
def test_tls_with_the_emulators_ca() -> None:
    config = EmulatorConfig(strict=True, consumer_key=KEY, consumer_secret=SECRET)
    with run_emulator(config, tls=True) as tls_emulator:
        assert tls_emulator.base_url.startswith("https://")
        assert tls_emulator.ca_path is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            client = Daraja(**_kwargs(tls_emulator, verify=tls_emulator.ca_path))
        with client:
            push = client.stk_push("0708374149", 10, "INV0048")
        assert push.checkout_request_id

        async def on_aiohttp() -> str:
            async with AsyncDaraja(
                **_kwargs(tls_emulator, verify=tls_emulator.ca_path), async_http="aiohttp"
            ) as client:
                push = await client.stk_push("0708374150", 10, "INV0049")
            return push.checkout_request_id

        assert anyio.run(on_aiohttp)

        # The CA is really checked: without it, the handshake fails before sending.
        async def untrusting() -> None:
            async with AsyncDaraja(
                **_kwargs(tls_emulator, verify=True), async_http="aiohttp", max_retries=0
            ) as client:
                await client.stk_push("0708374151", 10, "INV0050")

        with pytest.raises(TransportError, match="ConnectError"):
            anyio.run(untrusting)


@pytest.mark.slow
def test_cli_stk_push_and_query_end_to_end(running: RunningEmulator, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(
        PESA_BASE_URL=running.base_url,
        PESA_CONSUMER_KEY=KEY,
        PESA_CONSUMER_SECRET=SECRET,
        PESA_SHORTCODE="174379",
        PESA_PASSKEY=SANDBOX_PASSKEY,
        PESA_CALLBACK_URL=_closed_port_url(),
    )

    def pesa(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pesa", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
        )

    import json

    env["PESA_LOG"] = "debug"
    push = pesa(
        "stk", "push", "--phone", "0708374149", "--amount", "5", "--reference", "CLI1", "--json"
    )
    assert push.returncode == 0, push.stderr
    assert "POST /mpesa/stkpush/v1/processrequest" in push.stderr  # debug logs are on
    for secret in (SECRET, SANDBOX_PASSKEY, "254708374149", "0708374149", "Bearer ey"):
        assert secret not in push.stderr, secret
    env["PESA_LOG"] = "warning"
    checkout_id = json.loads(push.stdout)["checkout_request_id"]
    query = pesa("stk", "query", checkout_id, "--json")
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["checkout_request_id"] == checkout_id
    token = pesa("token")
    assert token.returncode == 0 and token.stdout.strip()


async def test_in_process_through_asgi_transport() -> None:
    emulator = Emulator(EmulatorConfig(strict=True, consumer_key=KEY, consumer_secret=SECRET))
    transport = httpx.ASGITransport(app=create_app(emulator=emulator))
    kwargs = {
        "environment": "emulator",
        "consumer_key": KEY,
        "consumer_secret": SECRET,
        "shortcode": "174379",
        "passkey": SANDBOX_PASSKEY,
        "callback_url": "http://127.0.0.1:9/cb",
    }
    async with AsyncDaraja(transport=transport, **kwargs) as client:
        push = await client.stk_push("0708374149", 10, "INV0049")
        status = await client.stk_query(push.checkout_request_id)
    assert push.checkout_request_id.startswith("ws_CO_")
    assert status.pending
