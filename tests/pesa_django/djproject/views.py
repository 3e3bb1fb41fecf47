"""A shop's views, as a user writes them: a sync and an async checkout, a status page."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from pesa.django import arequest_payment, request_payment
from pesa.django.models import Payment


def _fields(request: HttpRequest) -> dict[str, object]:
    data = json.loads(request.body)
    return {
        "phone": data["phone"],
        "amount": data["amount"],
        "account_reference": data.get("reference", "ORDER"),
        "idempotency_key": data.get("key"),
    }


@csrf_exempt
@transaction.non_atomic_requests
def pay(request: HttpRequest) -> HttpResponse:
    payment = request_payment(**_fields(request))  # type: ignore[arg-type]
    return JsonResponse({"id": payment.id, "status": payment.status})


@csrf_exempt
async def apay(request: HttpRequest) -> HttpResponse:
    payment = await arequest_payment(**_fields(request))  # type: ignore[arg-type]
    return JsonResponse({"id": payment.id, "status": payment.status})


def show(request: HttpRequest, payment_id: str) -> HttpResponse:  # noqa: ARG001
    payment = Payment.objects.get(id=payment_id)
    return JsonResponse(payment.to_dict())
