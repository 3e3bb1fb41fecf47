"""The REST API of payouts (B2C), batches, refunds (reversals) and the account balance.

The same conventions as payments (:mod:`pesa.gateway._api`): a bearer API key, one error
shape, ``Idempotency-Key`` on every request that moves money, 422 naming the field and the
rule before anything is stored.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Response

from pesa._exceptions import (
    DarajaError,
    PesaError,
    RateLimitError,
    TransportError,
    ValidationError,
)
from pesa._logging import get_logger
from pesa.daraja import validate_remarks, validate_text
from pesa.gateway._api import _ERRORS, ApiError, Authenticated, State, normalize_phone_filter
from pesa.gateway._models import ApiErrorBody
from pesa.gateway._payments import check_metadata, validate_idempotency_key
from pesa.gateway._state import GatewayState
from pesa.gateway._transfers import PayoutRequest, payout_account, retry_after
from pesa.gateway_client._transfer_models import (
    BalanceOut,
    BatchCreate,
    BatchOut,
    PayoutCreate,
    PayoutOut,
    PayoutPage,
    RefundCreate,
    RefundOut,
    RefundPage,
)
from pesa.ledger import (
    BalanceRead,
    BatchSummary,
    PaymentNotFoundError,
    Payout,
    ReceiptNotFoundError,
    Refund,
    RefundNotAllowedError,
    TransferStatus,
)

__all__ = ["MAX_BATCH_ROWS", "PAYOUT_BATCHES_PATH", "router", "start_refund"]

log = get_logger("pesa.gateway.payouts")

MAX_BATCH_ROWS = 10_000
PAYOUT_BATCHES_PATH = "/v1/payouts/batches"
"""The batch route: its body may be larger (``PESA_BATCH_MAX_BODY_BYTES``)."""
_BALANCE_POLL = 0.05

router = APIRouter()

_KEY = Header(
    alias="Idempotency-Key",
    description="your unique id for this request: a retry with it never pays twice",
)
_409: dict[int | str, dict[str, Any]] = {
    409: {"model": ApiErrorBody, "description": "the Idempotency-Key was used with other data"}
}
_404: dict[int | str, dict[str, Any]] = {
    404: {"model": ApiErrorBody, "description": "no such payout, refund or payment"}
}


def _payout(payout: Payout) -> PayoutOut:
    return PayoutOut.model_validate(payout.to_dict())


def _refund(refund: Refund) -> RefundOut:
    return RefundOut.model_validate(refund.to_dict())


def _batch(summary: BatchSummary, created: int = 0) -> BatchOut:
    return BatchOut.model_validate({**summary.to_dict(), "created": created})


async def start_refund(
    state: GatewayState,
    source_id: str,
    body: RefundCreate,
    idempotency_key: str | None,
    *,
    source: Literal["payment", "receipt"],
) -> tuple[Refund, bool]:
    """Validate, commit and send a refund of a payment or a receipt: the one path of
    ``POST /v1/payments/{id}/refund``, ``POST /v1/receipts/{id}/refund`` and the
    dashboard's "Refund" button.

    Raises:
        ValidationError: a bad key, remarks or metadata (nothing stored).
        IdempotencyConflictError: the key was used with other parameters.
        ApiError: 404 (no such payment or receipt), 409 (not refundable, more than remains).
    """
    key = validate_idempotency_key(idempotency_key)
    remarks = validate_remarks(body.remarks)
    if body.metadata is not None:
        check_metadata(body.metadata)
    try:
        return await state.sender.create_refund(
            source_id,
            body.amount,
            remarks=remarks,
            idempotency_key=key,
            metadata=body.metadata,
            source=source,
        )
    except (PaymentNotFoundError, ReceiptNotFoundError) as err:
        raise ApiError(404, "not_found", f"no {source} {source_id!r}", field="id") from err
    except RefundNotAllowedError as err:
        raise ApiError(409, "refund_not_allowed", err.rule, field="amount", rule=err.rule) from err


@router.post(
    "/v1/payouts",
    status_code=201,
    response_model=PayoutOut,
    dependencies=[Authenticated],
    tags=["payouts"],
    responses={**_ERRORS, **_409},
)
async def create_payout(
    body: PayoutCreate,
    response: Response,
    state: State,
    idempotency_key: Annotated[str | None, _KEY] = None,
) -> PayoutOut:
    """Pay a customer (B2C, ``POST /mpesa/b2c/v3/paymentrequest``).

    The payout is committed before Daraja is called, then sent once; its
    ``OriginatorConversationID`` is its id, so any later re-send is refused by Daraja as a
    duplicate instead of paying twice. The answer is the payout: ``pending`` (Daraja
    accepted it), ``rejected`` (refused, with its code), ``unknown`` (no answer: settled by
    Transaction Status) or ``created`` (Daraja's spike arrest: sent later). The outcome
    arrives by webhook (``payout.succeeded``, ``payout.failed``, ``payout.unknown``) and in
    ``GET /v1/payouts/{id}``. A retry with the same ``Idempotency-Key`` returns the same
    payout (header ``Idempotent-Replayed: true``).
    """
    key = validate_idempotency_key(idempotency_key)
    request = PayoutRequest.validate(
        state.accounts,
        phone=body.phone,
        amount=body.amount,
        command=body.command,
        remarks=body.remarks,
        occasion=body.occasion,
        account=body.account,
        metadata=body.metadata,
    )
    payout, created = await state.sender.create_payout(request, idempotency_key=key)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _payout(payout)


@router.post(
    PAYOUT_BATCHES_PATH,
    status_code=202,
    response_model=BatchOut,
    dependencies=[Authenticated],
    tags=["payouts"],
    responses={**_ERRORS, **_409},
)
async def create_batch(
    body: BatchCreate,
    response: Response,
    state: State,
    idempotency_key: Annotated[str | None, _KEY] = None,
) -> BatchOut:
    """Commit many payouts at once; the gateway sends them at ``PESA_PAYOUT_RATE``.

    Every row is stored (in one transaction) before any is sent, with the idempotency key
    ``batch:<batch_id>:<row>``: posting the batch again (after a crash of your client or
    of the gateway) stores only missing rows, and rows already sent are never sent again.
    The batch id is ``batch_id`` from the body, or the ``Idempotency-Key``. Answers ``202``
    with the batch's rows counted by status; follow it with ``GET
    /v1/payouts/batches/{batch_id}`` and ``GET /v1/payouts?batch_id=...``.
    """
    if body.batch_id is not None:
        batch_id: str | None = validate_text(body.batch_id, field="batch_id", max_length=100)
    else:
        batch_id = validate_idempotency_key(idempotency_key)
    if not batch_id:
        raise ValidationError("batch_id", "give batch_id or an Idempotency-Key header")
    if len(batch_id) > 100:
        raise ValidationError("Idempotency-Key", "a batch id is at most 100 characters")
    if len(body.payouts) > MAX_BATCH_ROWS:
        raise ValidationError("payouts", f"at most {MAX_BATCH_ROWS} rows per batch")
    rows = [
        PayoutRequest.validate(
            state.accounts,
            phone=row.phone,
            amount=row.amount,
            command=row.command,
            remarks=row.remarks,
            occasion=row.occasion,
            account=row.account,
            metadata=row.metadata,
            prefix=f"payouts.{index}.",
        ).spec()
        for index, row in enumerate(body.payouts)
    ]
    summary, created = await state.ledger.payouts.create_batch(batch_id, rows)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _batch(summary, created)


@router.get(
    "/v1/payouts/batches/{batch_id}",
    response_model=BatchOut,
    dependencies=[Authenticated],
    tags=["payouts"],
    responses={**_ERRORS, **_404},
)
async def get_batch(batch_id: str, state: State) -> BatchOut:
    """A batch's rows counted (and summed) by status."""
    summary = await state.ledger.payouts.batch_summary(batch_id)
    if summary.total == 0:
        raise ApiError(404, "not_found", f"no batch {batch_id!r}", field="batch_id")
    return _batch(summary)


@router.get(
    "/v1/payouts/{payout_id}",
    response_model=PayoutOut,
    dependencies=[Authenticated],
    tags=["payouts"],
    responses={**_ERRORS, **_404},
)
async def get_payout(payout_id: str, state: State) -> PayoutOut:
    """Read one payout."""
    payout = await state.ledger.payouts.get(payout_id)
    if payout is None:
        raise ApiError(404, "not_found", f"no payout {payout_id!r}", field="id")
    return _payout(payout)


@router.get(
    "/v1/payouts",
    response_model=PayoutPage,
    dependencies=[Authenticated],
    tags=["payouts"],
    responses=_ERRORS,
)
async def list_payouts(
    state: State,
    status: Annotated[TransferStatus | None, Query(description="only this status")] = None,
    phone: Annotated[str | None, Query(description="only this recipient")] = None,
    batch_id: Annotated[
        str | None, Query(description="only this batch's rows, in row order", max_length=100)
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PayoutPage:
    """List payouts, newest first (a batch's rows in row order), with cursor pagination."""
    items, next_cursor = await state.ledger.payouts.page(
        status=status,
        phone=normalize_phone_filter(phone),
        batch_id=batch_id,
        cursor=cursor,
        limit=limit,
    )
    return PayoutPage(data=[_payout(p) for p in items], next_cursor=next_cursor)


@router.post(
    "/v1/payments/{payment_id}/refund",
    status_code=201,
    response_model=RefundOut,
    dependencies=[Authenticated],
    tags=["refunds"],
    responses={
        **_ERRORS,
        **_404,
        409: {"model": ApiErrorBody, "description": "not refundable, or more than remains"},
    },
)
async def refund_payment(
    payment_id: str,
    response: Response,
    state: State,
    body: RefundCreate | None = None,
    idempotency_key: Annotated[str | None, _KEY] = None,
) -> RefundOut:
    """Give a customer's payment back (reversal, ``POST /mpesa/reversal/v1/request``).

    Never more than was paid: refunds of a payment that may still move money (everything
    but failed and rejected) count against it, checked in the database transaction that
    stores the refund, so concurrent requests cannot together exceed it. A part is refunded
    only with ``PESA_REFUND_PARTIAL=allow`` (whether Daraja reverses parts is undocumented).
    The payment needs its M-Pesa receipt (a payment settled by STK query has none). The
    outcome arrives by webhook (``refund.succeeded``, ``refund.failed``) and in ``GET
    /v1/refunds/{id}``.
    """
    refund, created = await start_refund(
        state, payment_id, body or RefundCreate(), idempotency_key, source="payment"
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _refund(refund)


@router.post(
    "/v1/receipts/{receipt_id}/refund",
    status_code=201,
    response_model=RefundOut,
    dependencies=[Authenticated],
    tags=["refunds"],
    responses={
        **_ERRORS,
        **_404,
        409: {"model": ApiErrorBody, "description": "not refundable, or more than remains"},
    },
)
async def refund_receipt(
    receipt_id: str,
    response: Response,
    state: State,
    body: RefundCreate | None = None,
    idempotency_key: Annotated[str | None, _KEY] = None,
) -> RefundOut:
    """Give a C2B receipt's money back (reversal of its TransID), as for payments.

    Only a receipt that counts may be refunded: one Daraja's Transaction Status confirmed,
    or one that counts unverified (its account has no initiator to ask; then it also has
    none to send a reversal, so in practice: confirmed). A receipt still waiting for
    Daraja, or refuted, is a 409: a forged confirmation never becomes a reversal. Never
    more than was paid, under concurrency; parts only with ``PESA_REFUND_PARTIAL=allow``.
    The account paid (by the receipt's ``BusinessShortCode``) must have an initiator.
    """
    refund, created = await start_refund(
        state, receipt_id, body or RefundCreate(), idempotency_key, source="receipt"
    )
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return _refund(refund)


@router.get(
    "/v1/refunds/{refund_id}",
    response_model=RefundOut,
    dependencies=[Authenticated],
    tags=["refunds"],
    responses={**_ERRORS, **_404},
)
async def get_refund(refund_id: str, state: State) -> RefundOut:
    """Read one refund."""
    refund = await state.ledger.refunds.get(refund_id)
    if refund is None:
        raise ApiError(404, "not_found", f"no refund {refund_id!r}", field="id")
    return _refund(refund)


@router.get(
    "/v1/refunds",
    response_model=RefundPage,
    dependencies=[Authenticated],
    tags=["refunds"],
    responses=_ERRORS,
)
async def list_refunds(
    state: State,
    payment_id: Annotated[
        str | None, Query(description="only this payment's refunds", max_length=40)
    ] = None,
    receipt_id: Annotated[
        str | None, Query(description="only this receipt's refunds", max_length=40)
    ] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RefundPage:
    """List refunds, newest first (of one payment or one receipt, when given)."""
    if payment_id is not None and receipt_id is not None:
        raise ApiError(
            422, "validation_error", "give payment_id or receipt_id, not both", field="receipt_id"
        )
    items, next_cursor = await state.ledger.refunds.page(
        source_id=payment_id or receipt_id, cursor=cursor, limit=limit
    )
    return RefundPage(data=[_refund(r) for r in items], next_cursor=next_cursor)


@router.get(
    "/v1/balance",
    response_model=BalanceOut,
    dependencies=[Authenticated],
    tags=["balance"],
    responses={
        **_ERRORS,
        202: {"model": BalanceOut, "description": "pending: no balance known yet, retry"},
        502: {"model": ApiErrorBody, "description": "Daraja refused, no balance known"},
        503: {"model": ApiErrorBody, "description": "Daraja rate limiting, no balance known"},
    },
)
async def get_balance(
    state: State,
    response: Response,
    account: Annotated[str | None, Query(description="the account (default: default)")] = None,
    max_age: Annotated[
        float,
        Query(ge=0, le=86400, description="a balance read this recently (seconds) will do"),
    ] = 0,
) -> BalanceOut:
    """The account's balances (Account Balance, ``POST /mpesa/accountbalance/v1/query``).

    Daraja answers a balance request only by a Result callback. The gateway sends one (or
    joins one already on its way) and waits up to ``PESA_BALANCE_WAIT`` seconds for it;
    with ``max_age`` a balance read that recently is answered at once. If Daraja has not
    answered in time, the last balance known is returned with ``fresh: false`` and its
    ``age_seconds`` (the request goes on: a later call sees its answer); with no balance
    known at all the answer is ``202`` with ``status: pending``, the request's id and a
    ``Retry-After``. When Daraja refuses the request and no balance is known: ``502``
    (``503`` with ``Retry-After`` for its spike arrest).
    """
    target = payout_account(state.accounts, account)
    shortcode = target.shortcode or ""
    balances = state.ledger.balances
    now = datetime.now(UTC)
    if max_age > 0:
        recent = await balances.latest(target.name, since=now - timedelta(seconds=max_age))
        if recent is not None:
            return _balance(recent, fresh=False)
    wait = state.settings.balance_wait
    read = await balances.in_flight(target.name, since=now - timedelta(seconds=wait))
    refused: Exception | None = None
    if read is None:
        read, refused = await _ask_balance(state, target.name, shortcode)
    if read is not None:
        with anyio.move_on_after(wait):
            while True:
                current = await balances.get(read.id)
                if current is None or current.status == "failed":
                    break
                if current.status == "succeeded":
                    return _balance(current, fresh=True)
                await anyio.sleep(_BALANCE_POLL)
    last = await balances.latest(target.name)
    if last is not None:
        return _balance(last, fresh=False)
    if read is not None:
        # Not a server error: the request is on its way and Daraja has not answered yet.
        response.status_code = 202
        response.headers["Retry-After"] = str(max(1, math.ceil(wait / 2)))
        return BalanceOut(
            status="pending",
            account=target.name,
            shortcode=shortcode,
            accounts=[],
            fresh=False,
            request_id=read.id,
        )
    if isinstance(refused, RateLimitError):
        wait_s = retry_after(state.reconciler.bucket)
        raise ApiError(
            503,
            "daraja_rate_limited",
            f"Daraja is rate limiting; no balance is known yet: retry after {wait_s} s",
            headers={"Retry-After": str(wait_s)},
        )
    raise ApiError(
        502, "daraja_error", f"Daraja refused the balance request: {refused}; no balance is known"
    )


async def _ask_balance(
    state: GatewayState, account: str, shortcode: str
) -> tuple[BalanceRead | None, Exception | None]:
    balances = state.ledger.balances
    read = await balances.request(account, shortcode)
    try:
        await state.reconciler.bucket.acquire()
        answer = await state.clients.for_account(account).account_balance(
            shortcode=shortcode,
            result_url=state.initiator_urls.result("balance"),
            timeout_url=state.initiator_urls.timeout("balance"),
        )
    except (DarajaError, TransportError, PesaError) as err:
        code = err.error_code if isinstance(err, DarajaError) else None
        log.warning("balance request refused: %s", err)
        if isinstance(err, RateLimitError):
            state.reconciler.bucket.pause(5.0)
        await balances.mark_failed(read.id, code, str(err))
        return None, err
    await balances.mark_sent(read.id, answer.conversation_id, answer.originator_conversation_id)
    return read, None


def _balance(read: BalanceRead, *, fresh: bool) -> BalanceOut:
    read_at = read.read_at or read.answered_at or read.asked_at
    age = max(0.0, (datetime.now(UTC) - read_at).total_seconds())
    return BalanceOut.model_validate(
        {
            "account": read.account,
            "shortcode": read.shortcode,
            "accounts": read.accounts,
            "read_at": read_at.isoformat(),
            "age_seconds": round(age, 3),
            "fresh": fresh,
            "request_id": read.id,
        }
    )
