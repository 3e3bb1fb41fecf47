"""The evidence errors carry: a request with every secret redacted."""

from __future__ import annotations

import json
from typing import Any, Final

import httpx

from pesa._exceptions import RedactedRequest
from pesa.daraja._models import redact_secrets

__all__ = ["describe_request"]

_SECRET_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})


def describe_request(request: httpx.Request, body: dict[str, Any] | None = None) -> RedactedRequest:
    """``request`` as a :class:`RedactedRequest`: safe to keep on an error and to log.

    Args:
        request: the request that was (or was about to be) sent.
        body: its JSON body if already at hand (else read from the request).
    """
    if body is None:
        body = {}
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streamed body: nothing to show
            content = b""
        if content:
            try:
                data = json.loads(content)
            except ValueError:
                data = None
            if isinstance(data, dict):
                body = data
    headers = {
        name: ("[redacted]" if name.lower() in _SECRET_HEADERS else value)
        for name, value in request.headers.items()
    }
    return RedactedRequest(
        method=request.method, url=str(request.url), headers=headers, body=redact_secrets(body)
    )
