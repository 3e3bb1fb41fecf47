"""Every error pesa raises, rooted at :class:`PesaError`.

The tree::

    PesaError
    ├── ConfigurationError          a setting is missing or wrong (names the PESA_* variable)
    ├── ValidationError             bad input, raised before any network call (names field and rule)
    ├── InvalidCallbackError        a callback body that is not what Daraja sends
    ├── TransportError              no HTTP answer (connect error, timeout) for a safe-to-retry call
    ├── OutcomeUnknownError         a money-moving request may have reached Daraja; settle by query
    ├── GatewayError                the pesa gateway's REST API answered with an error
    └── DarajaError                 Daraja answered with an error (status, errorCode, requestId)
        ├── AuthenticationError     OAuth refused the consumer key/secret
        ├── InvalidTokenError       the access token was refused (404.001.03, 401.002.01, ...)
        ├── BadRequestError         a 4xx about the request itself (400.002.02, ...)
        ├── DuplicateRequestError   Daraja already has this OriginatorConversationID
        ├── RateLimitError          spike arrest / quota (500.003.02, 500.003.03)
        ├── ServerError             any other 5xx
        └── UnexpectedResponseError a 2xx whose body is not Daraja's answer (empty, HTML, odd JSON)

Errors about a request carry the evidence (as httpx's ``RequestError.request`` and openai's
``APIStatusError.response`` do): ``operation`` (``"stk_push"``), ``request`` (a
:class:`RedactedRequest`: method, URL, headers and body with every secret replaced) and,
when an answer came, ``status_code``, ``headers``, ``request_id`` and ``body``.

A customer's answer to a prompt (cancelled, insufficient funds, unreachable) is never an
exception: it is a value on the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "DarajaError",
    "DuplicateRequestError",
    "GatewayError",
    "InvalidCallbackError",
    "InvalidTokenError",
    "OutcomeUnknownError",
    "PesaError",
    "RateLimitError",
    "RedactedRequest",
    "ServerError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
]


@dataclass(frozen=True, slots=True)
class RedactedRequest:
    """The request an error is about, with every secret replaced by ``[redacted]``.

    Safe to log and to attach to a support ticket: the ``Authorization`` header, the STK
    ``Password`` and the ``SecurityCredential`` never appear.

    Attributes:
        method: ``"POST"`` or ``"GET"``.
        url: the full URL.
        headers: the request headers, ``Authorization`` redacted.
        body: the JSON body, secrets redacted (empty for a GET).
    """

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


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
    """No HTTP answer was received (connection refused, DNS failure, timeout).

    Attributes:
        operation: the operation's name, when the error is about one.
        request: the request that got no answer (secrets redacted), when known.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        request: RedactedRequest | None = None,
    ) -> None:
        self.operation = operation
        self.request = request
        super().__init__(message)


class OutcomeUnknownError(PesaError):
    """A money-moving request may have reached Daraja but no usable answer came back.

    The request is never re-sent automatically: settle it by query (STK query for an STK
    push, transaction status by ``OriginatorConversationID`` for B2C). The cause (a read
    timeout, an :class:`UnexpectedResponseError`) is ``__cause__``.

    Attributes:
        operation: the operation's name (``"stk_push"``, ``"b2c_payment"``, ...).
        request: what was sent, secrets redacted (``request.body["Timestamp"]`` helps
            match a late callback).
        status_code: the HTTP status if an unreadable answer came, else ``None``.
        headers: that answer's headers (empty if none came).
        request_id: Daraja's ``requestId`` if the answer carried one.
    """

    def __init__(
        self,
        operation: str,
        request: RedactedRequest,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        self.operation = operation
        self.request = request
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.request_id = request_id
        super().__init__(f"{operation}: outcome unknown, settle by query: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class GatewayError(PesaError):
    """The pesa gateway's REST API (``/v1``) answered with an error.

    Attributes:
        status_code: the HTTP status (``409`` for an idempotency key reused with other
            parameters, ``404`` for an unknown payment, ``422`` for bad input, ...).
        type: the API's error type (``"validation_error"``, ``"idempotency_conflict"``,
            ``"not_found"``, ...).
        message: the API's message.
        field: the field at fault, for a validation error.
        rule: the rule it broke, for a validation error.
        request: the request, ``Authorization`` redacted.
        headers: the response headers.
        body: the raw response body.
    """

    def __init__(
        self,
        status_code: int,
        type: str,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        request: RedactedRequest | None = None,
        headers: Mapping[str, str] | None = None,
        body: str = "",
    ) -> None:
        self.status_code = status_code
        self.type = type
        self.message = message
        self.field = field
        self.rule = rule
        self.request = request
        self.headers = dict(headers or {})
        self.body = body
        where = f" ({field}: {rule})" if field and rule else ""
        super().__init__(f"[{status_code} {type}] {message}{where}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class DarajaError(PesaError):
    """Daraja answered a request with an error.

    Attributes:
        status_code: the HTTP status.
        error_code: Daraja's own code, e.g. ``"400.002.02"`` (``None`` if the body had none).
        error_message: Daraja's message, e.g. ``"Bad Request - Invalid Amount"``.
        request_id: Daraja's ``requestId``, for support tickets.
        body: the raw response body, as text.
        headers: the response headers.
        operation: the operation that got this answer (``"stk_push"``; ``"token"`` for
            OAuth), or ``None`` when built outside a client.
        request: the request that got this answer, secrets redacted, or ``None``.
    """

    def __init__(
        self,
        status_code: int,
        error_code: str | None,
        error_message: str,
        request_id: str | None = None,
        body: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        operation: str | None = None,
        request: RedactedRequest | None = None,
    ) -> None:
        self.status_code = status_code
        self.error_code = error_code
        self.error_message = error_message
        self.request_id = request_id
        self.body = body
        self.headers = dict(headers or {})
        self.operation = operation
        self.request = request
        super().__init__(str(self))

    def __str__(self) -> str:
        code = f"[{self.error_code}] " if self.error_code else f"[HTTP {self.status_code}] "
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{code}{self.error_message}{rid}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


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


class UnexpectedResponseError(DarajaError):
    """A 2xx answer pesa cannot read: empty, not JSON, or not the documented shape.

    Often a proxy or a gateway page rather than Daraja itself. For a money-moving request
    the client raises :class:`OutcomeUnknownError` instead (with this as its cause): the
    request may have been accepted. Queries are retried.
    """


def _rebuild(cls: type[Exception], args: tuple[Any, ...], state: dict[str, Any]) -> Exception:
    # Pickling (multiprocessing, task queues) keeps every attribute, evidence included.
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
