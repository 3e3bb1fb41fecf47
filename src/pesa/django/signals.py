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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.dispatch import Signal

from pesa._logging import get_logger
from pesa.ledger import EventType

if TYPE_CHECKING:
    from pesa.django.models import Payment, PaymentEvent

__all__ = [
    "SIGNALS",
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
