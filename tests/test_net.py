"""The shared listening socket: accepted connections have Nagle's algorithm turned off."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pesa._net import listen_socket
from pesa.cli._gateway import bind_socket


async def _accepted_nodelay(sock: socket.socket) -> int:
    """Accept one connection through asyncio on ``sock``; its TCP_NODELAY as the server sees it."""
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = writer.get_extra_info("socket")
        seen.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=sock)
    try:
        host, port = sock.getsockname()[:2]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_listen_socket_accepts_with_tcp_nodelay() -> None:
    sock = listen_socket("127.0.0.1", 0)
    assert sock.getsockname()[1] != 0
    assert await _accepted_nodelay(sock) != 0


async def test_a_plain_stream_socket_would_leave_nagle_on() -> None:
    # The control: what every server had before the shared helper (proves the check can fail).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    assert await _accepted_nodelay(sock) == 0


async def test_pesa_serve_socket_accepts_with_tcp_nodelay() -> None:
    assert await _accepted_nodelay(bind_socket("127.0.0.1", 0)) != 0


def test_listen_socket_refuses_a_taken_port_and_closes() -> None:
    first = listen_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        # SO_REUSEADDR does not let two sockets listen on one port.
        with pytest.raises(OSError):
            listen_socket("127.0.0.1", port)
    finally:
        first.close()
