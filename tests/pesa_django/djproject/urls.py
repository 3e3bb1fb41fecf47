"""URLs of the test project: the admin, pesa's callback, and two shop views."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from djproject import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("mpesa/", include("pesa.django.urls")),
    path("c2b/", include("pesa.django.c2b_urls")),
    path("pay/", views.pay),
    path("apay/", views.apay),
    path("payments/<str:payment_id>/", views.show),
]
