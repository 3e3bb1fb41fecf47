"""Listening sockets for the servers pesa runs (gateway, emulator), made one way.

asyncio sets ``TCP_NODELAY`` on an accepted connection only when the listening socket's
``proto`` is ``IPPROTO_TCP``; a socket made with ``socket.socket(family, SOCK_STREAM)`` has
proto 0, so every kept-alive response would wait on Nagle's algorithm for a delayed ACK
(~40 ms a request). Every server binds through :func:`listen_socket` for that reason.
"""

from __future__ import annotations

import socket
from typing import Final

__all__ = ["LISTEN_BACKLOG", "listen_socket"]

LISTEN_BACKLOG: Final = 2048


def listen_socket(host: str, port: int, *, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """Bind and listen on ``host:port`` (port 0 picks a free one); IPv6 when host has a colon.

    The socket is created with ``IPPROTO_TCP`` so that asyncio turns Nagle's algorithm off
    on every accepted connection, and is non-blocking, ready for ``uvicorn``'s
    ``server.run(sockets=[sock])``. Raises :class:`OSError` (the socket closed) when the
    address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
