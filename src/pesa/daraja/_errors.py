"""Turn a Daraja error response into the right :class:`pesa.DarajaError`, in one function.

Error bodies are usually ``{"requestId", "errorCode", "errorMessage"}`` but may be HTML,
plain text, a SOAP fault or empty (REFERENCE §1); all of them map to an error here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pesa._exceptions import (
    AuthenticationError,
    BadRequestError,
    DarajaError,
    DuplicateRequestError,
    InvalidTokenError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)

__all__ = [
    "INVALID_TOKEN_CODES",
    "RATE_LIMIT_CODES",
    "error_from_response",
    "is_invalid_token",
    "is_stk_pending",
    "proves_not_processed",
]

# Codes meaning "this token is no good": refresh once and re-send (REFERENCE §10.1).
# 401.003.01 ("no apiproduct match") is deliberately absent: a new token will not help.
INVALID_TOKEN_CODES: Final = frozenset({"404.001.03", "401.002.01", "400.003.01"})
RATE_LIMIT_CODES: Final = frozenset({"500.003.02", "500.003.03"})
_PENDING_CODE: Final = "500.001.1001"
# Daraja answers these with HTTP 500 and code 500.001.1001 although nothing was processed
# (REFERENCE §6.2). The same code also comes with "Internal Server Error", which proves
# nothing, so the message decides.
_REFUSED_500_CODE: Final = "500.001.1001"
_REFUSED_500_MESSAGES: Final = (
    "merchant does not exist",
    "wrong credentials",
    "unable to lock subscriber",
)
_PENDING_TEXT: Final = re.compile(r"being processed", re.IGNORECASE)
_TAGS: Final = re.compile(r"<[^>]+>")
_MAX_SNIPPET: Final = 200


def _json(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _snippet(text: str) -> str:
    flat = " ".join(_TAGS.sub(" ", text).split())
    return flat[:_MAX_SNIPPET] + ("..." if len(flat) > _MAX_SNIPPET else "")


def error_from_response(
    status_code: int,
    content: bytes,
    *,
    oauth: bool = False,
    headers: Mapping[str, str] | None = None,
) -> DarajaError:
    """The :class:`DarajaError` subclass for an error answer from Daraja.

    Args:
        status_code: the HTTP status.
        content: the raw body (JSON, HTML, text or empty).
        oauth: the answer came from the OAuth endpoint (any failure there is an
            :class:`AuthenticationError`, except rate limiting and 5xx).
        headers: the answer's headers, kept on the error as evidence.
    """
    text = content.decode("utf-8", errors="replace")
    data = _json(content) or {}
    code = data.get("errorCode", data.get("ResponseCode"))
    error_code = str(code).strip() if code not in (None, "") else None
    message = data.get("errorMessage", data.get("ResponseDescription"))
    if not isinstance(message, str) or not message.strip():
        if text.strip():
            message = f"HTTP {status_code} with a non-JSON body: {_snippet(text)}"
        else:
            message = f"HTTP {status_code} with an empty body"
    request_id = data.get("requestId")
    request_id = str(request_id) if request_id not in (None, "") else None

    cls: type[DarajaError]
    if error_code in RATE_LIMIT_CODES or status_code == 429:
        cls = RateLimitError
    elif error_code in INVALID_TOKEN_CODES or (
        status_code == 401 and not oauth and error_code != "401.003.01"
    ):
        cls = InvalidTokenError
    elif oauth and status_code < 500:
        cls = AuthenticationError
    elif error_code == "500.002.1001" and "duplicate" in message.lower():
        cls = DuplicateRequestError
    elif status_code >= 500:
        cls = ServerError
    elif 400 <= status_code < 500:
        cls = InvalidTokenError if error_code == "401.003.01" else BadRequestError
    else:
        # A 2xx whose body says failure (ResponseCode other than 0).
        cls = BadRequestError
    return cls(status_code, error_code, message.strip(), request_id, text, headers=headers)


def is_invalid_token(error: DarajaError) -> bool:
    """The token was refused in a way a fresh token can fix (refresh once, then re-send)."""
    if error.error_code in INVALID_TOKEN_CODES:
        return True
    return error.status_code == 401 and error.error_code in (None, "401.002.01")


def is_stk_pending(error: DarajaError) -> bool:
    """An STK query answer meaning "the prompt is still open": pending, not failed."""
    return error.error_code == _PENDING_CODE and bool(_PENDING_TEXT.search(error.error_message))


def proves_not_processed(error: DarajaError) -> bool:
    """Daraja's error answer proves the request was refused and nothing was processed.

    ``True`` for spike arrest and quota (refused at Daraja's gateway), any 4xx, and the
    5xx answers Daraja gives to requests it refused outright (``500.001.1001`` with
    "Merchant does not exist", "Wrong credentials", "Unable to lock subscriber"). ``False``
    for any other 5xx and for an unreadable 2xx: those may have been processed, so a
    money-moving request is settled by query rather than called failed.
    """
    if isinstance(error, UnexpectedResponseError):
        return False
    if isinstance(error, RateLimitError) or error.status_code < 500:
        return True
    message = error.error_message.lower()
    return error.error_code == _REFUSED_500_CODE and any(
        m in message for m in _REFUSED_500_MESSAGES
    )
