"""The JSON shapes of the gateway's REST API (requests, responses, errors), for OpenAPI too."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ApiErrorBody",
    "ApiErrorDetail",
    "EventOut",
    "EventPage",
    "HealthOut",
    "PaymentCreate",
    "PaymentOut",
    "PaymentPage",
]

PaymentStatusName = Literal["created", "pending", "succeeded", "failed", "rejected", "unknown"]


class PaymentCreate(BaseModel):
    """The body of ``POST /v1/payments``: ask a customer to pay by STK push.

    Send an ``Idempotency-Key`` header with it: retrying the same request with the same key
    returns the same payment and sends one STK push; the same key with different
    parameters is refused with 409.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(
        description="the payer's number in any Safaricom format (0712..., +254712..., 2541...)",
        examples=["254708374149"],
    )
    # strict: "100" or 100.5 must not silently become a whole number of shillings.
    amount: int = Field(strict=True, description="whole shillings", examples=[100])
    account_reference: str = Field(
        description="shown to the customer in the prompt (at most 12 characters)",
        examples=["INV0042"],
    )
    description: str = Field(
        description="TransactionDesc (at most 13 characters)", examples=["School fees"]
    )
    metadata: dict[str, Any] | None = Field(
        None, description="your own data, stored and returned with the payment and its webhooks"
    )


class PaymentOut(BaseModel):
    """A payment as the ledger records it."""

    id: str = Field(examples=["pay_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    status: PaymentStatusName
    phone: str
    amount: int
    account_reference: str
    description: str
    metadata: dict[str, Any] | None = None
    checkout_request_id: str | None = None
    merchant_request_id: str | None = None
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = None
    failure_reason: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class PaymentPage(BaseModel):
    """One page of ``GET /v1/payments``; pass ``next_cursor`` as ``cursor`` for the next."""

    data: list[PaymentOut]
    next_cursor: str | None = None


class EventOut(BaseModel):
    """One event of the outbox (also the body of a webhook)."""

    id: str = Field(examples=["evt_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    type: str = Field(examples=["payment.succeeded"])


class EventPage(BaseModel):
    """One page of ``GET /v1/events``; pass ``next_cursor`` as ``after`` for the next."""

    data: list[dict[str, Any]]
    next_cursor: str | None = None


class HealthOut(BaseModel):
    """``GET /healthz``: the process is up and its database answers."""

    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    environment: str


class ApiErrorDetail(BaseModel):
    """What went wrong, in words a developer can act on."""

    type: str = Field(examples=["validation_error"])
    message: str
    field: str | None = None
    rule: str | None = None


class ApiErrorBody(BaseModel):
    """Every error answer of the REST API has this shape."""

    error: ApiErrorDetail
