"""The lean callback client against raw loopback servers: framing, keep-alive, errors, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from pesa.emulator import EmulatorConfig
from pesa.emulator._http1 import DeliveryError, Http1Pool
from pesa.testing import serve_emulator

Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _server(
    respond: Responder, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await respond(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}/cb?x=1", connections
    finally:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


def _keep_alive(body: bytes, extra: bytes = b"") -> Responder:
    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await _read_request(reader)
            assert request.startswith(b"POST /cb?x=1 HTTP/1.1\r\n")
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)
            )
            await writer.drain()

    return respond


async def test_keep_alive_connections_are_reused() -> None:
    async with _server(_keep_alive(b'{"ok":1}')) as (url, connections):
        pool = Http1Pool()
        for _ in range(5):
            assert await pool.post(url, b"{}", 5) == (200, b'{"ok":1}')
        await pool.aclose()
    assert len(connections) == 1


async def test_connection_close_is_honoured() -> None:
    async with _server(_keep_alive(b"{}", b"Connection: close\r\n")) as (url, connections):
        pool = Http1Pool()
        for _ in range(3):
            assert (await pool.post(url, b"{}", 5))[0] == 200
        await pool.aclose()
    assert len(connections) == 3


async def test_chunked_and_unframed_bodies() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n'
        )
        await writer.drain()

    async def unframed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.0 500 Oops\r\n\r\nplain text")
        await writer.drain()

    pool = Http1Pool()
    async with _server(chunked) as (url, _):
        assert await pool.post(url, b"{}", 5) == (202, b'{"a":1}')
    async with _server(unframed) as (url, _):
        assert await pool.post(url, b"{}", 5) == (500, b"plain text")
    await pool.aclose()


async def test_a_stale_idle_connection_is_replaced() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Answers one request as keep-alive, then closes: the pooled connection goes stale.
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()

    async with _server(once) as (url, connections):
        pool = Http1Pool()
        assert (await pool.post(url, b"{}", 5))[0] == 200
        await asyncio.sleep(0.05)
        assert (await pool.post(url, b"{}", 5))[0] == 200
        await pool.aclose()
    assert len(connections) == 2


async def test_refused_connection_and_timeout_are_delivery_errors() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    pool = Http1Pool()
    with pytest.raises(DeliveryError) as refused:
        await pool.post(f"http://127.0.0.1:{port}/cb", b"{}", 5)
    assert refused.value.kind == "ConnectError"

    async def silent(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async with _server(silent) as (url, _):
        with pytest.raises(DeliveryError) as slow:
            await pool.post(url, b"{}", 0.1)
    assert slow.value.kind == "Timeout"
    with pytest.raises(DeliveryError) as bad:
        await pool.post("ftp://127.0.0.1/x", b"{}", 1)
    assert bad.value.kind == "UnsupportedProtocol"
    await pool.aclose()


async def test_garbage_status_line_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    async with _server(garbage) as (url, _):
        pool = Http1Pool()
        with pytest.raises(DeliveryError) as err:
            await pool.post(url, b"{}", 5)
        await pool.aclose()
    assert err.value.kind == "RemoteProtocolError"


async def test_https_with_the_emulators_ca() -> None:
    async with serve_emulator(EmulatorConfig(), tls=True) as running:
        assert running.tls is not None
        trusting = Http1Pool(verify=ssl.create_default_context(cafile=str(running.tls.ca_path)))
        status, body = await trusting.post(f"{running.base_url}/__emulator__/idle", b"", 5)
        assert status == 200
        assert b'"idle":true' in body
        await trusting.aclose()
        default = Http1Pool()
        with pytest.raises(DeliveryError) as err:
            await default.post(f"{running.base_url}/__emulator__/idle", b"", 5)
        assert err.value.kind == "ConnectError"
        await default.aclose()
