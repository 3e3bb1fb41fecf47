"""The request pipeline in front of every Daraja path, and the request log.

Before a product's handler sees a request, the pipeline answers as Daraja's gateway would:
injected faults, the wrong verb, a missing or invalid token, the rate limit, a body that is
not a JSON object. Every request is recorded with what it was answered (secrets redacted).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import count
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from pesa._logging import is_secret_key, redact_secrets
from pesa.emulator import _daraja as daraja
from pesa.emulator._core import Core
from pesa.emulator._faults import FaultBook, RateLimiter, fault_refusal
from pesa.emulator._models import ReceivedRequest
from pesa.emulator._oauth import OAUTH_PATH, OAuth
from pesa.emulator._product import DarajaRoute
from pesa.emulator._validate import Refusal

__all__ = ["Pipeline", "redact_json", "redact_text"]

_JSON = "application/json"
_REDACTED = "[redacted]"
# What Apigee (Daraja's gateway) answers when the backend answers too late: the request was
# processed, its answer is lost (the body is Apigee's standard fault; Daraja's is unverified).
_GATEWAY_TIMEOUT = json.dumps(
    {
        "fault": {
            "faultstring": "Gateway Timeout",
            "detail": {"errorcode": "messaging.adaptors.http.flow.GatewayTimeout"},
        }
    },
    separators=(",", ":"),
).encode()
# Field names seen, and whether each is a secret: Daraja bodies repeat the same dozen keys.
_SECRET_KEY_CACHE: dict[str, bool] = {}
_CONTAINERS = (dict, list)  # a prebuilt tuple: the cheapest isinstance on the hot path

Endpoint = Callable[[Request], Awaitable[Response]]


class Pipeline:
    """Daraja's gateway behaviour around the products' handlers, and the request log."""

    def __init__(self, core: Core, faults: FaultBook, rate: RateLimiter, oauth: OAuth) -> None:
        self._core = core
        self._faults = faults
        self._rate = rate
        self._oauth = oauth
        self._requests: deque[tuple[int, float, str, str, Any, int, Any, bool]] = deque(
            maxlen=core.config.max_records
        )
        self._request_ids = count(1)

    # -- the request log ----------------------------------------------------------------------

    def requests(self, path: str | None = None) -> list[ReceivedRequest]:
        """Daraja requests received (oldest first), optionally only those under ``path``."""
        return [
            ReceivedRequest(
                id=rid,
                received_at=datetime.fromtimestamp(at, UTC),
                method=method,
                path=where,
                body=body,
                status_code=status,
                response=response,
                answer_lost=lost,
            )
            for rid, at, method, where, body, status, response, lost in self._requests
            if path is None or where.startswith(path)
        ]

    def clear(self) -> None:
        self._requests.clear()

    # -- answering ----------------------------------------------------------------------------

    def respond(
        self,
        request: Request,
        path: str,
        body: Any,
        status: int,
        payload: Any,
        *,
        secret_payload: bool = False,
        lost: bool = False,
    ) -> Response:
        """Record the request and answer ``payload`` (JSON, plain text, or an empty body).

        The record never holds a secret: the body's secret fields (Password,
        SecurityCredential, ...: any :func:`~pesa._logging.is_secret_key`) are redacted in
        JSON, form-encoded, XML or multipart bodies alike, and so is ``payload`` when it
        carries one (``secret_payload``: an access token). A ``lost`` answer is recorded as
        given but the caller gets a gateway timeout instead.
        """
        if isinstance(body, _CONTAINERS):
            logged = redact_json(body)
        elif isinstance(body, str):
            logged = redact_text(body)
        else:
            logged = body
        answer = redact_json(payload) if secret_payload else payload
        # A plain tuple on the hot path; ReceivedRequest models are built when listed.
        self._requests.append(
            (
                next(self._request_ids),
                time.time(),
                request.method,
                path,
                logged,
                status,
                answer,
                lost,
            )
        )
        if lost:
            return Response(_GATEWAY_TIMEOUT, status_code=504, media_type=_JSON)
        if payload is None:
            return Response(b"", status_code=status)
        if isinstance(payload, str):
            return Response(payload, status_code=status, media_type="text/plain")
        return Response(
            json.dumps(payload, separators=(",", ":")).encode(),
            status_code=status,
            media_type=_JSON,
        )

    def error(self, refusal: Refusal) -> dict[str, Any]:
        """Daraja's error envelope for a refusal."""
        return {
            "requestId": refusal.request_id or self._core.ids.request_id(),
            "errorCode": refusal.error_code,
            "errorMessage": refusal.error_message,
        }

    async def _latency(self, extra: float) -> None:
        delay = self._core.config.latency_ms / 1000 + extra
        if delay > 0:
            await asyncio.sleep(delay)

    def _wrong_method(self, method: str) -> Refusal:
        if self._core.config.wrong_method_error == "404.001.04":
            return Refusal(daraja.INVALID_AUTH_HEADER)
        return Refusal(daraja.method_not_allowed(method))

    # -- endpoints ----------------------------------------------------------------------------

    def endpoint(self, route: DarajaRoute) -> Endpoint:
        """The ASGI endpoint serving one product route behind the gateway checks."""
        path, handler, token_error = route.path, route.handler, route.token_error
        faults, rate, oauth = self._faults, self._rate, self._oauth

        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            body: Any = None
            extra = 0.0
            lost = False
            try:
                fault, extra = faults.draw(path)
                if fault is not None and fault.kind == "lost_answer":
                    lost = True
                elif fault is not None:
                    refused = fault_refusal(fault, token_error)
                    if isinstance(refused, str):
                        await self._latency(extra)
                        return self.respond(request, path, None, 503, refused)
                    raise refused
                if request.method != "POST":
                    raise self._wrong_method(request.method)
                app = oauth.app_for(request.headers.get("authorization", ""))
                if app is None:
                    raise Refusal(token_error)
                if not rate.take(app):
                    raise Refusal(daraja.SPIKE_ARREST)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                    # Form-encoded bodies famously read as a missing BusinessShortCode.
                    raise Refusal(daraja.bad_request("BusinessShortCode")) from None
                if not isinstance(body, dict):
                    raise Refusal(daraja.INVALID_PAYLOAD)
                status, payload = handler(body, app)
            except Refusal as refusal:
                status, payload = refusal.status_code, self.error(refusal)
            await self._latency(extra)
            return self.respond(request, path, body, status, payload, lost=lost)

        return endpoint

    async def oauth_endpoint(self, request: Request) -> Response:
        """``GET /oauth/v1/generate``: faults and the verb first, then the credentials."""
        path = OAUTH_PATH
        status: int
        payload: Any
        fault, extra = self._faults.draw(path, oauth=True)
        lost = fault is not None and fault.kind == "lost_answer"
        try:
            if fault is not None and not lost:
                refused = fault_refusal(fault, daraja.OAUTH_INVALID_AUTHENTICATION)
                if isinstance(refused, str):
                    await self._latency(extra)
                    return self.respond(request, path, None, 503, refused)
                raise refused
            if request.method != "GET":
                raise self._wrong_method(request.method)
            status, payload = self._oauth.issue(
                request.headers.get("authorization", ""),
                request.query_params.get("grant_type"),
            )
        except Refusal as refusal:
            status, payload = refusal.status_code, self.error(refusal)
        await self._latency(extra)
        return self.respond(request, path, None, status, payload, secret_payload=True, lost=lost)

    async def not_found(self, request: Request) -> Response:
        """Any other path: ``404.001.01 Resource not found``."""
        path = "/" + request.path_params.get("path", "")
        refusal = Refusal(daraja.RESOURCE_NOT_FOUND)
        return self.respond(request, path, None, refusal.status_code, self.error(refusal))


def _is_secret(key: str) -> bool:
    known = _SECRET_KEY_CACHE.get(key)
    if known is None:
        known = is_secret_key(key)
        if len(_SECRET_KEY_CACHE) < 4096:  # bounded: keys are caller-controlled
            _SECRET_KEY_CACHE[key] = known
    return known


def redact_json(value: Any) -> Any:
    """``value`` with every secret field replaced, at any depth (a copy only when needed)."""
    if isinstance(value, dict):
        copy: dict[Any, Any] | None = None
        cache = _SECRET_KEY_CACHE  # on the hot path: one dict lookup per key
        for key, item in value.items():
            secret = cache.get(key)
            if secret is None:
                secret = isinstance(key, str) and _is_secret(key)
            if secret:
                new: Any = _REDACTED
            elif isinstance(item, _CONTAINERS):
                new = redact_json(item)
            else:
                continue
            if new is not item:
                if copy is None:
                    copy = dict(value)
                copy[key] = new
        return value if copy is None else copy
    if isinstance(value, list):
        items = [redact_json(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


def redact_text(text: str) -> str:
    """A non-JSON body without its secrets: form fields (even percent-encoded names), then
    ``key=value`` / ``"key": "value"`` pairs, XML elements and multipart parts."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        pairs = []
    if any(_is_secret(key) for key, _ in pairs):
        text = urlencode(
            [(key, _REDACTED if _is_secret(key) else val) for key, val in pairs], safe="[]"
        )
    return redact_secrets(text)
