"""Every error pesa raises, rooted at :class:`PesaError`.

The tree::

    PesaError
    ├── ConfigurationError          a setting is missing or wrong (names the PESA_* variable)
    ├── ValidationError             bad input, raised before any network call (names field and rule)
    ├── InvalidCallbackError        a callback body that is not what Daraja sends
    ├── TransportError              no HTTP answer (connect error, timeout) for a safe-to-retry call
    ├── OutcomeUnknownError         a money-moving request may have reached Daraja; settle by query
    └── DarajaError                 Daraja answered with an error (status, errorCode, requestId)
        ├── AuthenticationError     OAuth refused the consumer key/secret
        ├── InvalidTokenError       the access token was refused (404.001.03, 401.002.01, ...)
        ├── BadRequestError         a 4xx about the request itself (400.002.02, ...)
        ├── DuplicateRequestError   Daraja already has this OriginatorConversationID
        ├── RateLimitError          spike arrest / quota (500.003.02, 500.003.03)
        └── ServerError             any other 5xx

A customer's answer to a prompt (cancelled, insufficient funds, unreachable) is never an
exception: it is a value on the result.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DarajaError",
    "DuplicateRequestError",
    "InvalidCallbackError",
    "InvalidTokenError",
    "OutcomeUnknownError",
    "PesaError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ValidationError",
]


class PesaError(Exception):
    """The root of every error raised by pesa."""


class ConfigurationError(PesaError):
    """A setting is missing or invalid; the message names the ``PESA_*`` variable."""


class ValidationError(PesaError, ValueError):
    """Input failed validation before anything was sent.

    Attributes:
        field: the field that failed (``"phone"``, ``"amount"``, ...).
        rule: the rule it broke, in words a developer can act on.
        value: what was given (already masked if it is a phone number).
    """

    def __init__(self, field: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        given = "" if value is None else f" (got {value!r})"
        super().__init__(f"{field}: {rule}{given}")


class InvalidCallbackError(PesaError, ValueError):
    """A callback body is malformed: not JSON, or not the shape Daraja sends."""


class TransportError(PesaError):
    """No HTTP answer was received (connection refused, DNS failure, timeout)."""


class OutcomeUnknownError(PesaError):
    """A money-moving request may have reached Daraja but no answer came back.

    The request is never re-sent automatically: settle it by query (STK query for an STK
    push, transaction status by ``OriginatorConversationID`` for B2C).

    Attributes:
        operation: the operation's name (``"stk_push"``, ``"b2c_payment"``, ...).
        request: what was sent, with secrets removed.
    """

    def __init__(self, operation: str, request: dict[str, Any], message: str) -> None:
        self.operation = operation
        self.request = request
        super().__init__(f"{operation}: outcome unknown, settle by query: {message}")


class DarajaError(PesaError):
    """Daraja answered a request with an error.

    Attributes:
        status_code: the HTTP status.
        error_code: Daraja's own code, e.g. ``"400.002.02"`` (``None`` if the body had none).
        error_message: Daraja's message, e.g. ``"Bad Request - Invalid Amount"``.
        request_id: Daraja's ``requestId``, for support tickets.
        body: the raw response body, as text.
    """

    def __init__(
        self,
        status_code: int,
        error_code: str | None,
        error_message: str,
        request_id: str | None = None,
        body: str = "",
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        code = f"[{self.error_code}] " if self.error_code else f"[HTTP {self.status_code}] "
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{code}{self.error_message}{rid}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.status_code, self.error_code, self.error_message, self.request_id, self.body),
        )


class AuthenticationError(DarajaError):
    """OAuth refused the consumer key and secret (or the Authorization header)."""


class InvalidTokenError(DarajaError):
    """Daraja refused the access token (expired, revoked, or the product is not on the app)."""


class BadRequestError(DarajaError):
    """Daraja refused the request itself; fix it before sending again."""


class DuplicateRequestError(DarajaError):
    """Daraja already has a request with this ``OriginatorConversationID``: do not resend."""


class RateLimitError(DarajaError):
    """Spike arrest or quota violation (``500.003.02``, ``500.003.03``): back off."""


class ServerError(DarajaError):
    """Any other server-side error from Daraja."""
