"""The JSON shapes of the gateway's REST API (requests, responses, errors): one definition.

The gateway serves them (and documents them in its OpenAPI schema); the REST client
(:class:`pesa.gateway_client.GatewayClient`) parses them. Pure pydantic: no server needed.
"""

from __future__ import annotations

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
    checkout_request_id_verified: bool = Field(
        True,
        description="false while the CheckoutRequestID was learnt from a callback (the push's "
        "answer was lost) and no STK query by it has confirmed it",
    )
    merchant_request_id: str | None = None
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = None
    paid_amount: int | str | None = Field(
        None,
        description="the amount Daraja reported paid (whole shillings, or an exact decimal "
        "string), when it reported one",
    )
    paid_phone: str | None = Field(None, description="the phone Daraja reported (may be masked)")
    transaction_date: str | None = Field(None, description="M-Pesa's TransactionDate (ISO 8601)")
    failure_reason: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    evidence_callback_id: str | None = Field(
        None,
        description="a stored success callback that could not be cross-checked and waits for "
        "Daraja's STK query to settle the payment",
    )
    # Timestamps are passed through as the ledger writes them (ISO 8601 with the offset), so
    # that the API and the webhooks show byte-identical values.
    created_at: str = Field(examples=["2026-11-29T08:23:01.120000+00:00"])
    updated_at: str = Field(examples=["2026-11-29T08:23:02.480000+00:00"])


class PaymentPage(BaseModel):
    """One page of ``GET /v1/payments``; pass ``next_cursor`` as ``cursor`` for the next."""

    data: list[PaymentOut]
    next_cursor: str | None = None


class EventOut(BaseModel):
    """One event of the outbox: exactly the body a webhook delivers."""

    id: str = Field(description="stable across redeliveries", examples=["evt_01JDZ3Q4W8K6Y2V0"])
    type: str = Field(examples=["payment.succeeded"])
    created_at: str = Field(examples=["2026-11-29T08:23:02.480000+00:00"])
    data: dict[str, Any] = Field(description='{"payment": {...}} as of this event')


class EventPage(BaseModel):
    """One page of ``GET /v1/events``; pass ``next_cursor`` as ``after`` for the next."""

    data: list[EventOut]
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
