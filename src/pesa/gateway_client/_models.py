"""The JSON shapes of the gateway's REST API (requests, responses, errors): one definition.

The gateway serves them (and documents them in its OpenAPI schema); the REST client
(:class:`pesa.gateway_client.GatewayClient`) parses them. Pure pydantic: no server needed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccountList",
    "AccountOut",
    "ApiErrorBody",
    "ApiErrorDetail",
    "EventOut",
    "EventPage",
    "ExpectedPaymentCreate",
    "ExpectedPaymentOut",
    "ExpectedPaymentPage",
    "HealthOut",
    "LookupCreate",
    "LookupOut",
    "PaymentCreate",
    "PaymentOut",
    "PaymentPage",
    "ReceiptOut",
    "ReceiptPage",
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
    account: str | None = Field(
        None,
        description="the named Daraja account to push on (GET /v1/accounts); the default "
        "account when omitted",
        examples=["paybill"],
    )


class PaymentOut(BaseModel):
    """A payment as the ledger records it."""

    id: str = Field(examples=["pay_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    status: PaymentStatusName
    account: str | None = Field(
        None,
        description="the Daraja account it was asked on (null: made before accounts existed, "
        "the default account then)",
    )
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


ReceiptStatusName = Literal["received", "confirmed", "unverified", "refuted"]
ExpectedStatusName = Literal["open", "partially_paid", "paid", "overpaid", "cancelled"]
Money = int | str


class ReceiptOut(BaseModel):
    """A C2B payment (money in from the phone's menu), as the ledger records it."""

    id: str = Field(examples=["rcp_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    trans_id: str = Field(
        description="the M-Pesa receipt number (TransID)", examples=["SG67QK2M1Z"]
    )
    status: ReceiptStatusName = Field(
        description="received (a confirmation, awaiting Daraja's Transaction Status), "
        "confirmed (Daraja confirmed it), unverified (a confirmation nobody could check) or "
        "refuted (Daraja says it does not exist, or differs)"
    )
    verified: bool = Field(description="true once Daraja confirmed it (status confirmed)")
    source: str = Field(description="confirmation, or lookup (found by Transaction Status)")
    account: str | None = Field(None, description="the account paid (null: not configured)")
    shortcode: str
    amount: Money = Field(description="shillings (an exact decimal string if not whole)")
    account_reference: str | None = Field(None, description="the account number typed")
    transaction_type: str | None = None
    invoice_number: str | None = None
    third_party_trans_id: str | None = None
    msisdn: str | None = Field(
        None, description="the payer as Daraja sent it: masked (C2B v2) or a SHA-256 hash (v1)"
    )
    phone: str | None = Field(None, description="the full number, when a lookup learnt it")
    payer_name: str | None = None
    trans_time: str | None = Field(None, description="when the customer paid (ISO 8601)")
    org_account_balance: Money | None = None
    expected_payment_id: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    created_at: str
    updated_at: str


class ReceiptPage(BaseModel):
    """One page of ``GET /v1/receipts``; pass ``next_cursor`` as ``cursor`` for the next."""

    data: list[ReceiptOut]
    next_cursor: str | None = None


class LookupCreate(BaseModel):
    """The body of ``POST /v1/receipts/lookup``: "I paid, here is my code"."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    trans_id: str = Field(
        min_length=1,
        max_length=32,
        description="the M-Pesa receipt number the customer gives (SMS code)",
        examples=["SG67QK2M1Z"],
    )
    account: str | None = Field(
        None, description="the account paid (one with an initiator); the default when omitted"
    )
    account_reference: str | None = Field(
        None,
        max_length=20,
        description="the account number the customer says they paid for: Transaction Status "
        "does not return it, so a receipt found by lookup takes this one",
    )


class LookupOut(BaseModel):
    """A Transaction Status lookup and the receipt it is about (once known)."""

    lookup: dict[str, Any] | None = Field(
        None,
        description="the query: outcome sent (the answer comes by callback), confirmed, "
        "not_found, refuted, failed, timeout, error or rate_limited",
    )
    receipt: ReceiptOut | None = None


class ExpectedPaymentCreate(BaseModel):
    """The body of ``POST /v1/expected-payments``: "I expect KES amount for reference R"."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    account_reference: str = Field(
        min_length=1,
        max_length=20,
        description="the account number the customer types (BillRefNumber, at most 20 "
        "characters); matched on its letters and digits, case ignored",
        examples=["INV-1042"],
    )
    amount: int = Field(strict=True, ge=1, le=99_999_999_999, description="whole shillings")
    account: str | None = Field(
        None, description="the PayBill expected to receive it; the default account when omitted"
    )
    description: str | None = Field(None, max_length=255)
    metadata: dict[str, Any] | None = Field(
        None, description="your own data, returned with it and its webhooks"
    )


class ExpectedPaymentOut(BaseModel):
    """An expected payment and what its receipts add up to."""

    id: str = Field(examples=["exp_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    status: ExpectedStatusName
    account: str
    account_reference: str
    amount: int
    paid_amount: Money = Field(description="received: confirmed (and unverified) receipts")
    pending_amount: Money = Field(
        description="announced by confirmations still awaiting Daraja's confirmation"
    )
    outstanding_amount: Money
    overpaid_amount: Money
    description: str | None = None
    metadata: dict[str, Any] | None = None
    flagged: bool = False
    flag_reason: str | None = None
    created_at: str
    updated_at: str
    receipts: list[ReceiptOut] | None = Field(
        None, description="its receipts (GET /v1/expected-payments/{id} only)"
    )


class ExpectedPaymentPage(BaseModel):
    """One page of ``GET /v1/expected-payments``."""

    data: list[ExpectedPaymentOut]
    next_cursor: str | None = None


class AccountOut(BaseModel):
    """A named Daraja account of this gateway (never its secrets)."""

    name: str = Field(examples=["paybill"])
    default: bool = Field(description="calls that name no account use this one")
    shortcode: str | None = Field(None, examples=["600997"])
    till: str | None = None
    stk: bool = Field(description="takes STK pushes (has a shortcode and its passkey)")
    initiator: bool = Field(
        description="has an initiator: Transaction Status, B2C, balance and reversal work"
    )
    c2b_register: bool = Field(description="its C2B URLs are registered when the gateway starts")
    c2b_version: Literal[1, 2]
    c2b_response_type: Literal["Completed", "Cancelled"]
    c2b_registration: dict[str, Any] | None = Field(
        None,
        description="where the registration of its C2B URLs at start stands (status "
        "pending, registered or failed; detail; at)",
    )


class AccountList(BaseModel):
    """``GET /v1/accounts``."""

    data: list[AccountOut]


class EventOut(BaseModel):
    """One event of the outbox: exactly the body a webhook delivers."""

    id: str = Field(description="stable across redeliveries", examples=["evt_01JDZ3Q4W8K6Y2V0"])
    type: str = Field(examples=["payment.succeeded"])
    created_at: str = Field(examples=["2026-11-29T08:23:02.480000+00:00"])
    data: dict[str, Any] = Field(
        description='{"payment": {...}} (or "receipt", "expected_payment", ...) as of this event'
    )


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
