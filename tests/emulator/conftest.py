"""Fixtures for the emulator tests: a real loopback emulator and a callback receiver."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pesa.emulator import SANDBOX_PASSKEY, EmulatorConfig, nairobi_now
from pesa.testing import RunningEmulator, serve_emulator

SHORTCODE = "174379"
ORG_SHORTCODE = "600997"
PHONE = "254708374149"


def stk_timestamp(now: datetime | None = None) -> str:
    return f"{now or nairobi_now():%Y%m%d%H%M%S}"


def stk_password(timestamp: str, shortcode: str = SHORTCODE, passkey: str = SANDBOX_PASSKEY) -> str:
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


def fake_credential() -> str:
    """Base64 of 256 bytes: the shape a lenient emulator accepts."""
    return base64.b64encode(bytes(range(256))).decode()


@dataclass
class Receiver:
    """A loopback HTTP server recording every POST; answers are configurable per path."""

    base_url: str = ""
    received: list[tuple[str, Any]] = field(default_factory=list)
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def bodies(self, path: str) -> list[Any]:
        return [body for p, body in self.received if p == path]

    async def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        async def until() -> None:
            while len(self.bodies(path)) < count:
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), timeout)
        return self.bodies(path)

    async def endpoint(self, request: Request) -> Response:
        path = request.url.path
        self.received.append((path, json.loads(await request.body())))
        self.event.set()
        if path in self.delays:
            await asyncio.sleep(self.delays[path])
        status, body = self.answers.get(path, (200, {"ResultCode": 0, "ResultDesc": "Accepted"}))
        return Response(json.dumps(body), status_code=status, media_type="application/json")


@contextlib.asynccontextmanager
async def _serve_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/{path:path}", receiver.endpoint, methods=["POST"])])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    receiver.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with _serve_receiver() as r:
        yield r


FAST = EmulatorConfig(stk_delay=0.05, result_delay=0.02, seed=7)


@dataclass
class Daraja:
    """A raw-JSON Daraja caller bound to a running emulator."""

    running: RunningEmulator
    http: httpx.AsyncClient
    token: str = ""

    async def authenticate(self, key: str = "key", secret: str = "secret") -> str:
        response = await self.http.get(
            "/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=(key, secret)
        )
        assert response.status_code == 200, response.text
        self.token = response.json()["access_token"]
        return self.token

    async def post(self, path: str, body: Any, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        return await self.http.post(path, json=body, headers=headers)

    def stk_body(self, **overrides: Any) -> dict[str, Any]:
        timestamp = stk_timestamp()
        body: dict[str, Any] = {
            "BusinessShortCode": 174379,
            "Password": stk_password(timestamp),
            "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 1,
            "PartyA": PHONE,
            "PartyB": SHORTCODE,
            "PhoneNumber": PHONE,
            "CallBackURL": "http://127.0.0.1:9/stk/cb",  # refused on loopback: stays local
            "AccountReference": "INV0042",
            "TransactionDesc": "Payment",
        }
        body.update(overrides)
        return body

    def query_body(self, checkout_id: str) -> dict[str, Any]:
        timestamp = stk_timestamp()
        return {
            "BusinessShortCode": SHORTCODE,
            "Password": stk_password(timestamp),
            "Timestamp": timestamp,
            "CheckoutRequestID": checkout_id,
        }


DarajaFactory = Callable[..., contextlib.AbstractAsyncContextManager[Daraja]]


@contextlib.asynccontextmanager
async def _daraja(config: EmulatorConfig = FAST, **kwargs: Any) -> AsyncIterator[Daraja]:
    async with (
        serve_emulator(config, **kwargs) as running,
        httpx.AsyncClient(
            base_url=running.base_url, verify=running.verify, trust_env=False
        ) as http,
    ):
        client = Daraja(running, http)
        await client.authenticate()
        yield client


@pytest.fixture
async def daraja() -> AsyncIterator[Daraja]:
    async with _daraja() as client:
        yield client


@pytest.fixture
def make_daraja() -> DarajaFactory:
    return _daraja
