"""The typed REST client (GatewayClient, AsyncGatewayClient) against a real gateway on loopback."""

from __future__ import annotations

import inspect
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pesa import AsyncGatewayClient, GatewayClient, GatewayError, TransportError
from pesa.emulator import Emulator, EmulatorConfig
from pesa.gateway_client import EventOut, PaymentOut
from pesa.testing import RunningGateway, run_gateway

from .conftest import API_KEY, gateway_settings

TERMINAL = {"succeeded", "failed", "rejected"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """One gateway for the module (starting one per test would cost more than the tests)."""
    db = Path(tmp_path_factory.mktemp("gw")) / "gateway.db"
    emulator = Emulator(EmulatorConfig(stk_delay=0.1, seed=9))
    with run_gateway(gateway_settings(f"sqlite:///{db}"), emulator=emulator) as running:
        yield running


class Face:
    """One test body, both clients: ``await face("get_payment", ...)``."""

    def __init__(self, kind: str, url: str, **kwargs: Any) -> None:
        self.kind = kind
        self.sync = GatewayClient(url, api_key=API_KEY, **kwargs)
        self.async_ = AsyncGatewayClient(url, api_key=API_KEY, **kwargs)

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            target = getattr(self.sync, method)
            return await anyio.to_thread.run_sync(lambda: target(*args, **kwargs))
        return await getattr(self.async_, method)(*args, **kwargs)

    async def collect(self, method: str, **kwargs: Any) -> list[Any]:
        if self.kind == "sync":
            target = getattr(self.sync, method)
            return await anyio.to_thread.run_sync(lambda: list(target(**kwargs)))
        return [item async for item in getattr(self.async_, method)(**kwargs)]

    async def close(self) -> None:
        self.sync.close()
        await self.async_.aclose()


@pytest.fixture(params=["sync", "async"])
async def face(request: pytest.FixtureRequest, live: RunningGateway) -> Any:
    f = Face(request.param, live.url)
    yield f
    await f.close()


def _phone() -> str:
    # A fresh successful-scenario number per test, so list filters see only this test's.
    return f"2547{secrets.randbelow(10**8):08d}"


async def test_create_with_an_idempotency_key_replays_the_same_payment(face: Face) -> None:
    key = f"order-{secrets.token_hex(4)}"
    phone = _phone()
    first = await face("create_payment", phone, 10, "ORDER42", "Order 42", idempotency_key=key)
    again = await face("create_payment", phone, 10, "ORDER42", "Order 42", idempotency_key=key)
    assert isinstance(first, PaymentOut) and first.status == "pending"
    assert again.id == first.id
    with pytest.raises(GatewayError) as info:
        await face("create_payment", phone, 11, "ORDER42", "Order 42", idempotency_key=key)
    assert info.value.status_code == 409
    assert info.value.request is not None and info.value.request.method == "POST"


async def test_get_and_refresh_follow_a_payment_to_its_outcome(face: Face) -> None:
    created = await face("create_payment", _phone(), 10, "INV1", "Test", metadata={"o": 1})
    deadline = time.monotonic() + 20
    payment = created
    while payment.status not in TERMINAL and time.monotonic() < deadline:
        await anyio.sleep(0.1)
        payment = await face("get_payment", created.id)
    assert payment.status == "succeeded" and payment.receipt and payment.metadata == {"o": 1}
    refreshed = await face("refresh_payment", created.id)
    assert refreshed.id == created.id and refreshed.status == "succeeded"


async def test_list_payments_follows_every_page(face: Face) -> None:
    phone = _phone()
    ids = {(await face("create_payment", phone, 10 + i, "INV", "Test")).id for i in range(5)}
    listed = await face.collect("list_payments", phone=phone, page_size=2)
    assert [p.id for p in listed if p.id in ids] and {p.id for p in listed} == ids
    assert len(listed) == 5  # three pages, nothing twice


async def test_list_events_of_one_payment(face: Face) -> None:
    payment = await face("create_payment", _phone(), 10, "INV", "Test")
    deadline = time.monotonic() + 20
    types: list[str] = []
    while "payment.succeeded" not in types and time.monotonic() < deadline:
        await anyio.sleep(0.1)
        events = await face.collect("list_events", payment_id=payment.id, page_size=1)
        assert all(isinstance(e, EventOut) for e in events)
        types = [e.type for e in events]
    assert types[0] == "payment.pending" and types[-1] == "payment.succeeded"


async def test_bad_input_is_a_gateway_error_naming_the_field(face: Face) -> None:
    with pytest.raises(GatewayError) as info:
        await face("create_payment", _phone(), 10, "A-REFERENCE-FAR-TOO-LONG", "Test")
    assert info.value.status_code == 422 and info.value.field == "account_reference"
    with pytest.raises(GatewayError) as missing:
        await face("get_payment", "pay_doesnotexist")
    assert missing.value.status_code == 404


async def test_a_wrong_api_key_is_401_and_the_key_is_redacted(live: RunningGateway) -> None:
    async with AsyncGatewayClient(live.url, api_key="wrong-key-123") as client:
        with pytest.raises(GatewayError) as info:
            await client.get_payment("pay_x")
    assert info.value.status_code == 401
    assert info.value.request is not None
    assert "wrong-key-123" not in repr(info.value.request)


def test_no_gateway_is_a_transport_error_naming_the_url() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with GatewayClient(url, max_retries=0) as client, pytest.raises(TransportError) as info:
        client.get_payment("pay_x")
    assert url in str(info.value) and "pesa serve" in str(info.value)


def _public(cls: type) -> dict[str, Any]:
    return {n: m for n, m in inspect.getmembers(cls) if not n.startswith("_") and callable(m)}


def test_both_clients_have_one_surface() -> None:
    sync = set(_public(GatewayClient)) - {"close"}
    async_ = set(_public(AsyncGatewayClient)) - {"aclose"}
    assert sync == async_
    for name in sync:
        a, b = getattr(GatewayClient, name), getattr(AsyncGatewayClient, name)
        assert inspect.getdoc(a) == inspect.getdoc(b), name
        sa, sb = inspect.signature(a), inspect.signature(b)
        assert sa.parameters == sb.parameters, name
        if not name.startswith("list_"):  # Iterator / AsyncIterator
            assert sa.return_annotation == sb.return_annotation, name
