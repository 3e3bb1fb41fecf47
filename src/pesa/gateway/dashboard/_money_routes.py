"""The dashboard's receipts (C2B), expected payments, payouts, refunds and the refund action.

Mounted by :func:`pesa.gateway.dashboard._routes.install_dashboard` on the same router as the
payment pages, with the same session, CSRF, role and audit checks (passed in as ``guard``).
A refund goes through :func:`pesa.gateway._payout_api.start_refund`, the REST API's own
path: the ledger decides what may go back (never more than was paid), in the transaction
that stores the refund; the form only shows :meth:`pesa.ledger.RefundBook.room` as its
default.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse

from pesa._exceptions import ValidationError
from pesa.daraja import NAIROBI
from pesa.gateway._api import ApiError
from pesa.gateway._payout_api import start_refund
from pesa.gateway._state import GatewayState
from pesa.gateway.dashboard._auth import printable
from pesa.gateway.dashboard._views import (
    build_receipt_timeline,
    build_transfer_timeline,
    day_start,
    receipt_csv_rows,
)
from pesa.gateway_client._transfer_models import RefundCreate
from pesa.ledger import (
    AuditAction,
    ExpectedStatus,
    IdempotencyConflictError,
    LedgerReports,
    OperatorSession,
    OperatorStore,
    Page,
    PaymentNotFoundError,
    Payout,
    ReceiptNotFoundError,
    ReceiptStatus,
    Refund,
    RefundRoom,
    TransferStatus,
)

__all__ = ["NOTICES", "Guard", "add_money_routes", "refund_context"]

_PAGE_SIZE: Final = 50
_CSV_PAGE: Final = 500
_MAX_QUERY: Final = 128
_MAX_NOTE: Final = 1000
RECEIPT_SOURCES: Final = (
    ("confirmation", "confirmation"),
    ("lookup", "lookup"),
    ("pull", "recovered"),
)

NOTICES: Final = {
    "refund-started": "Refund sent to M-Pesa. It is in the timeline and the audit log; "
    "its outcome follows here within minutes.",
    "refund-replayed": "This refund was already sent (the form was submitted twice); "
    "nothing more was sent.",
}


@dataclass(frozen=True, slots=True)
class Guard:
    """What the payment pages' router gives these routes (one place for each check)."""

    session: Callable[[Request], Awaitable[OperatorSession]]
    state: Callable[[Request], GatewayState]
    store: Callable[[GatewayState], OperatorStore]
    acting: Callable[[Request, AuditAction, str], Awaitable[tuple[OperatorSession, dict[str, str]]]]
    audit: Callable[..., Awaitable[None]]
    refuse: Callable[[Request, OperatorSession, int, str], Exception]
    render: Callable[..., Response]
    payment_page: Callable[..., Awaitable[Response]]


class ListFilters:
    """A list page's search box and filters as typed (``v``), checked by :meth:`check_*`."""

    def __init__(self, request: Request, fields: Sequence[str]) -> None:
        params = request.query_params
        self.v: dict[str, str] = {name: params.get(name, "").strip() for name in fields}
        self.cursor = params.get("cursor", "") or None

    def flag(self, name: str) -> bool:
        return self.v.get(name, "") in ("1", "on", "true")

    def text(self, name: str) -> str | None:
        value = self.v.get(name, "")
        if len(value) > _MAX_QUERY:
            raise ValidationError(name, f"must be at most {_MAX_QUERY} characters", len(value))
        if value and printable(value, _MAX_QUERY) != value:
            raise ValidationError(name, "must be printable text")
        return value or None

    def choice(self, name: str, allowed: Sequence[str]) -> str | None:
        value = self.v.get(name, "")
        if value and value not in allowed:
            raise ValidationError(name, f"must be one of {', '.join(allowed)}", value)
        return value or None

    def day(self, name: str) -> datetime | None:
        value = self.v.get(name, "")
        if not value:
            return None
        try:
            return day_start(datetime.strptime(value, "%Y-%m-%d").date())
        except ValueError as err:
            raise ValidationError(name, "must be a date (YYYY-MM-DD)", value) from err

    def checked_cursor(self) -> str | None:
        if self.cursor is not None and (
            len(self.cursor) > 64 or not self.cursor.isascii() or not self.cursor.isprintable()
        ):
            raise ValidationError("cursor", "must be a cursor from the previous page")
        return self.cursor

    def query(self, **changes: str | None) -> str:
        """This search as a query string, with ``changes`` applied (``None`` drops a key)."""
        values: dict[str, str | None] = dict(self.v)
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})

    def describe(self, everything: str) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.v.items() if v) or everything


_RECEIPT_FIELDS: Final = ("q", "account", "status", "source", "flagged", "from", "to", "expected")


def _receipt_criteria(filters: ListFilters, accounts: Sequence[str]) -> dict[str, Any]:
    day_from, day_to = filters.day("from"), filters.day("to")
    if day_from and day_to and day_to < day_from:
        raise ValidationError("to", "must not be before from", filters.v["to"])
    return {
        "q": filters.text("q"),
        "account": filters.choice("account", accounts),
        "status": filters.choice("status", [s.value for s in ReceiptStatus]),
        "source": filters.choice("source", [value for value, _ in RECEIPT_SOURCES]),
        "flagged": True if filters.flag("flagged") else None,
        "paid_from": day_from,
        "paid_to": day_to + timedelta(days=1) if day_to else None,
        "expected_payment_id": filters.text("expected"),
    }


def add_money_routes(router: APIRouter, guard: Guard) -> None:
    """Add the receipts, expected payments, payouts and refunds pages, and the refund
    actions, to the dashboard's router."""

    def statuses() -> dict[str, Any]:
        return {
            "receipt_statuses": [s.value for s in ReceiptStatus],
            "receipt_sources": RECEIPT_SOURCES,
            "expected_statuses": [s.value for s in ExpectedStatus],
            "transfer_statuses": [s.value for s in TransferStatus],
        }

    # -- receipts ----------------------------------------------------------------------------

    @router.get("/receipts")
    async def receipts_page(request: Request) -> Response:
        session = await guard.session(request)
        state = guard.state(request)
        filters = ListFilters(request, _RECEIPT_FIELDS)
        accounts = list(state.accounts)
        page, expected, error, status_code = None, {}, None, 200
        try:
            page = await state.ledger.receipts.list_receipts(
                **_receipt_criteria(filters, accounts),
                cursor=filters.checked_cursor(),
                limit=_PAGE_SIZE,
            )
            expected = await LedgerReports(state.ledger).expected_payments(
                r.expected_payment_id for r in page.items
            )
        except ValidationError as err:
            page, error, status_code = None, str(err), 422
        return guard.render(
            request,
            "receipts.html",
            session=session,
            active="receipts",
            filters=filters,
            page=page,
            expected=expected,
            accounts=accounts,
            search_error=error,
            status_code=status_code,
            **statuses(),
        )

    @router.get("/receipts.csv")
    async def receipts_csv(request: Request) -> Response:
        session = await guard.session(request)
        state = guard.state(request)
        filters = ListFilters(request, _RECEIPT_FIELDS)
        try:
            criteria = _receipt_criteria(filters, list(state.accounts))
        except ValidationError as err:
            raise guard.refuse(request, session, 422, str(err)) from err
        await guard.audit(
            request, "export_csv", session, note="receipts: " + filters.describe("all receipts")
        )
        book = state.ledger.receipts

        async def rows() -> AsyncIterator[str]:
            cursor: str | None = None
            header = True
            while True:
                page = await book.list_receipts(**criteria, cursor=cursor, limit=_CSV_PAGE)
                yield receipt_csv_rows(page.items, header=header)
                header = False
                if page.next_cursor is None:
                    return
                cursor = page.next_cursor

        stamp = datetime.now(NAIROBI).strftime("%Y%m%d-%H%M")
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="pesa-receipts-{stamp}.csv"'},
        )

    @router.get("/receipts/{receipt_id}")
    async def receipt_page(request: Request, receipt_id: str) -> Response:
        session = await guard.session(request)
        return await _receipt(request, session, receipt_id)

    async def _receipt(
        request: Request,
        session: OperatorSession,
        receipt_id: str,
        *,
        status_code: int = 200,
        error: str | None = None,
    ) -> Response:
        state = guard.state(request)
        book = state.ledger.receipts
        receipt = await book.get_receipt(receipt_id)
        if receipt is None:
            raise guard.refuse(request, session, 404, f"No receipt {receipt_id!r}.")
        reports = LedgerReports(state.ledger)
        refunds = (await reports.search_refunds(source_id=receipt.id, limit=100)).items
        timeline = build_receipt_timeline(
            receipt,
            events=await reports.subject_events(receipt.id),
            callbacks=await book.list_callbacks(receipt.id),
            queries=await book.list_queries(receipt_id=receipt.id),
            deliveries=await reports.subject_deliveries(receipt.id),
            actions=(await guard.store(state).audit_entries(target=receipt.id, limit=200)).items,
            refunds=refunds,
        )
        expected = (
            None
            if receipt.expected_payment_id is None
            else await book.get_expected_payment(receipt.expected_payment_id)
        )
        return guard.render(
            request,
            "receipt.html",
            session=session,
            active="receipts",
            receipt=receipt,
            expected=expected,
            refunds=refunds,
            timeline_items=timeline,
            status_code=status_code,
            error=error,
            **await refund_context(state, receipt.id, "receipt"),
        )

    @router.get("/expected")
    async def expected_page(request: Request) -> Response:
        session = await guard.session(request)
        state = guard.state(request)
        filters = ListFilters(request, ("q", "status"))
        page, error, status_code = None, None, 200
        try:
            q = filters.text("q")
            status = filters.choice("status", [s.value for s in ExpectedStatus])
            cursor = filters.checked_cursor()
            book = state.ledger.receipts
            if q is not None and q.startswith("exp_"):
                found = await book.get_expected_payment(q)
                items = [] if found is None else [found]
                page = Page(items, None, False)
            else:
                page = await book.list_expected_payments(
                    account_reference=q, status=status, cursor=cursor, limit=_PAGE_SIZE
                )
        except ValidationError as err:
            page, error, status_code = None, str(err), 422
        return guard.render(
            request,
            "expected.html",
            session=session,
            active="receipts",
            filters=filters,
            page=page,
            search_error=error,
            status_code=status_code,
            **statuses(),
        )

    # -- payouts and refunds -------------------------------------------------------------------

    @router.get("/payouts")
    async def payouts_page(request: Request) -> Response:
        session = await guard.session(request)
        state = guard.state(request)
        filters = ListFilters(request, ("q", "status", "batch"))
        page, batch, error, status_code = None, None, None, 200
        try:
            batch_id = filters.text("batch")
            page = await LedgerReports(state.ledger).search_payouts(
                filters.text("q"),
                status=filters.choice("status", [s.value for s in TransferStatus]),
                batch_id=batch_id,
                cursor=filters.checked_cursor(),
                limit=_PAGE_SIZE,
            )
            if batch_id is not None:
                summary = await state.ledger.payouts.batch_summary(batch_id)
                batch = summary if summary.total else None
        except ValidationError as err:
            page, error, status_code = None, str(err), 422
        return guard.render(
            request,
            "payouts.html",
            session=session,
            active="payouts",
            filters=filters,
            page=page,
            batch=batch,
            search_error=error,
            status_code=status_code,
            **statuses(),
        )

    @router.get("/refunds")
    async def refunds_page(request: Request) -> Response:
        session = await guard.session(request)
        state = guard.state(request)
        filters = ListFilters(request, ("q", "status"))
        page, error, status_code = None, None, 200
        try:
            page = await LedgerReports(state.ledger).search_refunds(
                filters.text("q"),
                status=filters.choice("status", [s.value for s in TransferStatus]),
                cursor=filters.checked_cursor(),
                limit=_PAGE_SIZE,
            )
        except ValidationError as err:
            page, error, status_code = None, str(err), 422
        return guard.render(
            request,
            "refunds.html",
            session=session,
            active="refunds",
            filters=filters,
            page=page,
            search_error=error,
            status_code=status_code,
            **statuses(),
        )

    async def _transfer(
        request: Request, transfer_id: str, transfer: Payout | Refund | None, kind: str
    ) -> Response:
        session = await guard.session(request)
        if transfer is None:
            raise guard.refuse(request, session, 404, f"No {kind} {transfer_id[:64]!r}.")
        state = guard.state(request)
        reports = LedgerReports(state.ledger)
        timeline = build_transfer_timeline(
            transfer,
            events=await reports.subject_events(transfer.id),
            callbacks=await reports.subject_callbacks(transfer.id),
            queries=await state.ledger.status_queries.for_subject(transfer.id),
            deliveries=await reports.subject_deliveries(transfer.id),
            actions=(await guard.store(state).audit_entries(target=transfer.id, limit=200)).items,
        )
        return guard.render(
            request,
            "transfer.html",
            session=session,
            active=f"{kind}s",
            kind=kind,
            is_payout=kind == "payout",
            transfer=transfer,
            timeline_items=timeline,
        )

    @router.get("/payouts/{payout_id}")
    async def payout_page(request: Request, payout_id: str) -> Response:
        await guard.session(request)  # before any lookup: no session, no data
        payout = await guard.state(request).ledger.payouts.get(payout_id[:40])
        return await _transfer(request, payout_id, payout, "payout")

    @router.get("/refunds/{refund_id}")
    async def refund_page(request: Request, refund_id: str) -> Response:
        await guard.session(request)
        refund = await guard.state(request).ledger.refunds.get(refund_id[:40])
        return await _transfer(request, refund_id, refund, "refund")

    # -- the refund action ---------------------------------------------------------------------

    async def refund(
        request: Request, source_id: str, source: Literal["payment", "receipt"]
    ) -> Response:
        session, form = await guard.acting(request, "refund", source_id)
        state = guard.state(request)
        note = form.get("note", "").strip()
        amount_text = form.get("amount", "").strip()
        back = f"/dashboard/{source}s/{source_id}"

        async def refused(status_code: int, message: str, outcome: str = "refused") -> Response:
            await guard.audit(
                request,
                "refund",
                session,
                target=source_id,
                note=note or None,
                outcome=outcome,
                detail=message,
            )
            if source == "payment":
                return await guard.payment_page(
                    request, session, source_id, status_code=status_code, error=message
                )
            return await _receipt(
                request, session, source_id, status_code=status_code, error=message
            )

        try:
            if not note:
                raise ValidationError("note", "required: say why the money goes back")
            if len(note) > _MAX_NOTE or "\x00" in note:
                raise ValidationError("note", f"must be at most {_MAX_NOTE} characters of text")
            amount: int | None = None
            if amount_text:
                if not amount_text.isascii() or not amount_text.isdigit() or len(amount_text) > 9:
                    raise ValidationError("amount", "must be a whole number of shillings")
                amount = int(amount_text)
            body = RefundCreate(
                amount=amount,
                remarks=form.get("remarks", "").strip() or "Refund",
                metadata={"dashboard_operator": session.operator.name, "note": note},
            )
            made, created = await start_refund(
                state, source_id, body, form.get("idempotency_key") or None, source=source
            )
        except ApiError as err:
            if err.status_code == 404:
                raise guard.refuse(request, session, 404, f"No {source} {source_id!r}.") from err
            return await refused(err.status_code, err.message)
        except ValidationError as err:
            return await refused(422, str(err))
        except IdempotencyConflictError as err:
            return await refused(409, f"{err}: reload the page for a fresh form")
        await guard.audit(
            request,
            "refund",
            session,
            target=source_id,
            note=note,
            detail=f"{made.id}: {made.amount} KES, {made.status.value}"
            + ("" if created else " (form sent twice: nothing more sent)"),
        )
        notice = "refund-started" if created else "refund-replayed"
        return RedirectResponse(f"{back}?notice={notice}", status_code=303)

    @router.post("/payments/{payment_id}/refund")
    async def refund_payment(request: Request, payment_id: str) -> Response:
        return await refund(request, payment_id, "payment")

    @router.post("/receipts/{receipt_id}/refund")
    async def refund_receipt(request: Request, receipt_id: str) -> Response:
        return await refund(request, receipt_id, "receipt")


async def refund_context(
    state: GatewayState, source_id: str, source: Literal["payment", "receipt"]
) -> dict[str, Any]:
    """What a page's refund form shows: the ledger's room, the partial rule, a fresh key."""
    try:
        room = await state.ledger.refunds.room(source_id, source=source)
    except (PaymentNotFoundError, ReceiptNotFoundError):
        room = RefundRoom(paid=0, held=0, remaining=0, refusal=f"no such {source}")
    return {
        "room": room,
        "refund_partial": state.settings.refund_partial == "allow",
        # One key per form shown: sending the same form twice never refunds twice.
        "refund_key": f"dashboard-{secrets.token_urlsafe(18)}",
    }
