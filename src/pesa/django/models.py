"""The tables of ``pesa.django`` in the project's own database (SQLite or PostgreSQL).

They hold what the gateway's ledger holds, with the same column names, so that the same pure
rules (:mod:`pesa.ledger`) read and write them:

- :class:`Payment`: one STK payment (status, Daraja's ids, receipt, flags, reconciliation
  bookkeeping); ids look like the gateway's (``pay_01J...``);
- :class:`Callback`: every inbound callback, raw, with its outcome (stored first, always);
- :class:`PaymentEvent`: one row per event of a transition (``payment.succeeded`` ...), the
  record behind each signal;
- :class:`StkQuery`: every STK query and Daraja's answer (which worker asked, when).

C2B receipts and B2C payouts get their own models beside these once their pure layers land
in :mod:`pesa.ledger`; :class:`Callback` and :class:`PaymentEvent` already carry a ``kind``
and a ``type`` for them.

Change rows through :mod:`pesa.django` (``request_payment``, the callback view,
``pesa_reconcile``), never by saving a model: every transition is guarded by ``version``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import models

from pesa.ledger import PaymentStatus
from pesa.ledger._ids import new_id

__all__ = ["Callback", "Payment", "PaymentEvent", "StkQuery"]

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
