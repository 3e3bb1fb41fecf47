from django.contrib import admin
from django.urls import include, path

from shop import views

urlpatterns = [
    path("", views.product, name="product"),
    path("checkout/<slug:sku>/", views.checkout, name="checkout"),
    path("orders/<int:order_id>/", views.order, name="order"),
    path("admin/", admin.site.urls),
    path("mpesa/", include("pesa.django.urls")),  # 2/2: Daraja's callbacks come here
]
