"""The admin pages: payments searchable by phone (any format), receipt and reference,
filtered by status and flag, with their raw callbacks, events and STK queries inline, and
an action "Ask Daraja now"; C2B receipts (search by phone in any format, TransID, account
reference; raw confirmations inline) and B2C payouts (raw Results, events and Transaction
Status queries inline; "Ask Daraja now"). Everything is read-only: only pesa's rules change
a row."""

from __future__ import annotations

import contextlib
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from pesa._exceptions import PesaError, ValidationError
from pesa.daraja import normalize_msisdn
from pesa.django.models import (
    Callback,
    Payment,
    PaymentEvent,
    Payout,
    PayoutEvent,
    Receipt,
    ReceiptEvent,
    StkQuery,
    TransactionStatusQuery,
)
from pesa.ledger import phone_hashes

__all__ = ["CallbackAdmin", "PaymentAdmin", "PayoutAdmin", "ReceiptAdmin"]


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


class ReceiptEventInline(_ReadOnlyInline):
    model = ReceiptEvent
    fields = ("created_at", "type", "detail")
    readonly_fields = fields


class PayoutEventInline(_ReadOnlyInline):
    model = PayoutEvent
    fields = ("created_at", "type", "detail")
    readonly_fields = fields


class TransactionStatusQueryInline(_ReadOnlyInline):
    model = TransactionStatusQuery
    fields = ("asked_at", "answered_at", "outcome", "result_code", "result_desc", "detail")
    readonly_fields = fields


class _ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # generic only in stubs
    def has_add_permission(self, request: HttpRequest) -> bool:  # noqa: ARG002 - admin API
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:  # noqa: ARG002
        return False


@admin.register(Receipt)
class ReceiptAdmin(_ReadOnlyAdmin):
    list_display = (
        "trans_id",
        "status",
        "amount",
        "account_reference",
        "msisdn",
        "payer_name",
        "flagged",
        "created_at",
    )
    list_filter = ("status", "flagged", "shortcode")
    search_fields = ("trans_id", "account_reference", "phone", "msisdn")
    search_help_text = (
        "phone in any format (matched against full, hashed and masked numbers), TransID or "
        "account reference"
    )
    date_hierarchy = "created_at"
    inlines = (CallbackInline, ReceiptEventInline)
    readonly_fields = tuple(f.name for f in Receipt._meta.get_fields() if f.concrete)

    def get_search_results(
        self,
        request: HttpRequest,  # noqa: ARG002 - admin API
        queryset: QuerySet[Receipt],
        search_term: str,
    ) -> tuple[QuerySet[Receipt], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = (
            Q(id=term)
            | Q(trans_id__iexact=term)
            | Q(account_reference__icontains=term)
            | Q(invoice_number__iexact=term)
        )
        try:
            phone = normalize_msisdn(term)
        except ValidationError:
            phone = None
        if phone is not None:
            # C2B v1 sends a hash of the number, v2 a masked one (2547 ***** 149).
            match |= Q(phone=phone) | Q(phone_hash__in=phone_hashes(phone))
            match |= Q(
                phone__isnull=True,
                msisdn_prefix__isnull=False,
                msisdn_suffix__isnull=False,
                msisdn__startswith=phone[:4],
                msisdn__endswith=phone[-3:],
            )
        return queryset.filter(match), False


@admin.register(Payout)
class PayoutAdmin(_ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "amount",
        "phone",
        "receipt",
        "counterparty",
        "flagged",
        "created_at",
    )
    list_filter = ("status", "flagged", "command_id")
    search_fields = ("id", "receipt", "phone", "conversation_id", "idempotency_key")
    search_help_text = "phone in any format, receipt, id or ConversationID"
    date_hierarchy = "created_at"
    inlines = (CallbackInline, PayoutEventInline, TransactionStatusQueryInline)
    actions = ("ask_daraja_now",)
    readonly_fields = tuple(f.name for f in Payout._meta.get_fields() if f.concrete)

    def get_search_results(
        self,
        request: HttpRequest,  # noqa: ARG002 - admin API
        queryset: QuerySet[Payout],
        search_term: str,
    ) -> tuple[QuerySet[Payout], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = (
            Q(id=term) | Q(receipt__iexact=term) | Q(conversation_id=term) | Q(idempotency_key=term)
        )
        with contextlib.suppress(ValidationError):
            match |= Q(phone=normalize_msisdn(term))
        return queryset.filter(match), False

    @admin.action(description="Ask Daraja now (Transaction Status)")
    def ask_daraja_now(self, request: HttpRequest, queryset: QuerySet[Payout]) -> None:
        from pesa.django._services import ask_daraja_about_payout

        for payout in queryset:
            if payout.is_final and payout.verify_at is None:
                self.message_user(request, f"Payout {payout.id}: already {payout.status}")
                continue
            try:
                ask_daraja_about_payout(payout)
            except PesaError as err:
                self.message_user(
                    request,
                    f"Payout {payout.id}: Daraja did not take the query: {err}",
                    messages.ERROR,
                )
                continue
            self.message_user(
                request,
                f"Payout {payout.id}: Transaction Status asked; its answer settles the payout",
                messages.SUCCESS,
            )
