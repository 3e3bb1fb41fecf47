"""What stands between the network and the gateway's routes: limits checked before any work.

Issue 8 found that an unauthenticated 100 MB ``POST /v1/payments`` was read and parsed
before its 401 (FastAPI reads and decodes a body before it runs a route's dependencies),
and that 1,100 never-finished requests starved callbacks. So:

- :class:`RequestGuard`, a plain ASGI middleware, answers 401 for a protected path without
  the API key **before anything reads the body**, answers 413 for a declared
  ``Content-Length`` over the cap at once, and stops a body that grows past the cap while
  it streams in. Both close the connection, so the rest of a huge upload is not read.
- :func:`bounded_h11` gives uvicorn an HTTP/1.1 protocol with a read deadline: a client has
  ``read_timeout`` seconds to send a complete request (headers and body), counted from
  when it connected or its previous response ended. uvicorn's own keep-alive timer starts
  only after a first response and is reset by every byte, so a connection that never
  finishes its request (slow-loris) would otherwise be held for ever.
- :func:`server_config` sets those with uvicorn's bounds (``limit_concurrency``, the
  keep-alive timeout, the h11 header-size limit), and :func:`raise_open_file_limit` lifts
  the process's soft file-descriptor limit so that idle connections cannot exhaust it
  (with the common soft limit of 1,024, about a thousand idle connections stopped the
  gateway from accepting any other: measured in the issue-8 tests).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import h11
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from pesa._logging import get_logger
from pesa.config import Settings
from pesa.gateway._trust import tokens_match

__all__ = [
    "CALLBACK_PREFIX",
    "PROTECTED_PREFIXES",
    "RequestGuard",
    "bounded_h11",
    "raise_open_file_limit",
    "server_config",
]

log = get_logger("pesa.gateway")

CALLBACK_PREFIX: Final = "/callbacks/"
"""Daraja's routes: capped by the callback route itself (it answers in Daraja's shape)."""

PROTECTED_PREFIXES: Final = ("/v1/", "/metrics", "/emulator/__emulator__")
"""Paths that need the API key when one is set (the REST API, metrics, and the control API
of an emulator mounted in ``pesa serve``, whose records hold the callback token and full
phone numbers)."""

# The largest request head (request line and headers) h11 buffers: no real client of the
# gateway comes near it.
MAX_HEADER_BYTES: Final = 16 * 1024


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope.get("headers", [])}


async def _answer(send: Send, status: int, body: dict[str, Any], **extra: str) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # The request's body (if any) is not read: the connection cannot carry another.
        (b"connection", b"close"),
        *((k.lower().encode(), v.encode()) for k, v in extra.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _error(type_: str, message: str, rule: str | None = None) -> dict[str, Any]:
    # The REST API's error shape (pesa.gateway._api).
    return {"error": {"type": type_, "message": message, "field": None, "rule": rule}}


class RequestGuard:
    """ASGI middleware: the API key, then the body cap, before any route reads a byte.

    Args:
        app: the application to guard.
        api_key: the bearer key paths under :data:`PROTECTED_PREFIXES` need (``None``:
            open, as in the emulator without ``PESA_API_KEY``).
        max_body: the largest request body, in bytes, outside the callback route.
        protected: path prefixes that need the key.
        larger: exact paths allowed a larger body than ``max_body`` (a payout batch),
            still behind the key.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: str | None,
        max_body: int,
        protected: Sequence[str] = PROTECTED_PREFIXES,
        larger: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body
        self.protected = tuple(protected)
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CALLBACK_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.api_key is not None and scope["path"].startswith(self.protected):
            problem = self._key_problem(headers.get(b"authorization"))
            if problem is not None:
                await _answer(
                    send,
                    401,
                    _error("authentication_error", problem),
                    **{"WWW-Authenticate": "Bearer"},
                )
                return
        cap = self.larger.get(scope["path"], self.max_body)
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await self._too_large(send, cap)
            return
        await self._call_capped(scope, receive, send, cap)

    def _key_problem(self, header: bytes | None) -> str | None:
        assert self.api_key is not None
        if header is None:
            return "missing bearer API key"
        scheme, _, given = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not tokens_match(given.strip(), self.api_key):
            return "invalid API key"
        return None

    async def _too_large(self, send: Send, cap: int) -> None:
        rule = f"the body must be at most {cap} bytes"
        await _answer(send, 413, _error("payload_too_large", rule, rule))

    async def _call_capped(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        # A body without Content-Length (chunked) is counted as it arrives; past the cap the
        # client gets 413 and the route sees a disconnect, so it stops reading.
        received = 0
        refused = False
        started = False

        async def capped_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    refused = True
                    if not started:
                        await self._too_large(send, cap)
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # we answered already; the route's own answer goes nowhere
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, tracked_send)
        except Exception:
            if not refused:
                raise
            # The route failed on the disconnect we gave it; the client has its 413.


def bounded_h11(read_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on receiving each request.

    The deadline (``read_timeout`` seconds) starts when the connection opens or its
    previous response ends, and is met when the request's body is complete. A client that
    misses it (sending nothing, or a byte at a time) is disconnected, so idle and slow
    connections hold no file descriptor and no task for longer than that.
    """

    class BoundedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn narrows the type
            super().connection_made(transport)
            self._watch()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_watch()
            super().connection_lost(exc)

        def _watch(self) -> None:
            # IDLE: the request head is not complete; SEND_BODY: the body is not.
            waiting = self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
            if not waiting or self.transport.is_closing():
                self._stop_watch()
            elif self._deadline is None:
                self._deadline = self.loop.call_later(read_timeout, self._expired)

        def _stop_watch(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            waiting = self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
            if waiting and not self.transport.is_closing():
                self.transport.close()

    return BoundedH11Protocol


def server_config(app: ASGIApp, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of a gateway: its bounds, then ``options``."""
    values: dict[str, Any] = {
        "lifespan": "on",
        "http": bounded_h11(settings.read_timeout),
        # Past this many connections (idle ones included) or requests in flight, uvicorn
        # answers new requests 503 at once instead of queueing them.
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        # uvicorn would believe X-Forwarded-For from loopback and rewrite the client address
        # before the callback route sees it; proxy trust is PESA_TRUSTED_PROXIES'.
        "proxy_headers": False,
        "server_header": False,
    }
    values.update(options)
    return uvicorn.Config(app, **values)


def raise_open_file_limit(wanted: int) -> int | None:
    """Raise this process's soft open-file limit to ``wanted`` (at most the hard limit).

    Every connection holds a file descriptor; with the common soft limit of 1,024 a
    thousand idle connections leave none for Daraja's callbacks.

    Returns:
        The soft limit now in force, or ``None`` where the platform has no such limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:  # pragma: no cover - refused by the system
            log.warning("could not raise the open-file limit to %d: %s", target, err)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        log.warning(
            "the open-file limit is %d, below the %d that PESA_MAX_CONNECTIONS needs: "
            "raise it (ulimit -n) or lower PESA_MAX_CONNECTIONS",
            soft,
            wanted,
        )
    return int(soft)
