"""Signals: one per event of the payment lifecycle, sent once per transition, after commit.

Each is sent with ``sender=pesa.django.models.Payment`` and the keyword arguments
``payment`` (the payment as the transition left it), ``event`` (the
:class:`~pesa.django.models.PaymentEvent` row written with it) and ``detail`` (why)::

    from django.dispatch import receiver
    from pesa.django.signals import payment_succeeded

    @receiver(payment_succeeded)
    def mark_order_paid(sender, payment, event, detail, **kwargs):
        Order.objects.filter(reference=payment.account_reference).update(paid=True)

They are sent from ``transaction.on_commit``: never for a transition that rolled back, and
exactly once for one that committed (a duplicated callback changes nothing and sends
nothing). A receiver that raises is logged and does not stop the others; the payment stays
as committed.

========================  =====================================================
signal                    sent when
========================  =====================================================
``payment_succeeded``     the customer paid (a confirmed callback or Daraja's query)
``payment_failed``        the payment ended without money moving (a code, or expired)
``payment_rejected``      Daraja refused the STK push
``payment_pending``       Daraja accepted the push: the prompt is on the phone
``payment_unknown``       the push may have left but no answer came (settled by query)
``payment_flagged``       a person should look at it (sources disagree, or unverifiable)
``payment_flag_resolved`` a person resolved the flag (``resolve_flag``)
``payment_corrected``     a failed payment turned out paid (Daraja's query)
``payment_updated``       a paid payment's record was completed (a late receipt)
========================  =====================================================

Receipts (C2B) and payouts (B2C) have their own, sent the same way: once per transition,
after commit. A receipt signal gets ``receipt`` (a :class:`~pesa.django.models.Receipt`)
and ``event`` (its :class:`~pesa.django.models.ReceiptEvent`); a payout signal gets
``payout`` and ``event`` (a :class:`~pesa.django.models.PayoutEvent`); both get ``detail``.

========================  =====================================================
signal                    sent when
========================  =====================================================
``receipt_received``      a customer paid the shortcode: a new ``TransID``
                          (``receipt.status`` says whether it counts yet)
``receipt_flagged``       a repeat of a ``TransID`` disagrees (another amount...)
``receipt_updated``       a later confirmation completed a receipt
``payout_pending``        Daraja accepted the B2C request
``payout_succeeded``      the money reached the phone (a cross-checked Result, or
                          Transaction Status)
``payout_failed``         Daraja carried it out and it failed: no money moved
``payout_rejected``       Daraja refused the only request sent: nothing moved
``payout_unknown``        the outcome is unknown: Transaction Status settles it
``payout_flagged``        a person should look at it (no answer by the deadline...)
``payout_corrected``      a payout recorded as failed did move money
``payout_updated``        a paid payout's record was completed (a late Result)
========================  =====================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from pesa._logging import get_logger
from pesa.ledger import EventType, TransferEvent
from pesa.ledger import ReceiptEvent as ReceiptEventType

if TYPE_CHECKING:
    from pesa.django.models import Payment, PaymentEvent, Payout, PayoutEvent, Receipt, ReceiptEvent

__all__ = [
    "PAYOUT_SIGNALS",
    "RECEIPT_SIGNALS",
    "SIGNALS",
    "payout_corrected",
    "payout_failed",
    "payout_flagged",
    "payout_pending",
    "payout_rejected",
    "payout_succeeded",
    "payout_unknown",
    "payout_updated",
    "receipt_flagged",
    "receipt_received",
    "receipt_updated",
    "send_payout_event",
    "send_receipt_event",
    "payment_corrected",
    "payment_failed",
    "payment_flag_resolved",
    "payment_flagged",
    "payment_pending",
    "payment_rejected",
    "payment_succeeded",
    "payment_unknown",
    "payment_updated",
    "send_event",
]

log = get_logger("pesa.django")

payment_succeeded = Signal()
payment_failed = Signal()
payment_rejected = Signal()
payment_pending = Signal()
payment_unknown = Signal()
payment_flagged = Signal()
payment_flag_resolved = Signal()
payment_corrected = Signal()
payment_updated = Signal()

SIGNALS: dict[str, Signal] = {
    EventType.SUCCEEDED.value: payment_succeeded,
    EventType.FAILED.value: payment_failed,
    EventType.REJECTED.value: payment_rejected,
    EventType.PENDING.value: payment_pending,
    EventType.UNKNOWN.value: payment_unknown,
    EventType.FLAGGED.value: payment_flagged,
    EventType.FLAG_RESOLVED.value: payment_flag_resolved,
    EventType.CORRECTED.value: payment_corrected,
    EventType.UPDATED.value: payment_updated,
}
"""Event type (``"payment.succeeded"``) → its signal."""

receipt_received = Signal()
receipt_flagged = Signal()
receipt_updated = Signal()

RECEIPT_SIGNALS: dict[str, Signal] = {
    ReceiptEventType.RECEIVED.value: receipt_received,
    ReceiptEventType.FLAGGED.value: receipt_flagged,
    ReceiptEventType.UPDATED.value: receipt_updated,
}
"""Receipt event type (``"receipt.received"``) → its signal (events of verification and
of expected payments, which this app does not keep, have none)."""

payout_pending = Signal()
payout_succeeded = Signal()
payout_failed = Signal()
payout_rejected = Signal()
payout_unknown = Signal()
payout_flagged = Signal()
payout_corrected = Signal()
payout_updated = Signal()

PAYOUT_SIGNALS: dict[str, Signal] = {
    f"payout.{TransferEvent.PENDING.value}": payout_pending,
    f"payout.{TransferEvent.SUCCEEDED.value}": payout_succeeded,
    f"payout.{TransferEvent.FAILED.value}": payout_failed,
    f"payout.{TransferEvent.REJECTED.value}": payout_rejected,
    f"payout.{TransferEvent.UNKNOWN.value}": payout_unknown,
    f"payout.{TransferEvent.FLAGGED.value}": payout_flagged,
    f"payout.{TransferEvent.CORRECTED.value}": payout_corrected,
    f"payout.{TransferEvent.UPDATED.value}": payout_updated,
}
"""Payout event type (``"payout.succeeded"``) → its signal."""


def send_event(payment: Payment, event: PaymentEvent) -> None:
    """Send the signal of ``event`` (called from ``transaction.on_commit``)."""
    signal = SIGNALS.get(event.type)
    if signal is None:  # pragma: no cover - every EventType has a signal
        return
    for handler, result in signal.send_robust(
        sender=type(payment), payment=payment, event=event, detail=event.detail
    ):
        if isinstance(result, Exception):
            log.error(
                "a %s receiver (%s) raised for payment %s: %r",
                event.type,
                getattr(handler, "__qualname__", handler),
                payment.id,
                result,
            )


def _send(signal: Signal | None, sender: type, what: str, subject: object, event: Any) -> None:
    if signal is None:
        return
    for handler, result in signal.send_robust(
        sender=sender, **{what: subject}, event=event, detail=event.detail
    ):
        if isinstance(result, Exception):
            log.error(
                "a %s receiver (%s) raised for %s %s: %r",
                event.type,
                getattr(handler, "__qualname__", handler),
                what,
                getattr(subject, "id", "?"),
                result,
            )


def send_receipt_event(receipt: Receipt, event: ReceiptEvent) -> None:
    """Send the signal of a receipt's ``event`` (called from ``transaction.on_commit``)."""
    _send(RECEIPT_SIGNALS.get(event.type), type(receipt), "receipt", receipt, event)


def send_payout_event(payout: Payout, event: PayoutEvent) -> None:
    """Send the signal of a payout's ``event`` (called from ``transaction.on_commit``)."""
    _send(PAYOUT_SIGNALS.get(event.type), type(payout), "payout", payout, event)
