"""The shop hears about payments through pesa's signals (sent once, after commit)."""

from django.dispatch import receiver

from pesa.django.signals import payment_failed, payment_rejected, payment_succeeded
from shop.models import Order


def _order(payment):
    # The order id travels in the payment's metadata: the callback may arrive before the
    # checkout view has stored the payment id on the order.
    return Order.objects.filter(pk=(payment.metadata or {}).get("order"))


@receiver(payment_succeeded)
def mark_paid(sender, payment, **kwargs):
    _order(payment).update(paid=True, payment_id=payment.id)


@receiver([payment_failed, payment_rejected])
def mark_failed(sender, payment, **kwargs):
    _order(payment).update(failed_reason=payment.failure_reason or "not paid")
