"""Dashboard sign-in: session cookies, CSRF tokens, form bodies, the client's address.

- The session cookie holds a random token; the database keeps only its SHA-256
  (:class:`pesa.ledger.OperatorStore`). It is ``HttpOnly``, ``SameSite=Lax``, scoped to
  ``/dashboard``, and ``Secure`` whenever the request came over HTTPS — directly, or
  through a proxy listed in ``PESA_TRUSTED_PROXIES`` that says so in ``X-Forwarded-Proto``
  (anyone else's header is ignored).
- Every form carries a CSRF token: the session's own once signed in; before that, the
  sign-in form's token must match a short-lived cookie (login CSRF).
- Form bodies are parsed here (``application/x-www-form-urlencoded``), bounded in size
  before they are read: no multipart parser is needed for a handful of text fields.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from typing import Final
from urllib.parse import parse_qs

from fastapi import Request, Response

from pesa.gateway._trust import IPNetwork, resolve_client_ip

__all__ = [
    "CSRF_COOKIE",
    "MAX_FORM_BYTES",
    "SESSION_COOKIE",
    "FormTooLargeError",
    "client_ip",
    "csrf_matches",
    "is_https",
    "new_csrf_token",
    "printable",
    "read_form",
    "safe_next",
    "set_cookie",
]

SESSION_COOKIE: Final = "pesa_dashboard"
CSRF_COOKIE: Final = "pesa_dashboard_csrf"
COOKIE_PATH: Final = "/dashboard"
MAX_FORM_BYTES: Final = 16 * 1024


class FormTooLargeError(Exception):
    """A form body larger than :data:`MAX_FORM_BYTES`."""


def _peer_is_trusted(request: Request, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped is not None:
        peer = peer.ipv4_mapped
    return any(peer.version == net.version and peer in net for net in trusted)


def is_https(request: Request, trusted: Sequence[IPNetwork]) -> bool:
    """Whether the browser reached us over HTTPS (a trusted proxy may say so)."""
    if request.url.scheme == "https":
        return True
    if _peer_is_trusted(request, trusted):
        # The nearest proxy appends last: believe only the last value.
        forwarded = request.headers.get("x-forwarded-proto", "")
        return forwarded.split(",")[-1].strip().lower() == "https"
    return False


def client_ip(request: Request, trusted: Sequence[IPNetwork]) -> str | None:
    """The browser's address (``X-Forwarded-For`` believed only from trusted proxies)."""
    peer = request.client.host if request.client is not None else None
    return resolve_client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted)


def set_cookie(
    response: Response, name: str, value: str, *, max_age: int | None, secure: bool
) -> None:
    """Set a dashboard cookie: HttpOnly, SameSite=Lax, path ``/dashboard``."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=secure,
    )


def new_csrf_token() -> str:
    """A fresh random token for the sign-in form."""
    return secrets.token_urlsafe(32)


def csrf_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; a missing token never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a url-encoded form (first value of each), read at most
    :data:`MAX_FORM_BYTES`.

    Raises:
        FormTooLargeError: the body is larger.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormTooLargeError
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLargeError
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items() if values}


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a dashboard path only (never another site)."""
    if (
        target
        and target.startswith("/dashboard")
        and not target.startswith("//")
        and "\\" not in target
        and "\n" not in target
        and "\r" not in target
    ):
        return target
    return "/dashboard/"


def printable(text: str, max_length: int = 64) -> str:
    """``text`` made safe to store and compare: bounded, control characters (NUL first of
    all, which PostgreSQL refuses) and unpaired surrogates escaped."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:max_length])
    return shown.encode("utf-8", "backslashreplace").decode("utf-8")
