"""The gateway's REST API: payments, events, health and metrics, behind a bearer API key.

Every error answer has one shape, ``{"error": {"type", "message", "field", "rule"}}``:
422 for invalid input (naming the field and the rule), 401 for a missing or wrong key,
404 for an unknown payment (receipt, ...), 409 for an idempotency key reused with other
parameters or a change the state forbids (cancelling a paid expected payment), 503 when the
database does not answer.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from pesa._exceptions import DarajaError, RateLimitError, TransportError, ValidationError
from pesa._logging import get_logger
from pesa.daraja import normalize_msisdn
from pesa.gateway._metrics import PROMETHEUS_CONTENT_TYPE, render_prometheus
from pesa.gateway._models import (
    AccountList,
    AccountOut,
    ApiErrorBody,
    EventOut,
    EventPage,
    HealthOut,
    PaymentCreate,
    PaymentOut,
    PaymentPage,
)
from pesa.gateway._payments import PaymentRequest, check_metadata, validate_idempotency_key
from pesa.gateway._state import GatewayState, gateway_state
from pesa.gateway._trust import tokens_match
from pesa.ledger import (
    Event,
    ExpectedPaymentNotFoundError,
    IdempotencyConflictError,
    InvalidTransitionError,
    Payment,
    PaymentStatus,
    ReceiptNotFoundError,
)

__all__ = ["ApiError", "install_error_handlers", "router"]

log = get_logger("pesa.gateway")

State = Annotated[GatewayState, Depends(gateway_state)]


class ApiError(Exception):
    """An error answer of the REST API (rendered as ``{"error": {...}}``)."""

    def __init__(
        self,
        status_code: int,
        type_: str,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.field = field
        self.rule = rule
        self.headers = headers


def _error_response(err: ApiError) -> JSONResponse:
    body = {"type": err.type, "message": err.message, "field": err.field, "rule": err.rule}
    return JSONResponse({"error": body}, status_code=err.status_code, headers=err.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Render API errors, pesa validation errors and FastAPI's own in the one shape."""

    async def on_api_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ValidationError)
        return _error_response(
            ApiError(422, "validation_error", str(exc), field=exc.field, rule=exc.rule)
        )

    async def on_request_validation_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first: dict[str, Any] = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            # loc would be a character offset, not a field.
            rule = f"the body must be a JSON object: {first.get('ctx', {}).get('error', '')}"
            return _error_response(ApiError(422, "validation_error", rule.rstrip(": "), rule=rule))
        # loc is ("body", "amount") or ("query", "limit"): the field is what follows.
        loc = [str(part) for part in first.get("loc", ())[1:]]
        field = ".".join(loc) or None
        rule = str(first.get("msg", "invalid"))
        message = f"{field}: {rule}" if field else rule
        return _error_response(ApiError(422, "validation_error", message, field=field, rule=rule))

    async def on_idempotency_conflict(_: Request, exc: Exception) -> Response:
        return _error_response(
            ApiError(409, "idempotency_conflict", str(exc), field="Idempotency-Key")
        )

    async def on_database_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, DBAPIError)
        # Only the driver's error class: its message may carry SQL and parameters.
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig else type(exc))
        return _error_response(
            ApiError(503, "service_unavailable", "the database is unavailable, retry later")
        )

    async def on_invalid_transition(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, InvalidTransitionError)
        return _error_response(ApiError(409, "invalid_transition", str(exc)))

    async def on_not_found(_: Request, exc: Exception) -> Response:
        return _error_response(ApiError(404, "not_found", str(exc), field="id"))

    app.add_exception_handler(InvalidTransitionError, on_invalid_transition)
    app.add_exception_handler(ExpectedPaymentNotFoundError, on_not_found)
    app.add_exception_handler(ReceiptNotFoundError, on_not_found)
    app.add_exception_handler(DBAPIError, on_database_error)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ValidationError, on_validation_error)
    app.add_exception_handler(RequestValidationError, on_request_validation_error)
    app.add_exception_handler(IdempotencyConflictError, on_idempotency_conflict)


def require_api_key(
    state: State,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """FastAPI dependency: the request carries ``Authorization: Bearer <PESA_API_KEY>``."""
    if state.api_key is None:
        return
    challenge = {"WWW-Authenticate": "Bearer"}
    if authorization is None:
        raise ApiError(401, "authentication_error", "missing bearer API key", headers=challenge)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not tokens_match(given.strip(), state.api_key):
        raise ApiError(401, "authentication_error", "invalid API key", headers=challenge)


Authenticated = Depends(require_api_key)
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiErrorBody, "description": "missing or invalid API key"},
    422: {"model": ApiErrorBody, "description": "invalid input (names the field and rule)"},
}

router = APIRouter()


def _out(payment: Payment) -> PaymentOut:
    data = payment.to_dict()
    data["metadata"] = _readable_metadata(payment.id, data.get("metadata"))
    return PaymentOut.model_validate(data)


def _event_out(event: Event) -> EventOut:
    try:
        data = event.to_dict()
    except (RecursionError, ValueError):
        # Written before today's metadata limits, too deep to decode: show the event
        # without its payment (webhooks deliver the stored bytes as they are).
        log.warning("event %s: stored payload not shown (cannot be decoded)", event.id)
        data = {"id": event.id, "type": event.type, "created_at": "", "data": {}}
        data["created_at"] = event.created_at.isoformat()
    payment = data.get("data", {}).get("payment")
    if isinstance(payment, dict):
        payment["metadata"] = _readable_metadata(str(payment.get("id")), payment.get("metadata"))
    return EventOut.model_validate(data)


def _readable_metadata(payment_id: str, metadata: Any) -> Any:
    """The stored metadata, or ``None`` if it breaks today's limits (a row written before
    they existed): one such row must not make every page that shows it fail."""
    if metadata is None:
        return None
    try:
        check_metadata(metadata)
    except ValidationError as err:
        log.warning("payment %s: stored metadata not shown (%s)", payment_id, err.rule)
        return None
    return metadata


async def _get_payment(state: GatewayState, payment_id: str) -> Payment:
    payment = await state.ledger.get_payment(payment_id)
    if payment is None:
        raise ApiError(404, "not_found", f"no payment {payment_id!r}", field="id")
    return payment


@router.post(
    "/v1/payments",
    status_code=201,
    response_model=PaymentOut,
    dependencies=[Authenticated],
    tags=["payments"],
    responses={
        **_ERRORS,
        409: {"model": ApiErrorBody, "description": "key reused with other parameters"},
    },
)
async def create_payment(
    body: PaymentCreate,
    response: Response,
    state: State,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="your unique id for this payment: a retry with it never pays twice",
        ),
    ] = None,
) -> PaymentOut:
    """Ask a customer to pay by STK push (M-Pesa Express).

    The payment is committed before Daraja is called, then the push is sent once. The
    answer is the payment: ``pending`` (the prompt is on the phone), ``rejected`` (Daraja
    refused the request, with its code) or ``unknown`` (no answer: the reconciler will
    settle it). The final outcome arrives by webhook and in ``GET /v1/payments/{id}``.
    A retry with the same ``Idempotency-Key`` returns the same payment (header
    ``Idempotent-Replayed: true``) without a second push.
    """
    key = validate_idempotency_key(idempotency_key)
    request = PaymentRequest.validate(
        phone=body.phone,
        amount=body.amount,
        account_reference=body.account_reference,
        description=body.description,
        metadata=body.metadata,
        account=stk_account(state, body.account),
    )
    payment, created = await state.creator.create(request, idempotency_key=key)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _out(payment)


@router.get(
    "/v1/payments/{payment_id}",
    response_model=PaymentOut,
    dependencies=[Authenticated],
    tags=["payments"],
    responses={**_ERRORS, 404: {"model": ApiErrorBody, "description": "no such payment"}},
)
async def get_payment(payment_id: str, state: State) -> PaymentOut:
    """Read one payment."""
    return _out(await _get_payment(state, payment_id))


@router.get(
    "/v1/payments",
    response_model=PaymentPage,
    dependencies=[Authenticated],
    tags=["payments"],
    responses=_ERRORS,
)
async def list_payments(
    state: State,
    status: Annotated[PaymentStatus | None, Query(description="only this status")] = None,
    phone: Annotated[str | None, Query(description="only this payer (any format)")] = None,
    created_from: Annotated[datetime | None, Query(description="created at or after")] = None,
    created_to: Annotated[datetime | None, Query(description="created before")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    account: Annotated[str | None, Query(description="only this account's payments")] = None,
) -> PaymentPage:
    """List payments, newest first, with filters and cursor pagination."""
    normalized_phone = normalize_phone_filter(phone)
    if account is not None:
        account = state.accounts.resolve(account).name
    page = await state.ledger.list_payments(
        status=status,
        phone=normalized_phone,
        created_from=created_from,
        created_to=created_to,
        cursor=cursor,
        limit=limit,
        account=account,
    )
    return PaymentPage(data=[_out(p) for p in page.items], next_cursor=page.next_cursor)


def stk_account(state: GatewayState, name: str | None) -> str:
    """The account a payment is pushed on, by name (the default one for ``None``).

    Raises:
        ValidationError: no such account, or one that cannot take STK pushes.
    """
    account = state.accounts.resolve(name)
    if not account.can_push:
        raise ValidationError(
            "account",
            "must be an account that takes STK pushes (a shortcode and its passkey)",
            account.name,
        )
    return account.name


def normalize_phone_filter(phone: str | None) -> str | None:
    """Accept the phone filter in any Safaricom format, as the create call does."""
    if phone is None:
        return None
    return normalize_msisdn(phone, field="phone")


@router.post(
    "/v1/payments/{payment_id}/refresh",
    response_model=PaymentOut,
    dependencies=[Authenticated],
    tags=["payments"],
    responses={
        **_ERRORS,
        404: {"model": ApiErrorBody, "description": "no such payment"},
        502: {"model": ApiErrorBody, "description": "Daraja unreachable or refused the query"},
        503: {"model": ApiErrorBody, "description": "Daraja rate limiting (see Retry-After)"},
        504: {"model": ApiErrorBody, "description": "Daraja did not answer in time"},
    },
)
async def refresh_payment(payment_id: str, state: State) -> PaymentOut:
    """Ask Daraja now (STK query) and apply the answer; terminal payments are returned as is."""
    payment = await _get_payment(state, payment_id)
    try:
        settled = await state.reconciler.settle(payment)
    except RateLimitError as err:
        # Spike arrest: the reconciler paused its queries; say when asking again makes sense.
        wait = max(1, math.ceil(state.reconciler.bucket.pause_remaining()))
        log.warning("refresh of %s: Daraja is rate limiting (%s)", payment_id, err.error_code)
        raise ApiError(
            503,
            "daraja_rate_limited",
            f"Daraja is rate limiting queries; retry after {wait} s (the payment is unchanged)",
            headers={"Retry-After": str(wait)},
        ) from err
    except TransportError as err:
        timed_out = _is_timeout(err)
        log.warning("refresh of %s: no answer from Daraja (%s)", payment_id, err)
        raise ApiError(
            504 if timed_out else 502,
            "daraja_timeout" if timed_out else "daraja_unreachable",
            ("Daraja did not answer the query in time" if timed_out else "Daraja is unreachable")
            + "; the payment is unchanged, retry later",
        ) from err
    except DarajaError as err:
        log.warning("refresh of %s: Daraja answered with an error: %s", payment_id, err)
        raise ApiError(
            502,
            "daraja_error",
            f"Daraja refused the query: {err}; the payment is unchanged",
        ) from err
    return _out(settled)


def _is_timeout(err: BaseException) -> bool:
    """Whether a transport error (or what caused it) is a timeout rather than a refusal."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, TimeoutError | httpx.TimeoutException):
            return True
        seen = seen.__cause__
    return False


@router.get(
    "/v1/events",
    response_model=EventPage,
    dependencies=[Authenticated],
    tags=["events"],
    responses=_ERRORS,
)
async def list_events(
    state: State,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    payment_id: Annotated[str | None, Query(description="only this payment's events")] = None,
    subject_id: Annotated[
        str | None,
        Query(description="only the events about this payment, payout, refund or receipt"),
    ] = None,
) -> EventPage:
    """Read the event log in order, oldest first (the same bodies webhooks deliver).

    ``next_cursor`` is where to resume: poll with ``after=<next_cursor>`` to follow the log.
    """
    page = await state.ledger.list_events(
        after=after, limit=limit, payment_id=payment_id, subject_id=subject_id
    )
    events = [_event_out(e) for e in page.items]
    return EventPage(data=events, next_cursor=page.next_cursor)


@router.get(
    "/v1/accounts",
    response_model=AccountList,
    dependencies=[Authenticated],
    tags=["accounts"],
    responses=_ERRORS,
)
async def list_accounts(state: State) -> AccountList:
    """The named Daraja accounts this gateway serves (never their secrets)."""
    data = []
    for described in state.accounts.describe():
        registration = state.registrar.registrations.get(described["name"])
        if registration is not None:
            described["c2b_registration"] = {
                "status": registration.status,
                "detail": registration.detail,
                "at": None if registration.at is None else registration.at.isoformat(),
                "attempts": registration.attempts,
            }
        data.append(AccountOut.model_validate(described))
    return AccountList(data=data)


@router.get("/healthz", response_model=HealthOut, tags=["operations"])
async def healthz(state: State, response: Response) -> HealthOut:
    """Liveness and database reachability (no API key needed)."""
    try:
        # One round trip, no table scan: load balancers poll this often.
        async with state.ledger.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: the database did not answer")
        response.status_code = 503
        return HealthOut(status="degraded", database="unavailable", environment=state.settings.env)
    return HealthOut(status="ok", database="ok", environment=state.settings.env)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    dependencies=[Authenticated],
    tags=["operations"],
)
async def metrics(state: State) -> PlainTextResponse:
    """Prometheus text: payments by status, callbacks, reconciler and webhook counters."""
    stats = await state.ledger.stats()
    page = render_prometheus(stats, state.metrics)
    return PlainTextResponse(page, media_type=PROMETHEUS_CONTENT_TYPE)
