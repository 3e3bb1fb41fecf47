"""The URLs of ``pesa.django``: ``path("mpesa/", include("pesa.django.urls"))``.

Only the STK callback: ``<prefix>callbacks/<token>/stk`` (the token is the secret
``PESA_CALLBACK_TOKEN``; the URL Daraja gets is :func:`pesa.django.conf.callback_url`).
"""

from __future__ import annotations

from django.urls import path

from pesa.django import views

app_name = "pesa"

urlpatterns = [
    path("callbacks/<str:token>/stk", views.stk_callback, name="stk-callback"),
]
