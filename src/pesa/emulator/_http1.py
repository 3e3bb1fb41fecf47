"""A lean keep-alive HTTP/1.1 client for callback deliveries.

Callbacks are small JSON POSTs to a few receivers, sent at load-test rates: a general client
(httpx) spends over a millisecond of CPU on each, which would make the emulator the
bottleneck of the load tests it exists for. This client does one thing: POST bytes over
pooled asyncio streams (TLS included) and read the status and body back, with a timeout.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["DeliveryError", "Http1Pool"]

_MAX_HEADER = 64 * 1024
_MAX_BODY = 1024 * 1024
_Key = tuple[str, str, int]


class DeliveryError(Exception):
    """A callback could not be delivered; ``kind`` names the failure like httpx does."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"{kind}: {detail}" if detail else kind)


@dataclass(frozen=True)
class _Target:
    key: _Key
    host_header: str
    path: str


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Http1Pool:
    """POST JSON bytes over pooled HTTP/1.1 connections (``http`` and ``https``)."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        max_idle_per_host: int = 64,
        user_agent: str = "pesa-emulator",
    ) -> None:
        if isinstance(verify, ssl.SSLContext):
            self._ssl: ssl.SSLContext = verify
        else:
            self._ssl = ssl.create_default_context()
            if not verify:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        self._idle: defaultdict[_Key, list[_Conn]] = defaultdict(list)
        self._targets: dict[str, _Target] = {}
        self._max_idle = max_idle_per_host
        self._user_agent = user_agent

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise DeliveryError("UnsupportedProtocol", url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            host = parts.hostname
            shown = f"[{host}]" if ":" in host else host
            default = port == (443 if parts.scheme == "https" else 80)
            path = parts.path or "/"
            if parts.query:
                path = f"{path}?{parts.query}"
            target = _Target(
                (parts.scheme, host, port), shown if default else f"{shown}:{port}", path
            )
            if len(self._targets) < 10_000:
                self._targets[url] = target
        return target

    async def _connect(self, key: _Key) -> _Conn:
        scheme, host, port = key
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=self._ssl if scheme == "https" else None,
                server_hostname=host if scheme == "https" else None,
                limit=_MAX_HEADER,
            )
        except ssl.SSLError as err:
            raise DeliveryError("ConnectError", f"TLS: {err.reason or err}") from err
        except OSError as err:
            raise DeliveryError("ConnectError", err.strerror or str(err)) from err
        return _Conn(reader, writer)

    async def post(self, url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
        """POST ``body`` (JSON) to ``url``; return the status code and response body."""
        target = self._target(url)
        head = (
            f"POST {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"
            f"User-Agent: {self._user_agent}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        try:
            async with asyncio.timeout(timeout):
                idle = self._idle[target.key]
                while idle:
                    conn = idle.pop()
                    try:
                        return await self._exchange(target.key, conn, head + body)
                    except _StaleConnection:
                        continue  # the receiver closed an idle connection: use another
                conn = await self._connect(target.key)
                try:
                    return await self._exchange(target.key, conn, head + body)
                except _StaleConnection as err:
                    raise DeliveryError("RemoteProtocolError", "connection closed") from err
        except TimeoutError as err:
            raise DeliveryError("Timeout", f"no answer within {timeout} s") from err

    async def _exchange(self, key: _Key, conn: _Conn, request: bytes) -> tuple[int, bytes]:
        reused_ok = True
        try:
            conn.writer.write(request)
            await conn.writer.drain()
            try:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as err:
                if not err.partial:
                    raise _StaleConnection from err
                raise DeliveryError("RemoteProtocolError", "incomplete response") from err
            status, length, chunked, close = _parse_head(raw)
            if chunked:
                data = await _read_chunked(conn.reader)
            elif length is not None:
                if length > _MAX_BODY:
                    raise DeliveryError("RemoteProtocolError", "response body too large")
                data = await conn.reader.readexactly(length)
            else:
                data = await conn.reader.read(_MAX_BODY)
                close = True
            reused_ok = not close
            return status, data
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as err:
            reused_ok = False
            if isinstance(err, ConnectionResetError | BrokenPipeError):
                raise _StaleConnection from err
            raise DeliveryError("RemoteProtocolError", str(err) or type(err).__name__) from err
        except BaseException:
            reused_ok = False
            raise
        finally:
            if reused_ok and len(self._idle[key]) < self._max_idle:
                self._idle[key].append(conn)
            else:
                conn.writer.close()

    async def aclose(self) -> None:
        """Close every idle connection."""
        for conns in self._idle.values():
            for conn in conns:
                conn.writer.close()
        self._idle.clear()


class _StaleConnection(Exception):
    """The peer closed the connection before answering (safe to try a fresh one)."""


def _parse_head(raw: bytes) -> tuple[int, int | None, bool, bool]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise DeliveryError("RemoteProtocolError", f"bad status line {lines[0][:80]!r}")
    length: int | None = None
    chunked = False
    close = parts[0] == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        if name == "content-length" and value.isdigit():
            length = int(value)
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            lowered = value.lower()
            close = "close" in lowered or (close and "keep-alive" not in lowered)
    return int(parts[1]), length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as err:
            raise DeliveryError("RemoteProtocolError", "bad chunk size") from err
        if size == 0:
            # Trailers (rare) end with an empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > _MAX_BODY:
            raise DeliveryError("RemoteProtocolError", "response body too large")
        body += await reader.readexactly(size)
        await reader.readexactly(2)
