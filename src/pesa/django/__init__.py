"""M-Pesa in a Django project: ``pip install 'pesa[django]'``, then::

    # settings.py
    INSTALLED_APPS = [..., "pesa.django"]

    # urls.py
    urlpatterns = [..., path("mpesa/", include("pesa.django.urls"))]

    # a view
    from pesa.django import request_payment
    payment = request_payment(phone="0708374149", amount=10, account_reference="ORDER42")
    payout = send_payout(phone="0708374149", amount=50, idempotency_key="refund-42")

Settings come from the same ``PESA_*`` variables as the rest of pesa, or a ``PESA = {...}``
dict (:mod:`pesa.django.conf`); ``manage.py migrate`` creates the tables; the callback view
stores and applies Daraja's results; signals (:mod:`pesa.django.signals`) announce each
transition once, after commit; ``manage.py pesa_reconcile`` settles what callbacks do not.
The rules are pesa's own (:mod:`pesa.ledger`): this app stores and calls. See
docs/django.md.
"""

from __future__ import annotations

import importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from pesa.django._reconcile import ReconcileReport
    from pesa.django._services import (
        OpenTransactionError,
        arequest_payment,
        ask_daraja,
        ask_daraja_about_payout,
        reconcile,
        request_payment,
        resolve_flag,
        send_payout,
    )
    from pesa.ledger._c2b_validation import C2BValidation, ValidationVerdict

__all__ = [
    "C2BValidation",
    "OpenTransactionError",
    "ReconcileReport",
    "ValidationVerdict",
    "arequest_payment",
    "ask_daraja",
    "ask_daraja_about_payout",
    "reconcile",
    "request_payment",
    "resolve_flag",
    "send_payout",
]

# Importing models before Django's app registry is ready fails, and Django imports this
# package first (it is the app): the service functions load on first use.
_LAZY = {
    "C2BValidation": "pesa.ledger._c2b_validation",
    "ValidationVerdict": "pesa.ledger._c2b_validation",
    "OpenTransactionError": "pesa.django._services",
    "ReconcileReport": "pesa.django._reconcile",
    "arequest_payment": "pesa.django._services",
    "ask_daraja": "pesa.django._services",
    "ask_daraja_about_payout": "pesa.django._services",
    "send_payout": "pesa.django._services",
    "reconcile": "pesa.django._services",
    "request_payment": "pesa.django._services",
    "resolve_flag": "pesa.django._services",
}


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pesa.django' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
