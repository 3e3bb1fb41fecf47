"""The JSON shapes of payouts, batches, refunds and balances in the REST API: one definition.

The gateway serves them (and documents them in its OpenAPI schema); clients parse them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AccountBalanceOut",
    "BalanceOut",
    "BatchCreate",
    "BatchOut",
    "PayoutCreate",
    "PayoutOut",
    "PayoutPage",
    "RefundCreate",
    "RefundOut",
    "RefundPage",
]

TransferStatusName = Literal["created", "pending", "succeeded", "failed", "rejected", "unknown"]
Command = Literal["BusinessPayment", "SalaryPayment", "PromotionPayment"]


class PayoutCreate(BaseModel):
    """The body of ``POST /v1/payouts`` (and one row of a batch): pay a customer (B2C).

    Send an ``Idempotency-Key`` header with it: a retry with the same key returns the same
    payout and sends nothing; the same key with other parameters is refused with 409.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    phone: str = Field(
        description="the recipient's number in any Safaricom format", examples=["254708374149"]
    )
    amount: int = Field(strict=True, description="whole shillings, 10 to 250,000", examples=[1500])
    command: Command = Field(
        "BusinessPayment",
        description="BusinessPayment, SalaryPayment or PromotionPayment (Daraja's CommandID)",
    )
    remarks: str = Field(description="2 to 100 characters", examples=["November salary"])
    occasion: str | None = Field(None, description="at most 100 characters")
    account: str | None = Field(None, description="the account paying (default: default)")
    metadata: dict[str, Any] | None = Field(
        None, description="your own data, returned with the payout and its webhooks"
    )


class PayoutOut(BaseModel):
    """A payout as the ledger records it."""

    id: str = Field(examples=["po_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    status: TransferStatusName
    phone: str
    amount: int
    command_id: str
    remarks: str
    occasion: str | None = None
    account: str
    shortcode: str
    metadata: dict[str, Any] | None = None
    originator_conversation_id: str | None = Field(
        None, description="the payout's id: Daraja refuses a second request with it"
    )
    conversation_id: str | None = None
    conversation_id_verified: bool = Field(
        True, description="false while the ConversationID was learnt from a Result"
    )
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = Field(None, description="the M-Pesa receipt of the payment")
    paid_amount: int | str | None = None
    recipient_name: str | None = Field(
        None, description="the recipient's registered name as Daraja reported it"
    )
    completed_at: str | None = None
    failure_reason: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    attempts: int = Field(0, description="requests sent (a re-send is a duplicate to Daraja)")
    first_sent_at: str | None = Field(
        None,
        description="when the first request was sent (null until then); PESA_PAYOUT_DEADLINE "
        "counts from it",
    )
    evidence_callback_id: str | None = None
    batch_id: str | None = None
    batch_row: int | None = None
    created_at: str
    updated_at: str


class PayoutPage(BaseModel):
    """One page of ``GET /v1/payouts``; pass ``next_cursor`` as ``cursor`` for the next."""

    data: list[PayoutOut]
    next_cursor: str | None = None


class BatchCreate(BaseModel):
    """The body of ``POST /v1/payouts/batches``: many payouts, sent at the configured rate.

    Row ``n`` gets the idempotency key ``batch:<batch_id>:<n>``: posting the same batch
    again creates only missing rows and pays nobody twice.
    """

    model_config = ConfigDict(extra="forbid")

    batch_id: str | None = Field(
        None,
        description="your id for the batch (else the Idempotency-Key header); at most 100",
        examples=["salaries-2026-11"],
    )
    payouts: list[PayoutCreate] = Field(description="the rows, at most 10,000")


class BatchOut(BaseModel):
    """A batch: its rows counted by status."""

    batch_id: str
    total: int
    settled: int = Field(description="rows succeeded, failed or rejected")
    created: int = Field(0, description="rows this request stored (0 on a repeat)")
    by_status: dict[str, int]
    amount_by_status: dict[str, int]
    created_at: str | None = None


class RefundCreate(BaseModel):
    """The body of ``POST /v1/payments/{id}/refund``: give a customer's money back."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    amount: int | None = Field(
        None,
        strict=True,
        description="whole shillings; omitted: everything not yet refunded (a part only with "
        "PESA_REFUND_PARTIAL=allow)",
    )
    remarks: str = Field("Refund", description="2 to 100 characters")
    metadata: dict[str, Any] | None = None


class RefundOut(BaseModel):
    """A refund (reversal) as the ledger records it."""

    id: str = Field(examples=["rf_01JDZ3Q4W8K6Y2V0C5N7R9T1XB"])
    status: TransferStatusName
    source_id: str = Field(description="the payment (pay_...) or receipt refunded")
    payment_id: str | None = None
    original_receipt: str = Field(description="the M-Pesa receipt reversed")
    receiver_party: str
    phone: str | None = None
    amount: int
    remarks: str
    metadata: dict[str, Any] | None = None
    originator_conversation_id: str | None = None
    conversation_id: str | None = None
    conversation_id_verified: bool = True
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = Field(None, description="the reversal's own M-Pesa receipt")
    paid_amount: int | str | None = None
    counterparty: str | None = None
    completed_at: str | None = None
    failure_reason: str | None = None
    flagged: bool = False
    flag_reason: str | None = None
    attempts: int = 0
    first_sent_at: str | None = Field(
        None, description="when the reversal was sent; PESA_PAYOUT_DEADLINE counts from it"
    )
    evidence_callback_id: str | None = None
    created_at: str
    updated_at: str


class RefundPage(BaseModel):
    """One page of ``GET /v1/refunds``."""

    data: list[RefundOut]
    next_cursor: str | None = None


class AccountBalanceOut(BaseModel):
    """One account of the shortcode (``Name|Currency|Available|...``): exact decimal strings."""

    name: str = Field(examples=["Utility Account"])
    currency: str = Field(examples=["KES"])
    available: str = Field(examples=["998500.00"])
    uncleared: str | None = None
    reserved: str | None = None


class BalanceOut(BaseModel):
    """``GET /v1/balance``: the shortcode's balances and when M-Pesa read them."""

    status: Literal["read", "pending"] = Field(
        "read",
        description="read: the balances below; pending (HTTP 202): Daraja has not answered "
        "yet and no balance is known, ask again after Retry-After",
    )
    account: str
    shortcode: str
    accounts: list[AccountBalanceOut]
    read_at: str | None = Field(None, description="when M-Pesa read the balances (BOCompletedTime)")
    age_seconds: float | None = Field(None, description="seconds since read_at, when answered")
    fresh: bool = Field(description="read for this request (false: the last balance known)")
    request_id: str = Field(description="the balance request whose Result this is (or awaited)")
