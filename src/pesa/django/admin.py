"""The admin pages: payments searchable by phone (any format), receipt and reference,
filtered by status and flag, with their raw callbacks, events and STK queries inline, and
an action "Ask Daraja now". Everything is read-only: only pesa's rules change a payment."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from pesa._exceptions import PesaError, ValidationError
from pesa.daraja import normalize_msisdn
from pesa.django.models import Callback, Payment, PaymentEvent, StkQuery

__all__ = ["CallbackAdmin", "PaymentAdmin"]


class _ReadOnlyInline(admin.TabularInline):  # type: ignore[type-arg]  # generic only in stubs
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False


class CallbackInline(_ReadOnlyInline):
    model = Callback
    fields = ("received_at", "outcome", "source_ip", "detail", "raw")
    readonly_fields = fields
    ordering = ("received_at",)

    @admin.display(description="raw body")
    def raw(self, obj: Callback) -> str:
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", obj.text)


class PaymentEventInline(_ReadOnlyInline):
    model = PaymentEvent
    fields = ("created_at", "type", "detail")
    readonly_fields = fields


class StkQueryInline(_ReadOnlyInline):
    model = StkQuery
    fields = ("asked_at", "answered_at", "outcome", "result_code", "result_desc", "worker")
    readonly_fields = fields


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in stubs
    list_display = (
        "id",
        "status",
        "amount",
        "phone",
        "account_reference",
        "receipt",
        "flagged",
        "created_at",
    )
    list_filter = ("status", "flagged", "checkout_request_id_verified")
    search_fields = ("id", "receipt", "account_reference", "checkout_request_id", "phone")
    search_help_text = "phone in any format (0708 374 149, +254...), receipt, reference or id"
    date_hierarchy = "created_at"
    inlines = (CallbackInline, PaymentEventInline, StkQueryInline)
    actions = ("ask_daraja_now",)
    readonly_fields = tuple(f.name for f in Payment._meta.get_fields() if f.concrete)

    def has_add_permission(self, request: HttpRequest) -> bool:  # noqa: ARG002 - admin API
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False

    def get_search_results(
        self,
        request: HttpRequest,  # noqa: ARG002 - admin API
        queryset: QuerySet[Payment],
        search_term: str,
    ) -> tuple[QuerySet[Payment], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            # A phone in any format the customer may give (07..., +254..., spaces).
            phone = normalize_msisdn(term)
        except ValidationError:
            phone = None
        match = (
            Q(id=term)
            | Q(receipt__iexact=term)
            | Q(checkout_request_id=term)
            | Q(account_reference__icontains=term)
        )
        if phone is not None:
            match |= Q(phone=phone) | Q(paid_phone=phone)
        return queryset.filter(match), False

    @admin.action(description="Ask Daraja now (STK query)")
    def ask_daraja_now(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        from pesa.django._services import ask_daraja

        for payment in queryset:
            before = payment.status
            try:
                after = ask_daraja(payment)
            except PesaError as err:
                self.message_user(
                    request,
                    f"Payment {payment.id}: Daraja gave no usable answer: {err}",
                    messages.ERROR,
                )
                continue
            if after.status != before:
                text = f"Payment {payment.id}: {before} → {after.status}"
            else:
                text = f"Payment {payment.id}: still {after.status}"
            self.message_user(request, text, messages.SUCCESS)


@admin.register(Callback)
class CallbackAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in stubs
    list_display = ("id", "kind", "outcome", "checkout_request_id", "source_ip", "received_at")
    list_filter = ("kind", "outcome")
    search_fields = ("id", "checkout_request_id", "payment__id")
    readonly_fields = (
        "id",
        "kind",
        "outcome",
        "detail",
        "checkout_request_id",
        "payment",
        "source_ip",
        "received_at",
        "raw",
    )
    exclude = ("body",)

    @admin.display(description="raw body")
    def raw(self, obj: Callback) -> str:
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", obj.text)

    def has_add_permission(self, request: HttpRequest) -> bool:  # noqa: ARG002 - admin API
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False
