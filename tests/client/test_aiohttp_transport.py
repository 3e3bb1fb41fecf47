"""AsyncDaraja on aiohttp: choosing the pool, and what aiohttp's errors mean for retries.

The whole client suite also runs on aiohttp over real sockets (the ``aiohttp`` face in
conftest.py); these tests pin the pieces the suite cannot reach one by one.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp.client_reqrep import ConnectionKey

from pesa import AsyncDaraja, ConfigurationError, Daraja, Settings, TransportError
from pesa.client import DarajaOptions
from pesa.client._aiohttp import AiohttpTransport, map_aiohttp_error
from pesa.client._retry import classify_transport_error

STK = httpx.Request("POST", "https://sandbox.safaricom.co.ke/mpesa/stkpush/v1/processrequest")
_KEY = ConnectionKey("sandbox.safaricom.co.ke", 443, True, True, None, None, None)


@pytest.mark.parametrize(
    ("error", "mapped", "failure"),
    [
        # Before the first byte leaves: safe to re-send even a payment.
        (
            aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "refused")),
            httpx.ConnectError,
            "not_sent",
        ),
        (
            aiohttp.ClientConnectorDNSError(_KEY, OSError(-2, "Name or service not known")),
            httpx.ConnectError,
            "not_sent",
        ),
        (aiohttp.ConnectionTimeoutError("pool or connect"), httpx.ConnectTimeout, "not_sent"),
        # After it may have left: never re-sent when money moves.
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout, "maybe_sent"),
        (aiohttp.ServerTimeoutError("read"), httpx.ReadTimeout, "maybe_sent"),
        (TimeoutError(), httpx.ReadTimeout, "maybe_sent"),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError, "maybe_sent"),
        (aiohttp.ClientOSError(104, "Connection reset by peer"), httpx.ReadError, "maybe_sent"),
        (aiohttp.ClientPayloadError("truncated"), httpx.ReadError, "maybe_sent"),
        (aiohttp.ClientConnectionResetError("reset"), httpx.ReadError, "maybe_sent"),
    ],
)
def test_aiohttp_errors_map_to_httpx_by_whether_the_request_can_have_left(
    error: BaseException, mapped: type[httpx.RequestError], failure: str
) -> None:
    result = map_aiohttp_error(error, STK)
    assert type(result) is mapped
    assert result.request is STK and result.__cause__ is error
    assert classify_transport_error(result) == failure


def test_the_pool_is_chosen_by_option_and_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DarajaOptions().async_http == "httpx"
    with pytest.raises(ConfigurationError, match="PESA_ASYNC_HTTP"):
        DarajaOptions(async_http="requests")
    monkeypatch.setenv("PESA_ASYNC_HTTP", "aiohttp")
    assert DarajaOptions.from_settings(Settings()).async_http == "aiohttp"
    client = AsyncDaraja.from_env()
    assert isinstance(client._http._transport, AiohttpTransport)
    Daraja.from_env().close()  # the sync client keeps httpx's pool and ignores the option


async def test_an_explicit_transport_wins_over_the_option() -> None:
    mock = httpx.MockTransport(lambda _: httpx.Response(200))
    async with AsyncDaraja(async_http="aiohttp", transport=mock) as client:
        assert client._http._transport is mock


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_connection_is_retried_then_a_transport_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kwargs: dict[str, Any] = {
        "environment": "sandbox",
        "base_url": f"http://127.0.0.1:{_closed_port()}",
        "consumer_key": "k",
        "consumer_secret": "s",
        "shortcode": "174379",
        "passkey": "p",
        "callback_url": "https://example.com/cb",
        "async_http": "aiohttp",
        "max_retries": 1,
    }
    caplog.set_level("INFO", logger="pesa")
    async with AsyncDaraja(**kwargs) as client:
        with pytest.raises(TransportError, match="ConnectError.*PESA_BASE_URL"):
            await client.stk_push("0708374149", 10, "INV0042")
    assert "retrying" in caplog.text  # the token fetch never left: retried


async def test_the_session_is_closed_with_the_client() -> None:
    transport = AiohttpTransport()
    async with AsyncDaraja(transport=transport) as client:
        assert client._http._transport is transport
        session = transport._open()
    assert session.closed and transport._session is None
