"""The tables of ``pesa.django`` in the project's own database (SQLite or PostgreSQL).

They hold what the gateway's ledger holds, with the same column names, so that the same pure
rules (:mod:`pesa.ledger`) read and write them:

- :class:`Payment`: one STK payment (status, Daraja's ids, receipt, flags, reconciliation
  bookkeeping); ids look like the gateway's (``pay_01J...``);
- :class:`Callback`: every inbound callback, raw, with its outcome (stored first, always);
- :class:`PaymentEvent`: one row per event of a transition (``payment.succeeded`` ...), the
  record behind each signal;
- :class:`StkQuery`: every STK query and Daraja's answer (which worker asked, when).

- :class:`Receipt`: one C2B payment into the shortcode, once per ``TransID``
  (:mod:`pesa.ledger._receipts`' rules), with :class:`ReceiptEvent` behind its signals;
- :class:`Payout`: one B2C payout (:mod:`pesa.ledger._payout_states`' rules), with
  :class:`PayoutEvent` behind its signals and :class:`TransactionStatusQuery` for each
  Transaction Status query that settles a lost Result.

:class:`Callback` keeps every inbound body raw, whatever its ``kind`` (``stk``,
``c2b_confirm``, ``c2b_validate``, ``b2c_result``, ``b2c_timeout``, ``status_result``,
``status_timeout``).

Change rows through :mod:`pesa.django` (``request_payment``, the callback view,
``pesa_reconcile``), never by saving a model: every transition is guarded by ``version``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import models

from pesa.ledger import PaymentStatus, ReceiptStatus, TransferStatus
from pesa.ledger._ids import new_id

__all__ = [
    "Callback",
    "Payment",
    "PaymentEvent",
    "Payout",
    "PayoutEvent",
    "Receipt",
    "ReceiptEvent",
    "StkQuery",
    "TransactionStatusQuery",
]

# Statuses, outcomes and event types are plain text without ``choices``: the pure layer may
# add one (a new event type) without a migration here. They are PaymentStatus, EventType and
# CallbackStatus values (plus "error": a callback whose processing failed, stored raw).


def _payment_id() -> str:
    return new_id("pay")


class Payment(models.Model):
    """An STK payment (M-Pesa Express): what was asked, and where the money is.

    ``amount`` is what was requested, in whole shillings; ``paid_amount`` and ``paid_phone``
    are what Daraja reported on success. A payment is final once ``succeeded``, ``failed``
    or ``rejected`` (:attr:`is_final`); ``flagged`` marks one a person should look at.
    """

    id: models.CharField[str, str] = models.CharField(
        primary_key=True, max_length=40, default=_payment_id, editable=False
    )
    idempotency_key: models.CharField[str | None, str | None] = models.CharField(
        max_length=255, unique=True, null=True, blank=True
    )
    request_hash: models.CharField[str, str] = models.CharField(max_length=64)
    status: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    phone: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    amount: models.BigIntegerField[int, int] = models.BigIntegerField()
    account_reference: models.CharField[str, str] = models.CharField(max_length=64, db_index=True)
    description: models.CharField[str, str] = models.CharField(max_length=255)
    metadata: models.JSONField[Any, Any] = models.JSONField(null=True, blank=True)
    checkout_request_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, unique=True, null=True, blank=True
    )
    checkout_request_id_verified: models.BooleanField[bool, bool] = models.BooleanField(
        default=True
    )
    merchant_request_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True
    )
    result_code: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    result_desc: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    receipt: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True, db_index=True
    )
    paid_amount: models.DecimalField[Decimal | None, Decimal | None] = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    paid_phone: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    transaction_date: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    failure_reason: models.TextField[str | None, str | None] = models.TextField(
        null=True, blank=True
    )
    flagged: models.BooleanField[bool, bool] = models.BooleanField(default=False, db_index=True)
    flag_reason: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    # Settlement: a success callback kept as evidence waits for an STK query at verify_at.
    evidence_callback_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=40, null=True, blank=True
    )
    verify_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True, db_index=True
    )
    verify_since: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    # Reconciliation bookkeeping: when to query next, who holds the claim until when.
    next_check_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    claimed_until: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    check_count: models.IntegerField[int, int] = models.IntegerField(default=0)
    version: models.IntegerField[int, int] = models.IntegerField(default=1)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(db_index=True)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_check_at"], name="pesa_pay_status_next")]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} KES {self.status}"

    @property
    def is_final(self) -> bool:
        """``True`` once the payment is succeeded, failed or rejected."""
        return self.status in (
            PaymentStatus.SUCCEEDED,
            PaymentStatus.FAILED,
            PaymentStatus.REJECTED,
        )

    @property
    def is_paid(self) -> bool:
        """``True`` when the customer paid (``succeeded``)."""
        return self.status == PaymentStatus.SUCCEEDED

    def to_dict(self) -> dict[str, Any]:
        """The same JSON shape as the gateway's payments (and its webhook events)."""
        paid = self.paid_amount
        return {
            "id": self.id,
            "status": self.status,
            "phone": self.phone,
            "amount": self.amount,
            "account_reference": self.account_reference,
            "description": self.description,
            "metadata": self.metadata,
            "checkout_request_id": self.checkout_request_id,
            "checkout_request_id_verified": self.checkout_request_id_verified,
            "merchant_request_id": self.merchant_request_id,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "receipt": self.receipt,
            "paid_amount": None
            if paid is None
            else (int(paid) if paid == paid.to_integral_value() else str(paid)),
            "paid_phone": self.paid_phone,
            "transaction_date": None
            if self.transaction_date is None
            else self.transaction_date.isoformat(),
            "failure_reason": self.failure_reason,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "evidence_callback_id": self.evidence_callback_id,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


class Callback(models.Model):
    """An inbound callback exactly as received, with what it did (stored before the 200)."""

    id: models.CharField[str, str] = models.CharField(
        primary_key=True, max_length=40, editable=False
    )
    kind: models.CharField[str, str] = models.CharField(max_length=16, default="stk")
    body: models.BinaryField[bytes, bytes | memoryview] = models.BinaryField()
    source_ip: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True
    )
    received_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(db_index=True)
    outcome: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    detail: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    checkout_request_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True, db_index=True
    )
    payment: models.ForeignKey[Payment | None, Payment | None] = models.ForeignKey(
        Payment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="callbacks",
        db_constraint=False,
    )
    receipt: models.ForeignKey[Receipt | None, Receipt | None] = models.ForeignKey(
        "Receipt",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="callbacks",
        db_constraint=False,
    )
    payout: models.ForeignKey[Payout | None, Payout | None] = models.ForeignKey(
        "Payout",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="callbacks",
        db_constraint=False,
    )

    class Meta:
        ordering = ["received_at", "id"]

    def __str__(self) -> str:
        return f"{self.id} {self.kind} {self.outcome}"

    @property
    def text(self) -> str:
        """The body as text (for the admin)."""
        return bytes(self.body).decode("utf-8", errors="replace")


class PaymentEvent(models.Model):
    """One event of a transition: the record behind each signal (sent once, after commit)."""

    seq: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    id: models.CharField[str, str] = models.CharField(max_length=40, unique=True, editable=False)
    payment: models.ForeignKey[Payment, Payment] = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="events"
    )
    type: models.CharField[str, str] = models.CharField(max_length=32, db_index=True)
    detail: models.TextField[str, str] = models.TextField(blank=True, default="")
    data: models.JSONField[Any, Any] = models.JSONField()
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class StkQuery(models.Model):
    """One STK query and Daraja's answer (shown on the payment's page)."""

    seq: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    id: models.CharField[str, str] = models.CharField(max_length=40, unique=True, editable=False)
    payment: models.ForeignKey[Payment, Payment] = models.ForeignKey(
        Payment, on_delete=models.PROTECT, related_name="stk_queries"
    )
    checkout_request_id: models.CharField[str, str] = models.CharField(max_length=128)
    asked_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    answered_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    worker: models.CharField[str, str] = models.CharField(max_length=100, blank=True, default="")
    outcome: models.CharField[str, str] = models.CharField(max_length=16)
    result_code: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    result_desc: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    detail: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        verbose_name = "STK query"
        verbose_name_plural = "STK queries"

    def __str__(self) -> str:
        return f"{self.id} {self.outcome}"


def _number(value: Decimal | None) -> int | str | None:
    # Money never becomes a float: whole shillings as int, anything else as an exact string.
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else str(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class Receipt(models.Model):
    """A C2B payment into the shortcode (PayBill or till), recorded once per ``TransID``.

    ``status`` is :class:`pesa.ledger.ReceiptStatus`: ``unverified`` (a confirmation: it
    counts, but Daraja signed nothing), ``received`` (awaiting Daraja's word, does not count
    yet), ``confirmed`` or ``refuted``. ``msisdn`` is the payer as Daraja sent it (masked in
    C2B v2, a SHA-256 hash in v1); ``phone`` is the full number when Daraja gave one.
    """

    id: models.CharField[str, str] = models.CharField(
        primary_key=True, max_length=40, editable=False
    )
    trans_id: models.CharField[str, str] = models.CharField(max_length=32, unique=True)
    status: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    source: models.CharField[str, str] = models.CharField(max_length=16, default="confirmation")
    shortcode: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    amount: models.DecimalField[Decimal, Decimal] = models.DecimalField(
        max_digits=16, decimal_places=2
    )
    account_reference: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True, db_index=True
    )
    transaction_type: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    invoice_number: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True
    )
    third_party_trans_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True
    )
    msisdn: models.CharField[str | None, str | None] = models.CharField(
        max_length=80, null=True, blank=True
    )
    phone: models.CharField[str | None, str | None] = models.CharField(
        max_length=16, null=True, blank=True, db_index=True
    )
    phone_hash: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True, db_index=True
    )
    msisdn_prefix: models.CharField[str | None, str | None] = models.CharField(
        max_length=16, null=True, blank=True
    )
    msisdn_suffix: models.CharField[str | None, str | None] = models.CharField(
        max_length=16, null=True, blank=True
    )
    payer_name: models.CharField[str | None, str | None] = models.CharField(
        max_length=255, null=True, blank=True
    )
    trans_time: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    org_account_balance: models.DecimalField[Decimal | None, Decimal | None] = models.DecimalField(
        max_digits=18, decimal_places=2, null=True, blank=True
    )
    flagged: models.BooleanField[bool, bool] = models.BooleanField(default=False, db_index=True)
    flag_reason: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    version: models.IntegerField[int, int] = models.IntegerField(default=1)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(db_index=True)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.trans_id} {self.amount} KES {self.status}"

    @property
    def counts(self) -> bool:
        """Whether the receipt counts as money received (confirmed or unverified)."""
        return self.status in (ReceiptStatus.CONFIRMED, ReceiptStatus.UNVERIFIED)

    def to_dict(self) -> dict[str, Any]:
        """The same JSON shape as the gateway's receipts (and their webhook events)."""
        return {
            "id": self.id,
            "trans_id": self.trans_id,
            "status": self.status,
            "verified": self.status == ReceiptStatus.CONFIRMED,
            "source": self.source,
            "shortcode": self.shortcode,
            "amount": _number(self.amount),
            "account_reference": self.account_reference,
            "transaction_type": self.transaction_type,
            "invoice_number": self.invoice_number,
            "third_party_trans_id": self.third_party_trans_id,
            "msisdn": self.msisdn,
            "phone": self.phone,
            "payer_name": self.payer_name,
            "trans_time": _iso(self.trans_time),
            "org_account_balance": _number(self.org_account_balance),
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


class ReceiptEvent(models.Model):
    """One event of a receipt (``receipt.received``...): the record behind each signal."""

    seq: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    id: models.CharField[str, str] = models.CharField(max_length=40, unique=True, editable=False)
    receipt: models.ForeignKey[Receipt, Receipt] = models.ForeignKey(
        Receipt, on_delete=models.PROTECT, related_name="events"
    )
    type: models.CharField[str, str] = models.CharField(max_length=40, db_index=True)
    detail: models.TextField[str, str] = models.TextField(blank=True, default="")
    data: models.JSONField[Any, Any] = models.JSONField()
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class Payout(models.Model):
    """A B2C payout: money the business sends to a phone.

    Its ``originator_conversation_id`` is its own id (stable: Daraja refuses a copy as a
    duplicate). ``status`` is :class:`pesa.ledger.TransferStatus`; a payout is final once
    ``succeeded``, ``failed`` or ``rejected``. ``counterparty`` is the recipient's name as
    Daraja reported it (``"254708374149 - JOHN DOE"``).
    """

    id: models.CharField[str, str] = models.CharField(
        primary_key=True, max_length=40, editable=False
    )
    idempotency_key: models.CharField[str | None, str | None] = models.CharField(
        max_length=255, unique=True, null=True, blank=True
    )
    request_hash: models.CharField[str, str] = models.CharField(max_length=64)
    status: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    phone: models.CharField[str, str] = models.CharField(max_length=16, db_index=True)
    amount: models.BigIntegerField[int, int] = models.BigIntegerField()
    command_id: models.CharField[str, str] = models.CharField(max_length=32)
    remarks: models.CharField[str, str] = models.CharField(max_length=100)
    occasion: models.CharField[str | None, str | None] = models.CharField(
        max_length=100, null=True, blank=True
    )
    shortcode: models.CharField[str, str] = models.CharField(max_length=16)
    metadata: models.JSONField[Any, Any] = models.JSONField(null=True, blank=True)
    originator_conversation_id: models.CharField[str, str] = models.CharField(
        max_length=128, unique=True
    )
    conversation_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True, db_index=True
    )
    ids_verified: models.BooleanField[bool, bool] = models.BooleanField(default=True)
    result_code: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    result_desc: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    receipt: models.CharField[str | None, str | None] = models.CharField(
        max_length=64, null=True, blank=True, db_index=True
    )
    paid_amount: models.DecimalField[Decimal | None, Decimal | None] = models.DecimalField(
        max_digits=14, decimal_places=2, null=True, blank=True
    )
    counterparty: models.CharField[str | None, str | None] = models.CharField(
        max_length=255, null=True, blank=True
    )
    completed_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    failure_reason: models.TextField[str | None, str | None] = models.TextField(
        null=True, blank=True
    )
    flagged: models.BooleanField[bool, bool] = models.BooleanField(default=False, db_index=True)
    flag_reason: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    attempts: models.IntegerField[int, int] = models.IntegerField(default=0)
    # When the one B2C request was counted, before it left: PESA_PAYOUT_DEADLINE counts
    # from here (the ledger's rule, pesa.ledger.transfer_deadline).
    first_sent_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    # Settlement: a Result kept as evidence waits for Transaction Status at verify_at.
    evidence_callback_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=40, null=True, blank=True
    )
    verify_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True, db_index=True
    )
    verify_since: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    expired_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    # Reconciliation bookkeeping: when to ask next, who holds the claim until when.
    next_check_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    claimed_until: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    check_count: models.IntegerField[int, int] = models.IntegerField(default=0)
    version: models.IntegerField[int, int] = models.IntegerField(default=1)
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(db_index=True)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_check_at"], name="pesa_po_status_next")]

    def __str__(self) -> str:
        return f"{self.id} {self.amount} KES {self.status}"

    @property
    def is_final(self) -> bool:
        """``True`` once the payout is succeeded, failed or rejected."""
        return self.status in (
            TransferStatus.SUCCEEDED,
            TransferStatus.FAILED,
            TransferStatus.REJECTED,
        )

    def to_dict(self) -> dict[str, Any]:
        """The same JSON shape as the gateway's payouts (and their webhook events)."""
        return {
            "id": self.id,
            "status": self.status,
            "amount": self.amount,
            "metadata": self.metadata,
            "phone": self.phone,
            "command_id": self.command_id,
            "remarks": self.remarks,
            "occasion": self.occasion,
            "shortcode": self.shortcode,
            "originator_conversation_id": self.originator_conversation_id,
            "conversation_id": self.conversation_id,
            "conversation_id_verified": self.ids_verified,
            "result_code": self.result_code,
            "result_desc": self.result_desc,
            "receipt": self.receipt,
            "paid_amount": _number(self.paid_amount),
            "recipient_name": self.counterparty,
            "completed_at": _iso(self.completed_at),
            "failure_reason": self.failure_reason,
            "flagged": self.flagged,
            "flag_reason": self.flag_reason,
            "attempts": self.attempts,
            "first_sent_at": _iso(self.first_sent_at),
            "evidence_callback_id": self.evidence_callback_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


class PayoutEvent(models.Model):
    """One event of a payout (``payout.succeeded``...): the record behind each signal."""

    seq: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    id: models.CharField[str, str] = models.CharField(max_length=40, unique=True, editable=False)
    payout: models.ForeignKey[Payout, Payout] = models.ForeignKey(
        Payout, on_delete=models.PROTECT, related_name="events"
    )
    type: models.CharField[str, str] = models.CharField(max_length=32, db_index=True)
    detail: models.TextField[str, str] = models.TextField(blank=True, default="")
    data: models.JSONField[Any, Any] = models.JSONField()
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"


class TransactionStatusQuery(models.Model):
    """One Transaction Status query about a payout, and how Daraja answered.

    The answer comes by callback and is matched by the ConversationID Daraja gave *this
    query* (``conversation_id``): nobody else has seen it, which is why it is trusted.
    ``outcome``: ``sent``, ``answered``, ``timed_out``, ``error`` or ``rate_limited``.
    """

    seq: models.BigAutoField[int, int] = models.BigAutoField(primary_key=True)
    id: models.CharField[str, str] = models.CharField(max_length=40, unique=True, editable=False)
    payout: models.ForeignKey[Payout, Payout] = models.ForeignKey(
        Payout, on_delete=models.PROTECT, related_name="status_queries"
    )
    payout_id: str
    by_originator_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True
    )
    conversation_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True, unique=True
    )
    originator_conversation_id: models.CharField[str | None, str | None] = models.CharField(
        max_length=128, null=True, blank=True
    )
    asked_at: models.DateTimeField[datetime, datetime] = models.DateTimeField()
    answered_at: models.DateTimeField[datetime | None, datetime | None] = models.DateTimeField(
        null=True, blank=True
    )
    worker: models.CharField[str, str] = models.CharField(max_length=100, blank=True, default="")
    outcome: models.CharField[str, str] = models.CharField(max_length=16)
    result_code: models.CharField[str | None, str | None] = models.CharField(
        max_length=32, null=True, blank=True
    )
    result_desc: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)
    detail: models.TextField[str | None, str | None] = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        verbose_name = "Transaction Status query"
        verbose_name_plural = "Transaction Status queries"

    def __str__(self) -> str:
        return f"{self.id} {self.outcome}"
