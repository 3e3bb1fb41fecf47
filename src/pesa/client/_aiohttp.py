"""An httpx transport over aiohttp: AsyncDaraja's faster connection pool (``pesa[aiohttp]``).

httpx's own async pool (httpcore) spends several times the CPU of its threaded pool per
request under concurrency; aiohttp's pool does not. :class:`AiohttpTransport` lets
:class:`pesa.AsyncDaraja` keep httpx's request/response model (auth flow, timeouts,
``MockTransport`` in tests) while aiohttp moves the bytes. Selected with
``async_http="aiohttp"`` (``PESA_ASYNC_HTTP=aiohttp``); see docs/client.md.

Why our own and not the ``httpx-aiohttp`` package: its exception map turns every
``aiohttp.ClientConnectionError`` into ``httpx.ConnectTimeout``, which includes
``ServerDisconnectedError`` and ``ClientOSError`` raised *after* the request was written.
The client's retry rule reads a connect error as "never sent" and re-sends money-moving
requests only then, so that map would re-send a push whose answer was merely lost. Here
only failures aiohttp raises before the first byte leaves (establishing the connection,
the TLS handshake, waiting for a pooled connection) become connect errors; everything
after is a read, write or protocol error, "maybe sent".

aiohttp runs on asyncio only (not trio). It does not read the proxy environment variables
(``HTTP_PROXY``, ...) and has no write timeout; the read timeout covers the answer.
"""

from __future__ import annotations

import ssl
from typing import Any, Final

import httpx
import yarl

try:
    import aiohttp
except ImportError as err:  # pragma: no cover - exercised without the extra installed
    raise ImportError("PESA_ASYNC_HTTP=aiohttp needs aiohttp: pip install 'pesa[aiohttp]'") from err

__all__ = ["AiohttpTransport", "map_aiohttp_error"]

_DEFAULT_LIMITS: Final = httpx.Limits(max_connections=100, max_keepalive_connections=20)


def map_aiohttp_error(error: BaseException, request: httpx.Request) -> httpx.RequestError:
    """The httpx exception an aiohttp failure means, judged by whether bytes can have left.

    Before sending (retry-safe for every request): ``ClientConnectorError`` (refused, DNS,
    TLS handshake and certificate errors included) -> ``ConnectError``;
    ``ConnectionTimeoutError`` (connecting, or waiting for a pooled connection) ->
    ``ConnectTimeout``; a certificate pin mismatch (raised during the handshake) ->
    ``ConnectError``. Possibly after sending (never re-sent when money moves):
    ``SocketTimeoutError`` and any other timeout -> ``ReadTimeout``;
    ``ServerDisconnectedError`` and bad HTTP -> ``RemoteProtocolError``; ``ClientOSError``
    (a reset mid-request), ``ClientPayloadError`` and anything else -> ``ReadError``.
    """
    message = str(error) or type(error).__name__
    cls: type[httpx.RequestError]
    # Order matters: the connect-side classes subclass the generic ones below them.
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        cls = httpx.ConnectTimeout
    elif isinstance(error, aiohttp.ClientConnectorError | aiohttp.ServerFingerprintMismatch):
        cls = httpx.ConnectError
    elif isinstance(error, aiohttp.ServerTimeoutError | TimeoutError):
        cls = httpx.ReadTimeout
    elif isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        cls = httpx.RemoteProtocolError
    elif isinstance(error, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        cls = httpx.UnsupportedProtocol
    else:
        cls = httpx.ReadError
    mapped = cls(message, request=request)
    mapped.__cause__ = error
    return mapped


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncBaseTransport`` sending through one ``aiohttp.ClientSession``.

    Args:
        verify: ``True`` (the CAs httpx trusts), ``False`` or an ``ssl.SSLContext`` (a CA
            bundle: :func:`pesa.client._base.tls_verify` turns a path into one).
        limits: the pool size (``max_connections``) and keep-alive expiry, as httpx's.

    The session is opened on the first request (aiohttp needs the running event loop)
    and closed by :meth:`aclose` (``AsyncDaraja.aclose``). Bodies are read whole: Daraja's
    answers are small, and the connection returns to the pool at once.
    """

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        limits: httpx.Limits = _DEFAULT_LIMITS,
    ) -> None:
        self._ssl: ssl.SSLContext = (
            verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify)
        )
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}

    def make_connector(self) -> aiohttp.BaseConnector:
        """The session's connection pool: ``aiohttp.TCPConnector`` with our TLS and limits.

        Override to customise it (the tests inject connection failures here).
        """
        limits = self._limits
        return aiohttp.TCPConnector(
            limit=limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=limits.keepalive_expiry if limits.keepalive_expiry else 5.0,
            ssl=self._ssl,
        )

    def _open(self) -> aiohttp.ClientSession:
        self._session = aiohttp.ClientSession(
            connector=self.make_connector(),
            auto_decompress=False,  # httpx decodes Content-Encoding itself
            trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None),
        )
        return self._session

    def _timeout(self, extension: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (extension.get("pool"), extension.get("connect"), extension.get("read"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            pool, connect, read = key
            # aiohttp's ``connect`` bounds getting a connection (pool wait + connecting),
            # ``sock_connect`` the TCP/TLS connect itself, ``sock_read`` each read.
            timeout = aiohttp.ClientTimeout(
                total=None, connect=pool, sock_connect=connect, sock_read=read
            )
            if len(self._timeouts) < 64:
                self._timeouts[key] = timeout
        return timeout

    def _url(self, url: httpx.URL) -> yarl.URL:
        # httpx's URL is already percent-encoded: aiohttp need not parse and quote it again.
        text = str(url)
        parsed = self._urls.get(text)
        if parsed is None:
            parsed = yarl.URL(text, encoded=True)
            if len(self._urls) < 256:  # a handful of Daraja paths; never unbounded
                self._urls[text] = parsed
        return parsed

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        body = await request.aread()
        # Header bytes as sent (httpx's own lookups decode every header on every call).
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            async with session.request(
                request.method,
                self._url(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=False,
                timeout=self._timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"),
            ) as answer:
                content = await answer.read()
                status, raw_headers, reason = answer.status, answer.raw_headers, answer.reason
        except (aiohttp.ClientError, TimeoutError) as err:
            raise map_aiohttp_error(err, request) from err
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("ascii", "replace")
        return httpx.Response(
            status, headers=raw_headers, content=content, request=request, extensions=extensions
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
