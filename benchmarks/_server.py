"""Entry point of every server process a benchmark starts, with connection counters attached.

Run as ``python -m benchmarks._server --counters FILE <what> [args...]``:

- ``pesa ARGS...`` runs the ``pesa`` command line itself (``pesa emulator ...``,
  ``pesa serve ...``) exactly as a user would, after attaching the counters;
- ``bare KIND --port 0`` serves one of the baseline apps below with uvicorn, configured like
  ``pesa emulator`` serves the emulator (h11, no access log).

The counters are the benchmark's own hook, outside pesa's modules: uvicorn's HTTP protocol
class is wrapped so that every accepted TCP connection, every TLS connection (the handshake
is complete when uvicorn sees the connection) and every request received increments a
64-bit slot in a small memory-mapped file that the benchmark process reads. Nothing is
written to disk per request beyond that shared page.
"""

from __future__ import annotations

import json
import mmap
import os
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["COUNTER_NAMES", "COUNTERS_SIZE", "read_counters"]

# Slots of the counters file, in order.
COUNTER_NAMES = ("connections", "tls_connections", "requests", "oauth_requests", "nodelay_fixed")
_FORMAT = "<" + "Q" * len(COUNTER_NAMES)
COUNTERS_SIZE = struct.calcsize(_FORMAT)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def read_counters(path: str) -> dict[str, int]:
    """The current values of the counters file written by a server process."""
    with open(path, "rb") as handle:
        data = handle.read(COUNTERS_SIZE)
    if len(data) < COUNTERS_SIZE:
        return dict.fromkeys(COUNTER_NAMES, 0)
    return dict(zip(COUNTER_NAMES, struct.unpack(_FORMAT, data), strict=True))


def _nodelay_missing(sock: Any) -> bool:
    """Set TCP_NODELAY on an accepted connection that lacks it; True if it was missing.

    asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP. A listening
    socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` (proto 0) and handed to
    uvicorn yields connections without it: Nagle's algorithm then holds the response body
    (written after the headers) until the client's delayed ACK, about 40 ms per request on
    a kept-alive connection, while a fresh connection per request does not wait. That would
    make every pooled client look 20 times slower than the snippet way; real Daraja does not
    behave so. The benchmark sets the option, counts the connections it had to fix and
    reports the count in BENCHMARKS.md.
    """
    try:
        if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        return False
    return True


def _attach_counters(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(COUNTERS_SIZE)
        shared = mmap.mmap(handle.fileno(), COUNTERS_SIZE)
    counts = [0] * len(COUNTER_NAMES)

    def publish() -> None:
        struct.pack_into(_FORMAT, shared, 0, *counts)

    publish()

    def wrap(module: Any) -> None:
        protocol = (
            module.H11Protocol if hasattr(module, "H11Protocol") else module.HttpToolsProtocol
        )
        cycle = module.RequestResponseCycle
        made = protocol.connection_made
        start = cycle.__init__

        # Both are counted before the server can answer anything on that connection or
        # request, so a client that has its response always finds it counted.
        def connection_made(self: Any, transport: Any) -> None:
            counts[0] += 1
            if transport.get_extra_info("ssl_object") is not None:
                counts[1] += 1
            sock = transport.get_extra_info("socket")
            if sock is not None and _nodelay_missing(sock):
                counts[4] += 1
            publish()
            made(self, transport)

        def cycle_init(self: Any, *args: Any, **kwargs: Any) -> None:
            counts[2] += 1
            scope = kwargs.get("scope", args[0] if args else None)
            if scope is not None and str(scope.get("path", "")).startswith("/oauth/"):
                counts[3] += 1
            publish()
            start(self, *args, **kwargs)

        protocol.connection_made = connection_made
        cycle.__init__ = cycle_init

    from uvicorn.protocols.http import h11_impl

    wrap(h11_impl)
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional; uvicorn then uses h11 only
        pass
    else:
        wrap(httptools_impl)


# -- baseline apps --------------------------------------------------------------------------

_STK_ACCEPTED = json.dumps(
    {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResponseCode": "0",
        "ResponseDescription": "Success. Request accepted for processing",
        "CustomerMessage": "Success. Request accepted for processing",
    }
).encode()
_ACK = json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}).encode()
_HEADERS = [(b"content-type", b"application/json")]


async def _drain(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


def _bare_stk() -> Any:
    """A bare ASGI endpoint answering the STK push JSON Daraja answers, with no logic."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await _drain(receive)
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _STK_ACCEPTED})

    return app


def _bare_sink(record: str | None) -> Any:
    """A bare ASGI endpoint that acknowledges callbacks / webhooks.

    With ``record``, each JSON body's ``type`` and ``data.payment.id`` (a pesa webhook) are appended
    to that file with the receive time (``time.monotonic()``, comparable across processes,
    and ``time.time()``, comparable with the ledger's timestamps).
    """
    out = open(record, "a", buffering=1) if record else None  # noqa: SIM115  (lives as long as the process)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _drain(receive)
        if out is not None:
            now = time.monotonic()
            try:
                event = json.loads(body)
                data = event.get("data") or {}
                inner = data.get("payment") if isinstance(data, dict) else None
                payment = inner.get("id") if isinstance(inner, dict) else None
                line = {"t": now, "w": time.time(), "type": event.get("type"), "payment": payment}
            except (ValueError, AttributeError):
                line = {"t": now, "w": time.time(), "type": None, "payment": None}
            out.write(json.dumps(line) + "\n")
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        await send({"type": "http.response.body", "body": _ACK})

    return app


def _bare_fastapi() -> Any:
    """The callback ceiling: a FastAPI endpoint that parses the JSON and returns 200."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    # FastAPI resolves the (string) annotations below in this module's globals.
    global Request
    from fastapi import Request

    app = FastAPI()

    @app.post("/callbacks/{token}/stk")
    async def callback(token: str, request: Request) -> JSONResponse:  # noqa: ARG001
        await request.json()
        return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})

    return app


def _serve_bare(kind: str, host: str, port: int, record: str | None) -> None:
    import uvicorn

    apps: dict[str, Callable[[], Any]] = {
        "stk": _bare_stk,
        "sink": lambda: _bare_sink(record),
        "fastapi": _bare_fastapi,
    }
    if kind not in apps:
        raise SystemExit(f"unknown bare app {kind!r}; choose from {', '.join(apps)}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    print(f"bare {kind} listening on http://{host}:{sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(
            apps[kind](),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def main(argv: list[str]) -> None:
    """``--counters FILE pesa ARGS...`` or ``--counters FILE bare KIND [--port N] [--record F]``."""
    if len(argv) < 3 or argv[0] != "--counters":
        raise SystemExit(__doc__)
    _attach_counters(argv[1])
    what, rest = argv[2], argv[3:]
    if what == "pesa":
        from pesa.cli import main as pesa_main

        sys.argv = ["pesa", *rest]
        pesa_main()
    elif what == "bare":
        kind = rest[0] if rest else ""
        options = dict(zip(rest[1::2], rest[2::2], strict=False))
        _serve_bare(
            kind,
            options.get("--host", "127.0.0.1"),
            int(options.get("--port", "0")),
            options.get("--record"),
        )
    else:
        raise SystemExit(f"unknown server {what!r}: expected 'pesa' or 'bare'")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
