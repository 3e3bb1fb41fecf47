"""A fake Daraja for ``httpx.MockTransport`` answering with the reference's literal payloads."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest

from pesa import AsyncDaraja, Daraja
from pesa.client import RetryPolicy
from pesa.testing import FrozenClock

SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CONSUMER_KEY = "ck-test-key"
CONSUMER_SECRET = "cs-very-secret-value"

STK_PUSH_OK = {
    "MerchantRequestID": "ac7b-470b-8df7-23ab3cef38271071873",
    "CheckoutRequestID": "ws_CO_1007202409152617172396192",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
STK_QUERY_FINAL = {
    "ResponseCode": "0",
    "ResponseDescription": "The service request has been accepted successfully",
    "MerchantRequestID": "ac7b-470b-8df7-23ab3cef38271071873",
    "CheckoutRequestID": "ws_CO_1007202409152617172396192",
    "ResultCode": "1037",
    "ResultDesc": "No response from user.",
}
STK_QUERY_PENDING = {
    "requestId": "ws_CO_1007202409152617172396192",
    "errorCode": "500.001.1001",
    "errorMessage": "The transaction is being processed",
}
INITIATOR_ACK = {
    "OriginatorConversationID": "5118-111210482-1",
    "ConversationID": "AG_20230420_2010759fd5662ef6d054",
    "ResponseCode": "0",
    "ResponseDescription": "Accept the service request successfully.",
}
C2B_ACK = {
    "OriginatorCoversationID": "6e86-45dd-91ac-fd5d4178ab523369",
    "ResponseCode": "00000000",
    "ResponseDescription": "Success",
}
INVALID_TOKEN = {
    "requestId": "11728-2929992-1",
    "errorCode": "404.001.03",
    "errorMessage": "Invalid Access Token",
}


def error_body(
    code: str, message: str, request_id: str = "1c5b-4ba8-815c-ac45c57a3db0149"
) -> dict[str, str]:
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}


# Failures before the request leaves; the rest of httpx's errors happen after sending.
_CONNECT_FAULTS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Route = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class FakeDaraja:
    """Daraja behind a MockTransport: OAuth, bearer checks, and per-path routes.

    ``routes[path]`` is a callable or a list of responses/exceptions consumed in order
    (the last one repeats). Every request is recorded in ``calls``.
    """

    routes: dict[str, Any] = field(default_factory=dict)
    calls: list[httpx.Request] = field(default_factory=list)
    tokens_issued: int = 0
    valid_tokens: set[str] = field(default_factory=set)
    token_delay: float = 0.0
    expires_in: Any = "3599"
    oauth_responses: list[Any] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, path: str) -> list[httpx.Request]:
        return [c for c in self.calls if c.url.path == path]

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(c.content) for c in self.paths(path)]

    def revoke_all(self) -> None:
        with self._lock:
            self.valid_tokens.clear()

    def _issue(self, request: httpx.Request) -> httpx.Response:
        expected = base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != f"Basic {expected}":
            return httpx.Response(
                400, json=error_body("400.008.01", "Invalid Authentication passed")
            )
        if request.url.params.get("grant_type") != "client_credentials":
            return httpx.Response(400, json=error_body("400.008.02", "Invalid grant type passed"))
        with self._lock:
            if self.oauth_responses:
                queued = self.oauth_responses.pop(0)
                if isinstance(queued, Exception):
                    raise queued
                return httpx.Response(
                    queued.status_code, headers=queued.headers, content=queued.content
                )
            self.tokens_issued += 1
            token = f"tok-{self.tokens_issued}-c9SQxWWhmdVRlyh0zh8gZDTkubVF"
            self.valid_tokens.add(token)
        return httpx.Response(200, json={"access_token": token, "expires_in": self.expires_in})

    def _route(self, request: httpx.Request) -> Any:
        with self._lock:
            route = self.routes.get(request.url.path)
            if isinstance(route, list):
                return route.pop(0) if len(route) > 1 else route[0]
        return route

    def connect_fault(self, request: httpx.Request) -> Exception | None:
        """The next answer to ``request`` if it is a failure to connect (consumed, recorded).

        The aiohttp face raises these at connect time, before a byte leaves, as a refused
        or timed-out connection would.
        """
        with self._lock:
            if request.url.path == "/oauth/v1/generate":
                queue = self.oauth_responses
                fault = queue[0] if queue else None
            else:
                route = self.routes.get(request.url.path)
                queue = route if isinstance(route, list) else []
                fault = route[0] if isinstance(route, list) else route
            if not isinstance(fault, _CONNECT_FAULTS):
                return None
            if len(queue) > 1 or queue is self.oauth_responses:
                queue.pop(0)
            self.calls.append(request)
        return fault

    def _authorised(self, request: httpx.Request) -> bool:
        header = request.headers.get("Authorization", "")
        with self._lock:
            return header.startswith("Bearer ") and header[7:] in self.valid_tokens

    def _answer(self, request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
        if not self._authorised(request):
            return httpx.Response(404, json=INVALID_TOKEN)
        route = self._route(request)
        if route is None:
            return httpx.Response(404, json=error_body("404.001.01", "Resource not found"))
        if isinstance(route, Exception):
            raise route
        if isinstance(route, httpx.Response):
            return httpx.Response(route.status_code, headers=route.headers, content=route.content)
        result: httpx.Response | Awaitable[httpx.Response] = route(request)
        return result

    def sync_handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls.append(request)
        if request.url.path == "/oauth/v1/generate":
            if self.token_delay:
                time.sleep(self.token_delay)
            return self._issue(request)
        answer = self._answer(request)
        assert isinstance(answer, httpx.Response)
        return answer

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.calls.append(request)
        if request.url.path == "/oauth/v1/generate":
            if self.token_delay:
                await anyio.sleep(self.token_delay)
            return self._issue(request)
        await anyio.sleep(0)
        answer = self._answer(request)
        if not isinstance(answer, httpx.Response):
            answer = await answer
        return answer


def default_routes() -> dict[str, Any]:
    return {
        "/mpesa/stkpush/v1/processrequest": httpx.Response(200, json=STK_PUSH_OK),
        "/mpesa/stkpushquery/v1/query": httpx.Response(200, json=STK_QUERY_FINAL),
        "/mpesa/b2c/v3/paymentrequest": httpx.Response(200, json=INITIATOR_ACK),
        "/mpesa/transactionstatus/v1/query": httpx.Response(200, json=INITIATOR_ACK),
        "/mpesa/accountbalance/v1/query": httpx.Response(200, json=INITIATOR_ACK),
        "/mpesa/reversal/v1/request": httpx.Response(200, json=INITIATOR_ACK),
        "/mpesa/c2b/v1/registerurl": httpx.Response(200, json=C2B_ACK),
        "/mpesa/c2b/v2/registerurl": httpx.Response(200, json=C2B_ACK),
        "/mpesa/c2b/v1/simulate": httpx.Response(200, json=C2B_ACK),
        "/mpesa/c2b/v2/simulate": httpx.Response(200, json=C2B_ACK),
    }


@pytest.fixture
def fake() -> FakeDaraja:
    return FakeDaraja(routes=default_routes())


@pytest.fixture
def clock() -> FrozenClock:
    from datetime import UTC, datetime

    return FrozenClock(datetime(2016, 2, 16, 13, 56, 27, tzinfo=UTC))


def client_kwargs(clock: FrozenClock, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "environment": "sandbox",
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
        "shortcode": "174379",
        "passkey": SANDBOX_PASSKEY,
        "initiator_name": "testapi",
        "security_credential": "precomputed-credential-xyz",
        "callback_url": "https://example.com/stk/cb",
        "result_url": "https://example.com/result",
        "timeout_url": "https://example.com/timeout",
        "clock": clock,
        "retry_policy": RetryPolicy(max_retries=2, base_delay=0, max_delay=0),
    }
    kwargs.update(overrides)
    return kwargs


# The aiohttp face's read timeout; a route's timeout makes the wire sleep past it.
WIRE_TIMEOUT = 0.5


class Wire:
    """The :class:`FakeDaraja` behind a real HTTP server on 127.0.0.1, for the aiohttp face.

    ``AsyncDaraja(async_http="aiohttp")`` talks to it over real sockets, so every test of
    the face runs through :class:`pesa.client._aiohttp.AiohttpTransport` and its mapping of
    aiohttp's errors: a route's connect failure is raised by the transport's connector
    before anything is sent (aiohttp's own ``ClientConnectorError`` or
    ``ConnectionTimeoutError``), a timeout makes the server sleep past the client's read
    timeout, and any other transport error drops the connection after the request arrived.
    """

    def __init__(self, fake: FakeDaraja) -> None:
        self.fake = fake
        self.url = ""
        self.sent: list[httpx.Request] = []  # as the client's transport was handed them
        self._runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        sent = httpx.Request(
            request.method,
            f"{self.url}{request.rel_url}",
            headers=list(request.headers.items()),
            content=await request.read(),
        )
        try:
            answer = await self.fake.async_handler(sent)
        except httpx.TimeoutException:
            # The client gives up first; wait for its hang-up (which does not always cancel
            # this handler), at most 6 s (longer than any timeout these tests give a client).
            for _ in range(120):
                if request.transport is None or request.transport.is_closing():
                    break
                await anyio.sleep(0.05)
            return web.Response(status=504)
        except httpx.TransportError:
            request.transport.close()  # the answer is lost: the client sees a dropped line
            return web.Response(status=502)
        headers = [
            (k, v)
            for k, v in answer.headers.multi_items()
            if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
        ]
        return web.Response(status=answer.status_code, headers=headers, body=answer.content)

    def transport(self) -> httpx.AsyncBaseTransport:
        import aiohttp

        from pesa.client._aiohttp import AiohttpTransport

        fake, sent = self.fake, self.sent

        class FaultyConnector(aiohttp.TCPConnector):
            async def connect(self, req: Any, traces: Any, timeout: Any) -> Any:
                body = getattr(req.body, "_value", b"") or b""
                attempt = httpx.Request(
                    req.method, str(req.url), headers=list(req.headers.items()), content=body
                )
                fault = fake.connect_fault(attempt)
                if isinstance(fault, httpx.ConnectError):
                    raise aiohttp.ClientConnectorError(
                        req.connection_key, ConnectionRefusedError(111, "Connection refused")
                    )
                if fault is not None:
                    raise aiohttp.ConnectionTimeoutError(f"Connection timeout to host {req.url}")
                return await super().connect(req, traces, timeout)

        class Faulty(AiohttpTransport):
            def make_connector(self) -> aiohttp.BaseConnector:
                return FaultyConnector(limit=100)

            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                sent.append(request)
                return await super().handle_async_request(request)

        return Faulty()


class Face:
    """One test body, every client: ``await face("stk_push", ...)`` runs sync or async.

    ``kind`` is ``"sync"`` (Daraja), ``"async"`` (AsyncDaraja, httpx's pool) or
    ``"aiohttp"`` (AsyncDaraja on aiohttp, over real sockets to a :class:`Wire`).
    """

    def __init__(
        self, kind: str, fake: FakeDaraja, clock: FrozenClock, wire: Wire | None = None
    ) -> None:
        self.kind = kind
        self.fake = fake
        self.clock = clock
        self.wire = wire
        self.clients: list[Daraja | AsyncDaraja] = []

    def make(self, **overrides: Any) -> Daraja | AsyncDaraja:
        if self.wire is not None:
            overrides = {"base_url": self.wire.url, "timeout": WIRE_TIMEOUT, **overrides}
        kwargs = client_kwargs(self.clock, **overrides)
        client: Daraja | AsyncDaraja
        if self.kind == "sync":
            client = Daraja(transport=httpx.MockTransport(self.fake.sync_handler), **kwargs)
        elif self.wire is not None:
            client = AsyncDaraja(transport=self.wire.transport(), **kwargs)
        else:
            client = AsyncDaraja(transport=httpx.MockTransport(self.fake.async_handler), **kwargs)
        self.clients.append(client)
        return client

    def sent(self, path: str) -> list[httpx.Request]:
        """The requests to ``path`` as the client sent them (timeouts in their extensions)."""
        if self.wire is None:
            return self.fake.paths(path)
        return [r for r in self.wire.sent if r.url.path == path]

    @property
    def client(self) -> Daraja | AsyncDaraja:
        return self.clients[0] if self.clients else self.make()

    async def __call__(self, method: str, *args: Any, client: Any = None, **kwargs: Any) -> Any:
        target = getattr(client or self.client, method)
        if self.kind == "sync":
            return await anyio.to_thread.run_sync(lambda: target(*args, **kwargs))
        return await target(*args, **kwargs)

    async def close(self) -> None:
        for client in self.clients:
            if isinstance(client, Daraja):
                client.close()
            else:
                await client.aclose()


@pytest.fixture(params=["sync", "async", "aiohttp"])
async def face(
    request: pytest.FixtureRequest, fake: FakeDaraja, clock: FrozenClock
) -> AsyncIterator[Face]:
    wire = Wire(fake) if request.param == "aiohttp" else None
    if wire is not None:
        await wire.start()
    f = Face(request.param, fake, clock, wire)
    try:
        yield f
    finally:
        await f.close()
        if wire is not None:
            await wire.stop()
