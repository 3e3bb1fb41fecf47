"""Bill Manager: opt-in, single and bulk invoices, cancellation, payment notifications and
reconciliation (``/v1/billmanager-invoice/...``, REFERENCE 9).

Answers carry ``rescode``/``resmsg`` (``"200"`` success; cancelling a paid invoice is
``"409"``). Opt-in is per Daraja app (the token's consumer key): invoices name no shortcode.
A customer paying the opted-in shortcode with an open invoice's ``accountReference`` as the
account number (C2B ``simulate`` or the control API's phone menu) pays the invoice: Bill
Manager POSTs ``{"transactionId", "paidAmount", "msisdn", "dateCreated", "accountReference",
"shortCode"}`` to the opt-in's ``callbackurl`` and re-sends it up to ``bill_manager_retries``
(5) times until answered ``{"rescode": "200"}``. What Daraja answers beyond that (an unknown
invoice, a bad field) is not documented [U]: the emulator answers HTTP 400 with
``rescode`` ``"400"`` and a message naming the field.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pesa.emulator import _daraja as daraja
from pesa.emulator import _validate as v
from pesa.emulator._books import Transaction
from pesa.emulator._product import DarajaRoute, Product
from pesa.emulator._validate import Refusal

__all__ = ["BillManager", "Invoice", "OptIn"]

_BASE = "/v1/billmanager-invoice"


@dataclass
class OptIn:
    """A shortcode opted in to Bill Manager by one Daraja app."""

    shortcode: str
    email: str
    official_contact: str
    send_reminders: int
    callback_url: str
    app_key: str
    logo: str = ""


@dataclass
class Invoice:
    """One invoice as Bill Manager keeps it: ``open``, ``paid`` or ``cancelled``."""

    external_reference: str
    account_reference: str
    amount: int
    billed_full_name: str
    billed_phone_number: str
    invoice_name: str
    due_date: str
    status: str = "open"
    paid_by: str = ""  # the TransID that paid it
    reconciled: bool = False
    items: list[dict[str, Any]] = field(default_factory=list)


class BillManager(Product):
    """``/v1/billmanager-invoice/{optin, change-optin-details, single-invoicing, ...}``."""

    operations = ("bill_manager",)
    callback_kinds = ("bill_payment",)

    def __init__(self, core: Any) -> None:
        super().__init__(core)
        self.opt_ins: dict[str, OptIn] = {}  # by app (consumer key)
        self.invoices: dict[str, dict[str, Invoice]] = {}  # app -> externalReference -> invoice
        core.c2b_listeners.append(self._on_c2b)

    def reset(self) -> None:
        self.opt_ins = {}
        self.invoices = {}

    def routes(self) -> list[DarajaRoute]:
        return [
            DarajaRoute(f"{_BASE}/optin", self.opt_in),
            DarajaRoute(f"{_BASE}/change-optin-details", self.change_opt_in),
            DarajaRoute(f"{_BASE}/single-invoicing", self.single_invoice),
            DarajaRoute(f"{_BASE}/bulk-invoicing", self.bulk_invoice, array=True),
            DarajaRoute(f"{_BASE}/reconciliation", self.reconcile),
            DarajaRoute(f"{_BASE}/cancel-single-invoice", self.cancel_single),
            DarajaRoute(f"{_BASE}/cancel-bulk-invoices", self.cancel_bulk, array=True),
        ]

    # -- answers ------------------------------------------------------------------------

    @staticmethod
    def _ok(**extra: Any) -> tuple[int, dict[str, Any]]:
        return 200, {**extra, "resmsg": daraja.BILL_MANAGER_SUCCESS, "rescode": "200"}

    @staticmethod
    def _refused(refusal: Refusal) -> tuple[int, dict[str, Any]]:
        if refusal.error_code == daraja.BILL_MANAGER_PAID:
            # A paid invoice: HTTP 200 with rescode 409 (the reference gives the rescode only).
            return 200, {"resmsg": refusal.error_message, "rescode": daraja.BILL_MANAGER_PAID}
        return 400, {"resmsg": refusal.error_message, "rescode": "400"}

    def _guarded(self, handler: Any, body: Any, app: str) -> tuple[int, dict[str, Any]]:
        try:
            result: tuple[int, dict[str, Any]] = handler(body, app)
        except Refusal as refusal:
            return self._refused(refusal)
        return result

    # -- opt-in -------------------------------------------------------------------------

    def _opt_in_fields(self, body: dict[str, Any]) -> OptIn:
        shortcode = self.core.org_shortcode(body.get("shortcode"), "shortcode")
        email = v.required_text(body.get("email"), "email")
        if "@" not in email:
            raise Refusal(daraja.bad_request("email"))
        contact = v.msisdn(body.get("officialContact"), "officialContact")
        reminders = v.choice(body.get("sendReminders"), "sendReminders", ("0", "1"))
        logo = body.get("logo")
        if logo not in (None, ""):
            v.url(logo, "logo")
        return OptIn(
            shortcode=shortcode,
            email=email,
            official_contact=contact,
            send_reminders=int(reminders),
            callback_url=v.url(body.get("callbackurl"), "callbackurl"),
            app_key="",
            logo=logo if isinstance(logo, str) else "",
        )

    def opt_in(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../optin``: answers the ``app_key``."""
        return self._guarded(self._opt_in, body, app)

    def _opt_in(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        details = self._opt_in_fields(body)
        details.app_key = self.core.ids.token()
        self.opt_ins[app] = details
        return self._ok(app_key=details.app_key)

    def change_opt_in(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../change-optin-details``: needs an earlier opt-in."""
        return self._guarded(self._change_opt_in, body, app)

    def _change_opt_in(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        current = self.opt_ins.get(app)
        if current is None:
            raise Refusal(daraja.bad_request("shortcode"))
        details = self._opt_in_fields(body)
        details.app_key = current.app_key
        self.opt_ins[app] = details
        return self._ok()

    # -- invoices -----------------------------------------------------------------------

    def _invoice(self, body: Any, app: str) -> Invoice:
        if not isinstance(body, dict):
            raise Refusal(daraja.INVALID_PAYLOAD)
        cfg = self.core.config
        due = v.required_text(body.get("dueDate"), "dueDate", max_length=10)
        try:
            date.fromisoformat(due)
        except ValueError:
            raise Refusal(daraja.bad_request("dueDate")) from None
        items = body.get("invoiceItems")
        if items is not None:
            if not isinstance(items, list):
                raise Refusal(daraja.bad_request("invoiceItems"))
            for item in items:
                if not isinstance(item, dict):
                    raise Refusal(daraja.bad_request("invoiceItems"))
                v.required_text(item.get("itemName"), "itemName")
                v.amount(item.get("amount"), 0, cfg.stk_max_amount, "amount")
        invoice = Invoice(
            external_reference=v.required_text(body.get("externalReference"), "externalReference"),
            billed_full_name=v.required_text(body.get("billedFullName"), "billedFullName"),
            billed_phone_number=v.msisdn(body.get("billedPhoneNumber"), "billedPhoneNumber"),
            invoice_name=v.required_text(body.get("invoiceName"), "invoiceName"),
            due_date=due,
            account_reference=v.required_text(
                body.get("accountReference"), "accountReference", max_length=20
            ),
            amount=v.amount(body.get("amount"), cfg.stk_min_amount, cfg.stk_max_amount, "amount"),
            items=list(items or []),
        )
        v.required_text(body.get("billedPeriod"), "billedPeriod")
        existing = self.invoices.get(app, {}).get(invoice.external_reference)
        if existing is not None and existing.status == "paid":
            raise Refusal((409, daraja.BILL_MANAGER_PAID, "Invoice already paid"))
        return invoice

    def _need_opt_in(self, app: str) -> None:
        if app not in self.opt_ins:
            # Invoices name no shortcode: the app must have opted one in first.
            raise Refusal(daraja.bad_request("shortcode"))

    def single_invoice(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../single-invoicing``: an open invoice (a new one replaces an unpaid one)."""
        return self._guarded(self._single, body, app)

    def _single(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        self._need_opt_in(app)
        invoice = self._invoice(body, app)
        self.invoices.setdefault(app, {})[invoice.external_reference] = invoice
        return self._ok(Status_Message="Invoice sent successfully")

    def bulk_invoice(self, body: list[Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../bulk-invoicing``: an array of up to 1000 invoices, all or none."""
        return self._guarded(self._bulk, body, app)

    def _bulk(self, body: list[Any], app: str) -> tuple[int, dict[str, Any]]:
        self._need_opt_in(app)
        if not 1 <= len(body) <= daraja.BILL_MANAGER_BULK_MAX:
            raise Refusal(daraja.INVALID_PAYLOAD)
        invoices = [self._invoice(item, app) for item in body]
        table = self.invoices.setdefault(app, {})
        for invoice in invoices:
            table[invoice.external_reference] = invoice
        return self._ok(Status_Message="Invoices sent successfully")

    def _cancel(self, app: str, reference: Any) -> None:
        external = v.required_text(reference, "externalReference")
        invoice = self.invoices.get(app, {}).get(external)
        if invoice is None:
            raise Refusal(daraja.bad_request("externalReference"))
        if invoice.status == "paid":
            raise Refusal((409, daraja.BILL_MANAGER_PAID, "Invoice already paid"))
        invoice.status = "cancelled"

    def cancel_single(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../cancel-single-invoice``: a paid invoice is ``rescode`` 409."""
        try:
            self._cancel(app, body.get("externalReference"))
        except Refusal as refusal:
            return self._refused(refusal)
        return self._ok()

    def cancel_bulk(self, body: list[Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../cancel-bulk-invoices``: an array of ``{"externalReference"}``."""
        try:
            for item in body:
                if not isinstance(item, dict):
                    raise Refusal(daraja.INVALID_PAYLOAD)
                self._cancel(app, item.get("externalReference"))
        except Refusal as refusal:
            return self._refused(refusal)
        return self._ok()

    def reconcile(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        """``POST .../reconciliation``: the biller acknowledges a paid invoice."""
        return self._guarded(self._reconcile, body, app)

    def _reconcile(self, body: dict[str, Any], app: str) -> tuple[int, dict[str, Any]]:
        self._need_opt_in(app)
        external = v.required_text(body.get("externalReference"), "externalReference")
        transaction_id = v.required_text(body.get("transactionId"), "transactionId")
        v.amount(body.get("paidAmount"), 1, self.core.config.stk_max_amount, "paidAmount")
        for name in ("paymentDate", "accountReference", "phoneNumber", "fullName", "invoiceName"):
            v.required_text(body.get(name), name)
        invoice = self.invoices.get(app, {}).get(external)
        if invoice is None or invoice.status != "paid" or invoice.paid_by != transaction_id:
            raise Refusal(daraja.bad_request("transactionId"))
        invoice.reconciled = True
        return self._ok()

    # -- payments ---------------------------------------------------------------------------

    def _on_c2b(self, txn: Transaction) -> None:
        for app, details in self.opt_ins.items():
            if details.shortcode != txn.shortcode:
                continue
            for invoice in self.invoices.get(app, {}).values():
                if invoice.status == "open" and invoice.account_reference == txn.reference:
                    invoice.status, invoice.paid_by = "paid", txn.receipt
                    self.core.spawn(self._notify(details, invoice, txn))
                    return

    async def _notify(self, details: OptIn, invoice: Invoice, txn: Transaction) -> None:
        core = self.core
        cfg = core.config
        payload = {
            "transactionId": txn.receipt,
            "paidAmount": f"{txn.amount}.00",
            "msisdn": txn.party,
            "dateCreated": f"{txn.completed_at:%Y-%m-%d %H:%M:%S}",
            "accountReference": invoice.account_reference,
            "shortCode": txn.shortcode,
        }
        outcome = core.rules.outcome(
            "bill_manager", txn.party, txn.amount, invoice.account_reference, 0.0
        )
        action = outcome.callback if outcome is not None else "deliver"
        if action in ("drop", "timeout"):
            return
        copies = 2 if action == "duplicate" else 1
        for _ in range(copies):
            await self._post(payload, details.callback_url, cfg.bill_manager_retries)

    async def _post(self, payload: dict[str, Any], url: str, retries: int) -> None:
        # Bill Manager re-sends until the biller answers {"rescode": "200"} (REFERENCE 11: 5
        # times); any other answer counts as not received.
        core = self.core
        for attempt in range(1 + retries):
            if attempt:
                await asyncio.sleep(core.config.bill_manager_retry_delay)
            record = await core.delivery.post("bill_payment", url, payload, retries=0)
            answer = record.response if isinstance(record.response, dict) else {}
            if record.delivered and str(answer.get("rescode", "")) == "200":
                return
