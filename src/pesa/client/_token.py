"""The Daraja access token: cached per credential, fetched single-flight, shared through a store.

:class:`DarajaAuth` is an :class:`httpx.Auth`: it adds ``Authorization: Bearer ...``,
fetches a token when none is valid (one fetch at a time, per client, sync or async), and
after an invalid-token answer (``404.001.03``, ``401.002.01``, ``400.003.01``, bare 401)
fetches a fresh token and re-sends the request exactly once. A refused token means the
request never reached M-Pesa, so re-sending even a money-moving request is safe.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import anyio
import httpx
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pesa._constants import DEFAULT_TOKEN_FETCH_LEASE, DEFAULT_TOKEN_MARGIN
from pesa._exceptions import AuthenticationError, DarajaError
from pesa._logging import get_logger
from pesa.client._evidence import describe_request
from pesa.daraja._errors import error_from_response, is_invalid_token
from pesa.daraja._models import TokenResponse
from pesa.daraja._operations import OAUTH_PATH
from pesa.daraja._time import Clock

__all__ = [
    "AccessToken",
    "DarajaAuth",
    "FileTokenStore",
    "InMemoryTokenStore",
    "SharedTokenStore",
    "StoredToken",
    "TokenFetchError",
    "TokenStore",
    "token_key",
]

log = get_logger("pesa.client")


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A Daraja access token and the moment pesa stops using it (already minus the margin)."""

    value: str = field(repr=False)
    expires_at: datetime

    def valid_at(self, now: datetime) -> bool:
        """The token may still be used at ``now``."""
        return now < self.expires_at


@runtime_checkable
class TokenStore(Protocol):
    """Where tokens are cached, keyed per credential; share one store between processes.

    Implementations must be thread-safe and fast (they are called on every request).
    """

    def get(self, key: str) -> AccessToken | None:
        """The cached token for ``key``, or ``None``."""
        ...

    def set(self, key: str, token: AccessToken) -> None:
        """Cache ``token`` for ``key``."""
        ...

    def discard(self, key: str, value: str) -> None:
        """Forget the token for ``key`` if it is still ``value`` (it was refused)."""
        ...


@dataclass(frozen=True, slots=True)
class StoredToken:
    """A token as a shared store keeps it: sealed, named by a fingerprint.

    Attributes:
        sealed: the token encrypted (AES-GCM) with a key derived from the credential's
            consumer key and secret: a reader of the store alone cannot use it.
        fingerprint: a hash naming the token (to tell "the token that was refused").
        expires_at: when pesa stops using it.
    """

    sealed: str = field(repr=False)
    fingerprint: str
    expires_at: datetime


@runtime_checkable
class SharedTokenStore(Protocol):
    """A :class:`TokenStore` several processes share, with a fetch lease (async clients).

    Its :class:`TokenStore` methods are this process's fast cache (read on every
    request). When that has no valid token, :class:`DarajaAuth` (async) reads the shared
    copy with :meth:`load`; if that is missing, expired or the one just refused, it asks
    :meth:`claim` for the lease: the one process granted it fetches the token and shares it
    with :meth:`save`, the others poll :meth:`load` until it appears (or the lease lapses
    and one of them claims it). So N processes fetch one token per lifetime, per credential.
    """

    def get(self, key: str) -> AccessToken | None:
        """This process's cached token for ``key``."""
        ...

    def set(self, key: str, token: AccessToken) -> None:
        """Cache ``token`` in this process."""
        ...

    def discard(self, key: str, value: str) -> None:
        """Forget this process's token for ``key`` if it is still ``value``."""
        ...

    async def load(self, key: str) -> StoredToken | None:
        """The shared token of ``key``, or ``None``."""
        ...

    async def claim(self, key: str, *, now: datetime, lease: float, refused: str | None) -> bool:
        """Take the fetch lease of ``key`` for ``lease`` seconds, if nobody holds it and
        the shared token is missing, expired at ``now`` or has fingerprint ``refused``."""
        ...

    async def save(self, key: str, token: StoredToken) -> None:
        """Share ``token`` and give up the fetch lease."""
        ...

    async def release(self, key: str) -> None:
        """Give up the fetch lease without a token (the fetch failed)."""
        ...


class InMemoryTokenStore:
    """The default store: one process, thread-safe."""

    def __init__(self) -> None:
        self._tokens: dict[str, AccessToken] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> AccessToken | None:
        """The cached token for ``key``, or ``None``."""
        with self._lock:
            return self._tokens.get(key)

    def set(self, key: str, token: AccessToken) -> None:
        """Cache ``token`` for ``key``."""
        with self._lock:
            self._tokens[key] = token

    def discard(self, key: str, value: str) -> None:
        """Forget the token for ``key`` if it is still ``value``."""
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and current.value == value:
                del self._tokens[key]


class FileTokenStore:
    """Tokens in a JSON file (mode 0600), so several processes on one host share one token.

    Writes are atomic (write to a temporary file, then rename), so a reader never sees a
    half-written file. Two processes may still both fetch a token at the same moment; the
    last one written wins, and the other's token stays valid until Daraja refuses it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pesa-token-")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> AccessToken | None:
        """The cached token for ``key``, or ``None`` (also on an unreadable file)."""
        with self._lock:
            entry = self._read().get(key)
        if not isinstance(entry, dict):
            return None
        try:
            return AccessToken(entry["value"], datetime.fromisoformat(entry["expires_at"]))
        except (KeyError, TypeError, ValueError):
            return None

    def set(self, key: str, token: AccessToken) -> None:
        """Cache ``token`` for ``key``."""
        with self._lock:
            data = self._read()
            data[key] = {"value": token.value, "expires_at": token.expires_at.isoformat()}
            self._write(data)

    def discard(self, key: str, value: str) -> None:
        """Forget the token for ``key`` if it is still ``value``."""
        with self._lock:
            data = self._read()
            if data.get(key, {}).get("value") == value:
                del data[key]
                self._write(data)


def token_key(base_url: str, consumer_key: str) -> str:
    """The store key of a credential: a hash of the base URL and consumer key (no secret)."""
    digest = hashlib.sha256(f"{base_url}\0{consumer_key}".encode()).hexdigest()
    return f"pesa:token:{digest[:32]}"


def fingerprint(value: str) -> str:
    """A name for a token that does not reveal it (a SHA-256 prefix)."""
    return hashlib.sha256(f"pesa-token\0{value}".encode()).hexdigest()[:32]


class _Seal:
    """Encrypts tokens for a shared store with a key only the credential's holders derive."""

    def __init__(self, consumer_key: str, consumer_secret: str, store_key: str) -> None:
        material = f"pesa-token-seal\0{consumer_key}\0{consumer_secret}".encode()
        self._aead = AESGCM(hashlib.sha256(material).digest())
        self._aad = store_key.encode()

    def seal(self, token: AccessToken) -> StoredToken:
        nonce = secrets.token_bytes(12)
        box = self._aead.encrypt(nonce, token.value.encode(), self._aad)
        sealed = base64.b64encode(nonce + box).decode()
        return StoredToken(sealed, fingerprint(token.value), token.expires_at)

    def open(self, stored: StoredToken) -> AccessToken | None:
        """The token, or ``None`` if it was sealed with another secret (or damaged)."""
        try:
            raw = base64.b64decode(stored.sealed, validate=True)
            value = self._aead.decrypt(raw[:12], raw[12:], self._aad).decode()
        except (InvalidTag, ValueError):
            return None
        return AccessToken(value, stored.expires_at)


class TokenFetchError(Exception):
    """OAuth answered with an error; the request the token was for was never sent.

    Internal control flow, never raised to callers: the client catches it inside its
    send loop and raises ``error`` (a :class:`pesa.DarajaError`) or retries.

    Attributes:
        error: Daraja's answer as a :class:`pesa.DarajaError`.
    """

    def __init__(self, error: DarajaError) -> None:
        self.error = error
        super().__init__(str(error))


class DarajaAuth(httpx.Auth):
    """Bearer-token authentication for Daraja as an ``httpx.Auth``.

    One instance per client. Tokens are cached in ``store`` under :func:`token_key`.
    """

    requires_response_body = True

    def __init__(
        self,
        consumer_key: str,
        consumer_secret: str,
        *,
        base_url: str,
        clock: Clock,
        store: TokenStore,
        margin: float = DEFAULT_TOKEN_MARGIN,
        lease: float = DEFAULT_TOKEN_FETCH_LEASE,
    ) -> None:
        self._basic = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self._url = f"{base_url.rstrip('/')}{OAUTH_PATH}"
        self._clock = clock
        self._store = store
        self._margin = margin
        self.key = token_key(base_url, consumer_key)
        self._shared = store if isinstance(store, SharedTokenStore) else None
        self._seal = _Seal(consumer_key, consumer_secret, self.key)
        self._lease = lease
        self._thread_lock = threading.Lock()
        self._async_lock: anyio.Lock | None = None
        self.fetches = 0
        """How many tokens this instance fetched (for metrics and tests)."""

    def __repr__(self) -> str:
        return f"DarajaAuth(key={self.key!r})"

    # -- pure parts ---------------------------------------------------------------------

    def cached(self) -> AccessToken | None:
        """The stored token if it is still valid now."""
        token = self._store.get(self.key)
        if token is not None and token.valid_at(self._clock.now()):
            return token
        return None

    def token_request(self) -> httpx.Request:
        """The OAuth request (``GET /oauth/v1/generate?grant_type=client_credentials``)."""
        return httpx.Request(
            "GET",
            self._url,
            params={"grant_type": "client_credentials"},
            headers={"Authorization": f"Basic {self._basic}", "Accept": "application/json"},
        )

    def accept(self, response: httpx.Response) -> AccessToken:
        """Read an OAuth answer, store the token and return it.

        Raises:
            TokenFetchError: OAuth answered with an error, or not with a token.
        """
        content = response.content
        if response.status_code != 200:
            error = error_from_response(
                response.status_code, content, oauth=True, headers=response.headers
            )
            error.operation = "token"
            error.request = describe_request(response.request)
            raise TokenFetchError(error)
        try:
            parsed = TokenResponse.model_validate_json(content)
        except ValueError as err:
            # The body may hold a token: it stays out of the error.
            raise TokenFetchError(
                AuthenticationError(
                    response.status_code,
                    None,
                    "OAuth answered without a usable access_token and expires_in",
                    headers=response.headers,
                    operation="token",
                    request=describe_request(response.request),
                )
            ) from err
        lifetime = float(parsed.expires_in)
        margin = min(self._margin, lifetime / 2)
        token = AccessToken(
            parsed.access_token, self._clock.now() + timedelta(seconds=lifetime - margin)
        )
        self._store.set(self.key, token)
        self.fetches += 1
        log.debug("fetched a Daraja access token, valid for %ss", parsed.expires_in)
        return token

    def _refused(self, response: httpx.Response) -> bool:
        if response.is_success:
            return False
        return is_invalid_token(error_from_response(response.status_code, response.content))

    def _stale(self, refused: AccessToken | None) -> AccessToken | None:
        """Under the lock: a valid token other than ``refused``, after dropping ``refused``."""
        if refused is not None:
            self._store.discard(self.key, refused.value)
        token = self.cached()
        if token is not None and (refused is None or token.value != refused.value):
            return token
        return None

    @staticmethod
    def _authorize(request: httpx.Request, token: AccessToken) -> None:
        request.headers["Authorization"] = f"Bearer {token.value}"

    # -- sync ---------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Authorise ``request``, fetching a token if needed; re-send once if it is refused."""
        token = self.cached()
        if token is None:
            with self._thread_lock:
                token = self._stale(None)
                if token is None:
                    answer = yield self.token_request()
                    answer.read()
                    token = self.accept(answer)
        self._authorize(request, token)
        response = yield request
        response.read()
        if not self._refused(response):
            return
        log.info("access token refused, fetching a new one and re-sending once")
        with self._thread_lock:
            fresh = self._stale(token)
            if fresh is None:
                answer = yield self.token_request()
                answer.read()
                fresh = self.accept(answer)
        self._authorize(request, fresh)
        yield request

    def sync_token(self, client: httpx.Client, *, refresh: bool = False) -> AccessToken:
        """Return a valid token, fetching one through ``client`` if needed (single-flight)."""
        with self._thread_lock:
            if refresh:
                current = self._store.get(self.key)
                token = self._stale(current) if current is not None else None
            else:
                token = self.cached()
            if token is not None:
                return token
            return self.accept(client.send(self.token_request()))

    # -- async --------------------------------------------------------------------------

    def _lock(self) -> anyio.Lock:
        # Created on first use, inside the event loop that will use it.
        if self._async_lock is None:
            self._async_lock = anyio.Lock()
        return self._async_lock

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Authorise ``request``, fetching a token if needed; re-send once if it is refused."""
        token = self.cached()
        if token is None:
            async with self._lock():
                token = await self._async_stale(None)
                if token is None:
                    answer = yield self.token_request()
                    await answer.aread()
                    token = await self._async_accept(answer)
        self._authorize(request, token)
        response = yield request
        await response.aread()
        if not self._refused(response):
            return
        log.info("access token refused, fetching a new one and re-sending once")
        async with self._lock():
            fresh = await self._async_stale(token)
            if fresh is None:
                answer = yield self.token_request()
                await answer.aread()
                fresh = await self._async_accept(answer)
        self._authorize(request, fresh)
        yield request

    async def _async_stale(self, refused: AccessToken | None) -> AccessToken | None:
        """Under the lock: a valid token other than ``refused``; ``None`` means fetch one.

        With a :class:`SharedTokenStore`, the shared token if it is usable, else ``None``
        once this process holds the fetch lease (waiting while another process fetches).
        """
        token = self._stale(refused)
        shared = self._shared
        if token is not None or shared is None:
            return token
        try:
            return await self._shared_token(shared, refused)
        except Exception as err:  # the store is down: this process fetches its own token
            log.warning(
                "the shared token store failed (%s); fetching a token in this process",
                type(err).__name__,
            )
            return None

    async def _shared_token(
        self, shared: SharedTokenStore, refused: AccessToken | None
    ) -> AccessToken | None:
        refused_print = None if refused is None else fingerprint(refused.value)
        delay = 0.02
        while True:
            now = self._clock.now()
            stored = await shared.load(self.key)
            unusable = refused_print
            if (
                stored is not None
                and stored.expires_at > now
                and stored.fingerprint != refused_print
            ):
                token = self._seal.open(stored)
                if token is not None:
                    self._store.set(self.key, token)
                    return token
                # Sealed with another secret (rotated): as good as refused.
                unusable = stored.fingerprint
            if await shared.claim(self.key, now=now, lease=self._lease, refused=unusable):
                return None
            # Another process is fetching: its token appears shortly (or its lease lapses).
            await anyio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _async_accept(self, response: httpx.Response) -> AccessToken:
        """:meth:`accept`, then share the token (or give up the lease if there is none)."""
        shared = self._shared
        try:
            token = self.accept(response)
        except BaseException:
            if shared is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await shared.release(self.key)
                    except Exception:  # the lease lapses by itself
                        log.warning("could not release the shared token's fetch lease")
            raise
        if shared is not None:
            started = time.monotonic()
            try:
                await shared.save(self.key, self._seal.seal(token))
            except Exception as err:  # the token works; the others fetch their own
                log.warning("could not share the new access token (%s)", type(err).__name__)
            else:
                log.debug("shared the new access token in %.3fs", time.monotonic() - started)
        return token

    async def async_token(self, client: httpx.AsyncClient, *, refresh: bool = False) -> AccessToken:
        """Return a valid token, fetching one through ``client`` if needed (single-flight)."""
        async with self._lock():
            if refresh:
                current = self._store.get(self.key)
                token = await self._async_stale(current)
            else:
                token = self.cached() or await self._async_stale(None)
            if token is not None:
                return token
            return await self._async_accept(await client.send(self.token_request()))
