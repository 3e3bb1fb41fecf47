"""Typed clients of the pesa gateway's REST API: :class:`GatewayClient` and its async twin.

What both share (URLs, requests, answers, errors, the retry decision) is written once in
:class:`BaseGatewayClient`; only the send/sleep loops exist twice. Creating a payment
always carries an ``Idempotency-Key`` (yours, or one generated per call), so a retried
create can never ask a customer twice.
"""

from __future__ import annotations

import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Self, TypeVar

import anyio
import httpx
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from pesa._constants import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT
from pesa._exceptions import ConfigurationError, GatewayError, TransportError, ValidationError
from pesa._logging import get_logger
from pesa.client._evidence import describe_request
from pesa.client._retry import RetryPolicy, parse_retry_after
from pesa.gateway_client._models import EventOut, EventPage, HealthOut, PaymentOut, PaymentPage

if TYPE_CHECKING:
    from pesa.config import Settings

__all__ = ["AsyncGatewayClient", "BaseGatewayClient", "GatewayClient"]

log = get_logger("pesa.gateway_client")

HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)
TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
ModelT = TypeVar("ModelT", bound=BaseModel)

PaymentStatusName = Literal["created", "pending", "succeeded", "failed", "rejected", "unknown"]
_RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})


class _Call:
    """One REST call, built by the pure half and sent by either loop."""

    __slots__ = ("headers", "json", "method", "params", "path")

    def __init__(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.json = json
        self.headers = headers or {}


class BaseGatewayClient(ABC, Generic[HttpT, TransportT]):
    """Configuration and pure logic shared by :class:`GatewayClient` and its async twin.

    Args:
        base_url: where the gateway is (``http://127.0.0.1:8000``, ``https://pay.example``).
        api_key: the gateway's ``PESA_API_KEY`` (sent as ``Authorization: Bearer``).
        timeout: seconds per HTTP request.
        max_retries: re-sends after a connection failure, a 5xx or a 429. Safe for every
            call: reads are reads, and a create always carries an ``Idempotency-Key``.
        transport: an httpx transport (``httpx.ASGITransport(app=...)`` in tests).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        transport: TransportT | None = None,
    ) -> None:
        url = base_url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"the gateway URL must be an http(s) URL (got {url!r})")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"timeout must be a positive number (got {timeout!r})")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an int >= 0 (got {max_retries!r})")
        self.base_url = url
        self.timeout = float(timeout)
        self.retry_policy = RetryPolicy(max_retries=max_retries)
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http: HttpT = self._open(transport, headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    @abstractmethod
    def _open(self, transport: TransportT | None, headers: dict[str, str]) -> HttpT:
        """The pooled httpx client this client sends through."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        transport: TransportT | None = None,
    ) -> Self:
        """A client of the gateway a :class:`pesa.Settings` describes.

        The URL is ``base_url``, else ``PESA_PUBLIC_URL``, else ``PESA_GATEWAY_HOST`` and
        ``PESA_GATEWAY_PORT``; the key is ``api_key``, else ``PESA_API_KEY``.
        """
        host = settings.gateway_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"  # listening everywhere: reachable on loopback
        url = base_url or settings.public_url or f"http://{host}:{settings.gateway_port}"
        key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
        return cls(
            url,
            api_key=key,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            transport=transport,
        )

    @classmethod
    def from_env(cls, *, base_url: str | None = None, api_key: str | None = None) -> Self:
        """A client configured from ``PESA_*`` variables (see :meth:`from_settings`)."""
        from pesa.config import Settings

        return cls.from_settings(Settings(), base_url=base_url, api_key=api_key)

    # -- requests (pure) ----------------------------------------------------------------

    @staticmethod
    def _create_call(
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        metadata: dict[str, Any] | None,
        idempotency_key: str | None,
        account: str | None = None,
    ) -> _Call:
        body: dict[str, Any] = {
            "phone": phone,
            "amount": amount,
            "account_reference": account_reference,
            "description": description,
        }
        if metadata is not None:
            body["metadata"] = metadata
        if account is not None:
            body["account"] = account
        # Generated once per call, reused by every retry of it: one push at most.
        key = idempotency_key or f"pesa-{secrets.token_urlsafe(18)}"
        return _Call("POST", "/v1/payments", json=body, headers={"Idempotency-Key": key})

    @staticmethod
    def _list_call(
        status: str | None,
        phone: str | None,
        created_from: datetime | None,
        created_to: datetime | None,
        page_size: int,
        cursor: str | None,
    ) -> _Call:
        params = {
            "status": status,
            "phone": phone,
            "created_from": created_from.isoformat() if created_from else None,
            "created_to": created_to.isoformat() if created_to else None,
            "limit": page_size,
            "cursor": cursor,
        }
        return _Call("GET", "/v1/payments", params=params)

    @staticmethod
    def _events_call(after: str | None, payment_id: str | None, page_size: int) -> _Call:
        params = {"after": after, "payment_id": payment_id, "limit": page_size}
        return _Call("GET", "/v1/events", params=params)

    @staticmethod
    def _path_id(payment_id: str) -> str:
        if not payment_id or "/" in payment_id:
            raise ValidationError("payment_id", "must be a payment id such as pay_...", payment_id)
        return payment_id

    def _request(self, call: _Call, timeout: float | None) -> httpx.Request:
        return self._http.build_request(
            call.method,
            call.path,
            params=call.params or None,
            json=call.json,
            headers=call.headers,
            timeout=self.timeout if timeout is None else timeout,
        )

    # -- answers (pure) -----------------------------------------------------------------

    @staticmethod
    def _error(request: httpx.Request, response: httpx.Response) -> GatewayError:
        text = response.content.decode("utf-8", errors="replace")
        detail: dict[str, Any] = {}
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            detail = data["error"]
        message = str(detail.get("message") or f"HTTP {response.status_code}: {text[:200]}")
        return GatewayError(
            response.status_code,
            str(detail.get("type") or "http_error"),
            message,
            field=detail.get("field"),
            rule=detail.get("rule"),
            request=describe_request(request),
            headers=response.headers,
            body=text,
        )

    def _parse(
        self, model: type[ModelT], request: httpx.Request, response: httpx.Response
    ) -> ModelT:
        if not response.is_success:
            raise self._error(request, response)
        try:
            return model.model_validate_json(response.content)
        except PydanticValidationError as err:
            raise GatewayError(
                response.status_code,
                "unexpected_response",
                f"{request.method} {request.url.path}: the answer is not a {model.__name__}",
                request=describe_request(request),
                headers=response.headers,
                body=response.content.decode("utf-8", errors="replace"),
            ) from err

    def _retry_delay(
        self, attempt: int, response: httpx.Response | None, exc: Exception | None
    ) -> float | None:
        """Seconds to wait before re-sending, or ``None`` to give up (pure)."""
        if attempt > self.retry_policy.max_retries:
            return None
        if response is not None:
            if response.status_code not in _RETRY_STATUSES and response.status_code < 500:
                return None
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return self.retry_policy.delay(attempt, retry_after)
        if isinstance(exc, httpx.RequestError):
            return self.retry_policy.delay(attempt)
        return None

    @staticmethod
    def _transport_error(request: httpx.Request, exc: httpx.RequestError) -> TransportError:
        evidence = describe_request(request)
        error = TransportError(
            f"the gateway at {evidence.url} did not answer ({type(exc).__name__}: "
            f"{exc or 'no answer'}); is `pesa serve` running there?",
            operation=f"{request.method} {request.url.path}",
            request=evidence,
        )
        error.__cause__ = exc
        return error


class GatewayClient(BaseGatewayClient[httpx.Client, httpx.BaseTransport]):
    """The synchronous client of the gateway's REST API.

    Example:
        >>> with GatewayClient("http://127.0.0.1:8000", api_key=key) as gateway:
        ...     payment = gateway.create_payment("0708374149", 100, "ORDER42", "Order 42",
        ...                                      idempotency_key="order-42")
        ...     for p in gateway.list_payments(status="succeeded"):
        ...         print(p.id, p.receipt)
    """

    def _open(self, transport: httpx.BaseTransport | None, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=self.timeout, transport=transport, headers=headers
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call, model: type[ModelT], timeout: float | None) -> ModelT:
        attempt = 1
        while True:
            request = self._request(call, timeout)
            response: httpx.Response | None = None
            try:
                response = self._http.send(request)
            except httpx.RequestError as exc:
                delay = self._retry_delay(attempt, None, exc)
                if delay is None:
                    raise self._transport_error(request, exc) from exc
            else:
                delay = self._retry_delay(attempt, response, None)
                if delay is None:
                    return self._parse(model, request, response)
            log.info("retrying %s %s in %.2fs", call.method, call.path, delay)
            time.sleep(delay)
            attempt += 1

    def create_payment(
        self,
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        account: str | None = None,
        timeout: float | None = None,
    ) -> PaymentOut:
        """Ask a customer to pay by STK push (``POST /v1/payments``).

        Pass your own ``idempotency_key`` (an order id): a retry with it, from this process
        or another, returns the same payment and never a second prompt. Without one, a key
        is generated per call so that this call's own retries stay safe. ``account`` names
        the gateway's Daraja account to push on (its default one when omitted).

        Returns:
            The payment: ``pending``, ``rejected`` or ``unknown``, not yet paid.

        Raises:
            GatewayError: the gateway refused (``422`` bad input naming the field, ``409``
                the key was used with other parameters, ``401`` a wrong API key).
            TransportError: the gateway did not answer.
        """
        call = self._create_call(
            phone, amount, account_reference, description, metadata, idempotency_key, account
        )
        return self._send(call, PaymentOut, timeout)

    def health(self, *, timeout: float | None = None) -> HealthOut:
        """The gateway's health and environment (``GET /healthz``, no API key needed)."""
        return self._send(_Call("GET", "/healthz"), HealthOut, timeout)

    def get_payment(self, payment_id: str, *, timeout: float | None = None) -> PaymentOut:
        """Read one payment (``GET /v1/payments/{id}``).

        Raises:
            GatewayError: ``404`` when there is no such payment.
        """
        call = _Call("GET", f"/v1/payments/{self._path_id(payment_id)}")
        return self._send(call, PaymentOut, timeout)

    def refresh_payment(self, payment_id: str, *, timeout: float | None = None) -> PaymentOut:
        """Ask Daraja about a payment now and apply the answer (``POST .../refresh``)."""
        call = _Call("POST", f"/v1/payments/{self._path_id(payment_id)}/refresh")
        return self._send(call, PaymentOut, timeout)

    def list_payments(
        self,
        *,
        status: PaymentStatusName | None = None,
        phone: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> Iterator[PaymentOut]:
        """Every matching payment, newest first (``GET /v1/payments``), page after page.

        Pages are fetched as the iteration reaches them: stop early and no more are read.
        """
        cursor: str | None = None
        while True:
            call = self._list_call(status, phone, created_from, created_to, page_size, cursor)
            page = self._send(call, PaymentPage, timeout)
            yield from page.data
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    def list_events(
        self,
        *,
        after: str | None = None,
        payment_id: str | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> Iterator[EventOut]:
        """Every event after ``after``, oldest first (``GET /v1/events``), page after page.

        The same bodies webhooks deliver. The iteration ends at the end of the log; resume
        later from the last event's cursor with :meth:`events_page`.
        """
        cursor = after
        while True:
            page = self._send(self._events_call(cursor, payment_id, page_size), EventPage, timeout)
            yield from page.data
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    def events_page(
        self,
        *,
        after: str | None = None,
        payment_id: str | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> EventPage:
        """One page of the event log after ``after``: poll it to follow the log.

        ``next_cursor`` is where the next poll resumes (``None`` when nothing came yet:
        keep your previous cursor).
        """
        return self._send(self._events_call(after, payment_id, page_size), EventPage, timeout)


class AsyncGatewayClient(BaseGatewayClient[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """The asynchronous client of the gateway's REST API.

    Example:
        >>> async with AsyncGatewayClient("http://127.0.0.1:8000", api_key=key) as gateway:
        ...     payment = await gateway.create_payment("0708374149", 100, "ORDER42", "Order 42",
        ...                                            idempotency_key="order-42")
        ...     async for p in gateway.list_payments(status="succeeded"):
        ...         print(p.id, p.receipt)
    """

    def _open(
        self, transport: httpx.AsyncBaseTransport | None, headers: dict[str, str]
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=self.timeout, transport=transport, headers=headers
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call, model: type[ModelT], timeout: float | None) -> ModelT:
        attempt = 1
        while True:
            request = self._request(call, timeout)
            response: httpx.Response | None = None
            try:
                response = await self._http.send(request)
            except httpx.RequestError as exc:
                delay = self._retry_delay(attempt, None, exc)
                if delay is None:
                    raise self._transport_error(request, exc) from exc
            else:
                delay = self._retry_delay(attempt, response, None)
                if delay is None:
                    return self._parse(model, request, response)
            log.info("retrying %s %s in %.2fs", call.method, call.path, delay)
            await anyio.sleep(delay)
            attempt += 1

    async def create_payment(
        self,
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        *,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        account: str | None = None,
        timeout: float | None = None,
    ) -> PaymentOut:
        """Ask a customer to pay by STK push (``POST /v1/payments``).

        Pass your own ``idempotency_key`` (an order id): a retry with it, from this process
        or another, returns the same payment and never a second prompt. Without one, a key
        is generated per call so that this call's own retries stay safe. ``account`` names
        the gateway's Daraja account to push on (its default one when omitted).

        Returns:
            The payment: ``pending``, ``rejected`` or ``unknown``, not yet paid.

        Raises:
            GatewayError: the gateway refused (``422`` bad input naming the field, ``409``
                the key was used with other parameters, ``401`` a wrong API key).
            TransportError: the gateway did not answer.
        """
        call = self._create_call(
            phone, amount, account_reference, description, metadata, idempotency_key, account
        )
        return await self._send(call, PaymentOut, timeout)

    async def health(self, *, timeout: float | None = None) -> HealthOut:
        """The gateway's health and environment (``GET /healthz``, no API key needed)."""
        return await self._send(_Call("GET", "/healthz"), HealthOut, timeout)

    async def get_payment(self, payment_id: str, *, timeout: float | None = None) -> PaymentOut:
        """Read one payment (``GET /v1/payments/{id}``).

        Raises:
            GatewayError: ``404`` when there is no such payment.
        """
        call = _Call("GET", f"/v1/payments/{self._path_id(payment_id)}")
        return await self._send(call, PaymentOut, timeout)

    async def refresh_payment(self, payment_id: str, *, timeout: float | None = None) -> PaymentOut:
        """Ask Daraja about a payment now and apply the answer (``POST .../refresh``)."""
        call = _Call("POST", f"/v1/payments/{self._path_id(payment_id)}/refresh")
        return await self._send(call, PaymentOut, timeout)

    async def list_payments(
        self,
        *,
        status: PaymentStatusName | None = None,
        phone: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[PaymentOut]:
        """Every matching payment, newest first (``GET /v1/payments``), page after page.

        Pages are fetched as the iteration reaches them: stop early and no more are read.
        """
        cursor: str | None = None
        while True:
            call = self._list_call(status, phone, created_from, created_to, page_size, cursor)
            page = await self._send(call, PaymentPage, timeout)
            for payment in page.data:
                yield payment
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    async def list_events(
        self,
        *,
        after: str | None = None,
        payment_id: str | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> AsyncIterator[EventOut]:
        """Every event after ``after``, oldest first (``GET /v1/events``), page after page.

        The same bodies webhooks deliver. The iteration ends at the end of the log; resume
        later from the last event's cursor with :meth:`events_page`.
        """
        cursor = after
        while True:
            call = self._events_call(cursor, payment_id, page_size)
            page = await self._send(call, EventPage, timeout)
            for event in page.data:
                yield event
            if not page.next_cursor or not page.data:
                return
            cursor = page.next_cursor

    async def events_page(
        self,
        *,
        after: str | None = None,
        payment_id: str | None = None,
        page_size: int = 100,
        timeout: float | None = None,
    ) -> EventPage:
        """One page of the event log after ``after``: poll it to follow the log.

        ``next_cursor`` is where the next poll resumes (``None`` when nothing came yet:
        keep your previous cursor).
        """
        call = self._events_call(after, payment_id, page_size)
        return await self._send(call, EventPage, timeout)
