"""The C2B URLs of ``pesa.django``: ``path("c2b/", include("pesa.django.c2b_urls"))``.

Daraja refuses C2B URLs containing ``mpesa``, ``safaricom``, ``exe``, ``cmd``, ``sql`` or
``query`` anywhere (REFERENCE §11), so they live apart from :mod:`pesa.django.urls`
(usually mounted at ``mpesa/``): include them under a prefix without those words. Both
routes sit under the secret token (``PESA_CALLBACK_TOKEN``):

- ``<prefix>callbacks/<token>/confirmation``: a completed payment (a receipt);
- ``<prefix>callbacks/<token>/validation``: Daraja asks whether to accept a payment.

``manage.py pesa_c2b_register`` registers them with Daraja.
"""

from __future__ import annotations

from django.urls import path

from pesa.django import views

app_name = "pesa_c2b"

urlpatterns = [
    path("callbacks/<str:token>/confirmation", views.c2b_confirmation, name="confirmation"),
    path("callbacks/<str:token>/validation", views.c2b_validation, name="validation"),
]
