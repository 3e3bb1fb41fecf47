"""The REST API of receipts (C2B money in) and expected payments, behind the API key.

- ``GET /v1/receipts`` (filters: account, account reference, phone, status, expected
  payment, dates of payment; cursor) and ``GET /v1/receipts/{id}``;
- ``POST /v1/receipts/lookup``: "I paid, here is my code": a Transaction Status query by the
  M-Pesa receipt number; the answer comes by callback and records the receipt if Daraja
  confirms it (``GET /v1/receipts/lookups/{id}`` follows it);
- ``POST /v1/expected-payments`` ("I expect KES X for account number R"), ``GET`` one or a
  page, ``POST /v1/expected-payments/{id}/cancel``.

Errors have the API's one shape (``{"error": {...}}``), from :mod:`pesa.gateway._api`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from pesa._exceptions import DarajaError, PesaError, RateLimitError, TransportError
from pesa._logging import get_logger
from pesa.gateway._api import _ERRORS, ApiError, Authenticated, State
from pesa.gateway._models import (
    ApiErrorBody,
    ExpectedPaymentCreate,
    ExpectedPaymentOut,
    ExpectedPaymentPage,
    LookupCreate,
    LookupOut,
    ReceiptOut,
    ReceiptPage,
)
from pesa.gateway._payments import check_metadata, validate_idempotency_key
from pesa.gateway_client._models import ExpectedStatusName, ReceiptStatusName
from pesa.ledger import ExpectedPayment, Receipt, ReceiptQuery

__all__ = ["router"]

log = get_logger("pesa.gateway")

router = APIRouter()

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiErrorBody, "description": "no such receipt"}
}


def _receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut.model_validate(receipt.to_dict())


def _expected_out(
    expected: ExpectedPayment, receipts: list[Receipt] | None = None
) -> ExpectedPaymentOut:
    data: dict[str, Any] = expected.to_dict()
    if receipts is not None:
        data["receipts"] = [r.to_dict() for r in receipts]
    return ExpectedPaymentOut.model_validate(data)


@router.get(
    "/v1/receipts",
    response_model=ReceiptPage,
    dependencies=[Authenticated],
    tags=["receipts"],
    responses=_ERRORS,
)
async def list_receipts(
    state: State,
    account: Annotated[str | None, Query(description="only this account's receipts")] = None,
    account_reference: Annotated[
        str | None, Query(max_length=64, description="only this account number (as typed)")
    ] = None,
    phone: Annotated[
        str | None,
        Query(
            description="only this payer (any format); matches full numbers, C2B v1 hashes "
            "and v2 masked numbers whose visible digits agree"
        ),
    ] = None,
    status: Annotated[ReceiptStatusName | None, Query(description="only this status")] = None,
    expected_payment_id: Annotated[str | None, Query(description="only its receipts")] = None,
    paid_from: Annotated[datetime | None, Query(description="paid at or after")] = None,
    paid_to: Annotated[datetime | None, Query(description="paid before")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReceiptPage:
    """List C2B receipts, newest first, with filters and cursor pagination."""
    if account is not None:
        account = state.accounts.resolve(account).name
    page = await state.ledger.receipts.list_receipts(
        account=account,
        account_reference=account_reference,
        phone=phone,
        status=status,
        expected_payment_id=expected_payment_id,
        paid_from=paid_from,
        paid_to=paid_to,
        cursor=cursor,
        limit=limit,
    )
    return ReceiptPage(data=[_receipt_out(r) for r in page.items], next_cursor=page.next_cursor)


@router.get(
    "/v1/receipts/lookups/{lookup_id}",
    response_model=LookupOut,
    dependencies=[Authenticated],
    tags=["receipts"],
    responses={**_ERRORS, 404: {"model": ApiErrorBody, "description": "no such lookup"}},
)
async def get_lookup(lookup_id: str, state: State) -> LookupOut:
    """Follow a lookup: its query's outcome, and the receipt once Daraja confirmed it."""
    book = state.ledger.receipts
    query = await book.get_query(lookup_id)
    if query is None or query.purpose != "lookup":
        raise ApiError(404, "not_found", f"no lookup {lookup_id!r}", field="id")
    receipt = await book.get_receipt_by_trans_id(query.trans_id)
    if receipt is not None and not query.answered:
        # The answer that recorded the receipt also answered the query, in one transaction:
        # read the query again, after the receipt, for a consistent pair.
        query = await book.get_query(lookup_id) or query
    return await _lookup_out(state, query, receipt)


async def _lookup_out(
    state: Any, query: ReceiptQuery | None, receipt: Receipt | None = None
) -> LookupOut:
    if receipt is None and query is not None:
        receipt = await state.ledger.receipts.get_receipt_by_trans_id(query.trans_id)
    return LookupOut(
        lookup=None if query is None else query.to_dict(),
        receipt=None if receipt is None else _receipt_out(receipt),
    )


@router.get(
    "/v1/receipts/{receipt_id}",
    response_model=ReceiptOut,
    dependencies=[Authenticated],
    tags=["receipts"],
    responses={**_ERRORS, **_NOT_FOUND},
)
async def get_receipt(receipt_id: str, state: State) -> ReceiptOut:
    """Read one receipt (by its id, ``rcp_...``, or its M-Pesa receipt number)."""
    book = state.ledger.receipts
    receipt = await book.get_receipt(receipt_id) or await book.get_receipt_by_trans_id(
        receipt_id.upper()
    )
    if receipt is None:
        raise ApiError(404, "not_found", f"no receipt {receipt_id!r}", field="id")
    return _receipt_out(receipt)


@router.post(
    "/v1/receipts/lookup",
    response_model=LookupOut,
    status_code=202,
    dependencies=[Authenticated],
    tags=["receipts"],
    responses={
        **_ERRORS,
        200: {"model": LookupOut, "description": "Daraja already confirmed this receipt"},
        502: {"model": ApiErrorBody, "description": "Daraja unreachable or refused the query"},
        503: {"model": ApiErrorBody, "description": "Daraja rate limiting (see Retry-After)"},
    },
)
async def lookup_receipt(body: LookupCreate, response: Response, state: State) -> LookupOut:
    """Ask Daraja about an M-Pesa receipt number (Transaction Status).

    A receipt Daraja already confirmed is answered at once (``200``). Otherwise the query is
    sent (``202``) and its answer arrives by callback: if Daraja confirms the receipt, it is
    recorded (``receipt.received`` and ``receipt.confirmed``), matched by
    ``account_reference`` to an expected payment, and shown by
    ``GET /v1/receipts/lookups/{id}``. The same number asked again within a minute is
    answered with the same lookup.
    """
    account = state.accounts.resolve(body.account)
    if not account.has_initiator or account.shortcode is None:
        raise ApiError(
            422,
            "validation_error",
            f"account: {account.name!r} cannot ask Transaction Status (it needs a shortcode "
            "and an initiator)",
            field="account",
            rule="must be an account with a shortcode and an initiator",
        )
    outcome, nonce = await state.ledger.receipts.start_lookup(
        body.trans_id,
        account=account.name,
        shortcode=account.shortcode,
        account_reference=body.account_reference,
    )
    if outcome.query is None:
        response.status_code = 200
        return await _lookup_out(state, None, outcome.receipt)
    query = outcome.query
    if nonce is not None:
        try:
            query = await state.verifier.ask(query, nonce)
        except RateLimitError as err:
            wait = max(1, math.ceil(state.verifier.bucket.pause_remaining()))
            raise ApiError(
                503,
                "daraja_rate_limited",
                f"Daraja is rate limiting queries; retry after {wait} s",
                headers={"Retry-After": str(wait)},
            ) from err
        except TransportError as err:
            raise ApiError(
                502, "daraja_unreachable", "Daraja did not answer the query; retry later"
            ) from err
        except DarajaError as err:
            raise ApiError(502, "daraja_error", f"Daraja refused the query: {err}") from err
        except PesaError as err:
            raise ApiError(
                502, "daraja_error", f"the query could not be sent: {type(err).__name__}"
            ) from err
    return await _lookup_out(state, query, outcome.receipt)


@router.post(
    "/v1/expected-payments",
    response_model=ExpectedPaymentOut,
    status_code=201,
    dependencies=[Authenticated],
    tags=["expected payments"],
    responses={
        **_ERRORS,
        409: {"model": ApiErrorBody, "description": "key reused with other parameters"},
    },
)
async def create_expected_payment(
    body: ExpectedPaymentCreate,
    response: Response,
    state: State,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="your unique id for this expectation"),
    ] = None,
) -> ExpectedPaymentOut:
    """Say "I expect KES ``amount`` for account number ``account_reference``".

    C2B receipts with that account number (letters and digits, case ignored) settle it:
    ``partially_paid``, ``paid`` or ``overpaid``, each told by webhook. Money that arrived
    before this call is matched at once. Receipts count once Daraja confirmed them (see
    ``PESA_C2B_VERIFY``).
    """
    key = validate_idempotency_key(idempotency_key)
    account = state.accounts.resolve(body.account)
    if account.shortcode is None:
        raise ApiError(
            422,
            "validation_error",
            f"account: {account.name!r} has no shortcode to receive payments",
            field="account",
            rule="must be an account with a shortcode",
        )
    if body.metadata is not None:
        check_metadata(body.metadata)
    expected, created = await state.ledger.receipts.create_expected_payment(
        key, account.name, body.account_reference, body.amount, body.description, body.metadata
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _expected_out(expected)


@router.get(
    "/v1/expected-payments",
    response_model=ExpectedPaymentPage,
    dependencies=[Authenticated],
    tags=["expected payments"],
    responses=_ERRORS,
)
async def list_expected_payments(
    state: State,
    status: Annotated[ExpectedStatusName | None, Query(description="only this status")] = None,
    account: Annotated[str | None, Query(description="only this account's")] = None,
    account_reference: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ExpectedPaymentPage:
    """List expected payments, newest first, with filters and cursor pagination."""
    if account is not None:
        account = state.accounts.resolve(account).name
    page = await state.ledger.receipts.list_expected_payments(
        status=status,
        account=account,
        account_reference=account_reference,
        cursor=cursor,
        limit=limit,
    )
    return ExpectedPaymentPage(
        data=[_expected_out(e) for e in page.items], next_cursor=page.next_cursor
    )


async def _expected(state: Any, expected_id: str) -> ExpectedPayment:
    expected: ExpectedPayment | None = await state.ledger.receipts.get_expected_payment(expected_id)
    if expected is None:
        raise ApiError(404, "not_found", f"no expected payment {expected_id!r}", field="id")
    return expected


@router.get(
    "/v1/expected-payments/{expected_id}",
    response_model=ExpectedPaymentOut,
    dependencies=[Authenticated],
    tags=["expected payments"],
    responses={**_ERRORS, 404: {"model": ApiErrorBody, "description": "no such id"}},
)
async def get_expected_payment(expected_id: str, state: State) -> ExpectedPaymentOut:
    """Read one expected payment, with its receipts."""
    expected = await _expected(state, expected_id)
    page = await state.ledger.receipts.list_receipts(expected_payment_id=expected.id, limit=500)
    return _expected_out(expected, page.items)


@router.post(
    "/v1/expected-payments/{expected_id}/cancel",
    response_model=ExpectedPaymentOut,
    dependencies=[Authenticated],
    tags=["expected payments"],
    responses={
        **_ERRORS,
        404: {"model": ApiErrorBody, "description": "no such id"},
        409: {"model": ApiErrorBody, "description": "already paid"},
    },
)
async def cancel_expected_payment(expected_id: str, state: State) -> ExpectedPaymentOut:
    """Stop expecting it (``open`` or ``partially_paid`` only): money arriving later is
    flagged, never lost."""
    await _expected(state, expected_id)
    return _expected_out(await state.ledger.receipts.cancel_expected_payment(expected_id))
