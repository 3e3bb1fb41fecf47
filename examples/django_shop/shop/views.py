from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render

from pesa.django import request_payment
from shop.forms import CheckoutForm
from shop.models import PRODUCTS, Order


def product(request):
    return render(request, "shop/product.html", {"products": PRODUCTS})


@transaction.non_atomic_requests  # the payment is committed before the STK push leaves
def checkout(request, sku):
    if sku not in PRODUCTS:
        raise Http404("no such product")
    name, price = PRODUCTS[sku]
    form = CheckoutForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        order = Order.objects.create(sku=sku, amount=price, phone=form.cleaned_data["phone"])
        payment = request_payment(
            phone=order.phone,
            amount=order.amount,
            account_reference=order.reference,
            description=sku[:13],
            idempotency_key=f"order-{order.pk}",
            metadata={"order": order.pk},  # the signal receivers find the order by it
        )
        Order.objects.filter(pk=order.pk).update(payment_id=payment.id)
        return redirect("order", order_id=order.pk)
    return render(request, "shop/checkout.html", {"form": form, "name": name, "price": price})


def order(request, order_id):
    order = get_object_or_404(Order, pk=order_id)
    return render(request, "shop/order.html", {"order": order, "name": PRODUCTS[order.sku][0]})
