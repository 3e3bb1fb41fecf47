"""The URLs of ``pesa.django``: ``path("mpesa/", include("pesa.django.urls"))``.

Every route sits under the secret token (``PESA_CALLBACK_TOKEN``):

- ``<prefix>callbacks/<token>/stk``: STK push results (:func:`pesa.django.conf.callback_url`);
- ``.../c2b/confirmation`` and ``.../c2b/validation``: C2B payments (register them with
  ``manage.py pesa_c2b_register``);
- ``.../b2c/result`` and ``.../b2c/timeout``: payout Results;
- ``.../status/result`` and ``.../status/timeout``: Transaction Status answers.
"""

from __future__ import annotations

from django.urls import path

from pesa.django import views

app_name = "pesa"

urlpatterns = [
    path("callbacks/<str:token>/stk", views.stk_callback, name="stk-callback"),
    path(
        "callbacks/<str:token>/c2b/confirmation",
        views.c2b_confirmation,
        name="c2b-confirmation",
    ),
    path("callbacks/<str:token>/c2b/validation", views.c2b_validation, name="c2b-validation"),
    path("callbacks/<str:token>/b2c/result", views.b2c_result, name="b2c-result"),
    path("callbacks/<str:token>/b2c/timeout", views.b2c_timeout, name="b2c-timeout"),
    path("callbacks/<str:token>/status/result", views.status_result, name="status-result"),
    path("callbacks/<str:token>/status/timeout", views.status_timeout, name="status-timeout"),
]
