"""The URLs of ``pesa.django``: ``path("mpesa/", include("pesa.django.urls"))``.

Every route sits under the secret token (``PESA_CALLBACK_TOKEN``):

- ``<prefix>callbacks/<token>/stk``: STK push results (:func:`pesa.django.conf.callback_url`);
- ``.../b2c/result`` and ``.../b2c/timeout``: payout Results;
- ``.../status/result`` and ``.../status/timeout``: Transaction Status answers.

C2B confirmations and validation requests have their own URLconf,
:mod:`pesa.django.c2b_urls`: Daraja refuses C2B URLs containing ``mpesa``.
"""

from __future__ import annotations

from django.urls import path

from pesa.django import views

app_name = "pesa"

urlpatterns = [
    path("callbacks/<str:token>/stk", views.stk_callback, name="stk-callback"),
    path("callbacks/<str:token>/b2c/result", views.b2c_result, name="b2c-result"),
    path("callbacks/<str:token>/b2c/timeout", views.b2c_timeout, name="b2c-timeout"),
    path("callbacks/<str:token>/status/result", views.status_result, name="status-result"),
    path("callbacks/<str:token>/status/timeout", views.status_timeout, name="status-timeout"),
]
