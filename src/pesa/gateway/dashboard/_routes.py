"""The dashboard's pages and actions, mounted at ``/dashboard`` by :func:`install_dashboard`.

Pages are rendered on the server (Jinja2) and work without JavaScript; ``dashboard.js``
only refreshes the live part of a page (``X-Pesa-Live: 1`` asks for that fragment alone)
and searches as you type. Every page needs a session; every action also needs the
operator role and the session's CSRF token, goes through the same code as the REST API or
the ledger (never a copy of a rule), and is written to the audit log with its outcome.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy.exc import DBAPIError

from pesa._exceptions import ValidationError
from pesa._logging import get_logger
from pesa.config import Settings
from pesa.daraja import NAIROBI, lookup_code
from pesa.gateway import _api
from pesa.gateway._state import GatewayState, gateway_state
from pesa.gateway.dashboard._auth import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    FormTooLargeError,
    client_ip,
    csrf_matches,
    is_https,
    new_csrf_token,
    printable,
    read_form,
    safe_next,
    set_cookie,
)
from pesa.gateway.dashboard._money_routes import NOTICES as MONEY_NOTICES
from pesa.gateway.dashboard._money_routes import Guard, add_money_routes, refund_context
from pesa.gateway.dashboard._views import (
    FAILURE_KINDS,
    build_overview,
    build_timeline,
    csv_rows,
    day_range,
    day_start,
    describe_endpoint,
    local_time,
    money,
)
from pesa.ledger import (
    AuditAction,
    DeliveryNotFoundError,
    InvalidTransitionError,
    LedgerError,
    LedgerReports,
    OperatorSession,
    OperatorStore,
    PaymentNotFoundError,
    PaymentStatus,
)

__all__ = ["DASHBOARD_PATH", "install_dashboard"]

log = get_logger("pesa.gateway.dashboard")

DASHBOARD_PATH: Final = "/dashboard"
SIGN_IN_WINDOW: Final = timedelta(minutes=15)
CHART_DAYS: Final = 14
_PAGE_SIZE: Final = 50
_CSV_PAGE: Final = 500
_MAX_QUERY: Final = 128

_SECURITY_HEADERS: Final = {
    # Operators' pages hold customers' data: never stored by a browser or a proxy.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Vary": "Cookie",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

_NOTICES: Final = {
    "refresh-settled": "Daraja answered: the payment is settled.",
    "refresh-unchanged": "Daraja has no final answer yet; nothing changed.",
    "refresh-final": "This payment already has its final state; there was nothing to ask.",
    "flag-resolved": "Flag resolved. Your note is in the timeline and the audit log.",
    "redelivered": "The webhook will be sent again within seconds.",
    "signed-out": "You are signed out.",
    **MONEY_NOTICES,
}


def _secure(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class _DashboardRoute(APIRoute):
    """Every dashboard answer, errors included, carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Answer as answer:
                response = answer.response
            except FormTooLargeError:
                response = HTMLResponse("form too large", status_code=413)
            return _secure(response)

        return secured


class _Answer(Exception):
    """Stop here and send ``response`` (a redirect to sign in, a refusal page)."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("pesa.gateway.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local"] = local_time
    env.filters["money"] = money
    env.filters["endpoint"] = describe_endpoint
    env.globals["failure_kinds"] = FAILURE_KINDS
    env.globals["statuses"] = [s.value for s in PaymentStatus]
    return env


class _Pages:
    """Renders templates with what every page needs (the operator, the CSRF token)."""

    def __init__(self, settings: Settings) -> None:
        self.env = _environment()
        self.live_ms = int(settings.dashboard_refresh_interval * 1000)
        self.settings = settings

    def render(
        self,
        request: Request,
        name: str,
        *,
        session: OperatorSession | None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        template = self.env.get_template(name)
        notice_key = request.query_params.get("notice", "")
        values = {
            "session": session,
            "operator": None if session is None else session.operator,
            "csrf_token": "" if session is None else session.csrf_token,
            "live_ms": self.live_ms,
            "notice": _NOTICES.get(notice_key),
            "error": None,
            "path": request.url.path,
            "active": "",
            **context,
        }
        if request.headers.get("x-pesa-live") == "1" and "live" in template.blocks:
            ctx = template.new_context(values)
            html = "".join(template.blocks["live"](ctx))
        else:
            html = template.render(values)
        return HTMLResponse(html, status_code=status_code, headers=headers)


def _state(request: Request) -> GatewayState:
    return gateway_state(request)


def _store(state: GatewayState) -> OperatorStore:
    return OperatorStore(state.ledger.engine, clock=state.ledger.clock)


def _trusted(state: GatewayState) -> Any:
    return state.trust.trusted_proxies


def _sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    if request.method != "GET":
        target = DASHBOARD_PATH + "/"
    response = RedirectResponse(
        f"{DASHBOARD_PATH}/sign-in?{urlencode({'next': target})}", status_code=303
    )
    if SESSION_COOKIE in request.cookies:
        response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PATH)
    return response


async def _session(request: Request) -> OperatorSession:
    state = _state(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = await _store(state).get_session(token) if token else None
    if session is None:
        raise _Answer(_sign_in_redirect(request))
    return session


def _parse_day(name: str, value: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise ValidationError(name, "must be a date (YYYY-MM-DD)", value) from err


class _Filters:
    """The payment list's search box and filters, validated."""

    def __init__(self, request: Request) -> None:
        params = request.query_params
        self.q = params.get("q", "").strip()
        self.status = params.get("status", "")
        self.flagged = params.get("flagged", "") in ("1", "on", "true")
        self.day_from = params.get("from", "")
        self.day_to = params.get("to", "")
        self.cursor = params.get("cursor", "") or None

    def check(self) -> dict[str, Any]:
        """Keyword arguments for :meth:`LedgerReports.search_payments`.

        Raises:
            ValidationError: naming the field and the rule.
        """
        if len(self.q) > _MAX_QUERY:
            raise ValidationError("q", f"must be at most {_MAX_QUERY} characters", len(self.q))
        if self.q and printable(self.q, _MAX_QUERY) != self.q:
            raise ValidationError("q", "must be printable text")
        if self.status and self.status not in {s.value for s in PaymentStatus}:
            allowed = ", ".join(s.value for s in PaymentStatus)
            raise ValidationError("status", f"must be one of {allowed}", self.status)
        day_from = _parse_day("from", self.day_from)
        day_to = _parse_day("to", self.day_to)
        if day_from and day_to and day_to < day_from:
            raise ValidationError("to", "must not be before from", self.day_to)
        if self.cursor is not None and (
            len(self.cursor) > 64 or not self.cursor.isascii() or not self.cursor.isprintable()
        ):
            raise ValidationError("cursor", "must be a cursor from the previous page")
        return {
            "q": self.q or None,
            "status": self.status or None,
            "flagged": True if self.flagged else None,
            "created_from": day_start(day_from) if day_from else None,
            "created_to": day_start(day_to + timedelta(days=1)) if day_to else None,
        }

    def query(self, **changes: str | None) -> str:
        """This search as a query string, with ``changes`` applied (``None`` drops a key)."""
        values: dict[str, str | None] = {
            "q": self.q,
            "status": self.status,
            "flagged": "1" if self.flagged else "",
            "from": self.day_from,
            "to": self.day_to,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})

    def describe(self) -> str:
        """A short human summary (for the audit log of an export)."""
        parts = [
            f"{k}={v}"
            for k, v in (
                ("q", self.q),
                ("status", self.status),
                ("from", self.day_from),
                ("to", self.day_to),
            )
            if v
        ]
        if self.flagged:
            parts.append("flagged")
        return ", ".join(parts) or "all payments"


def _build_router(pages: _Pages) -> APIRouter:
    router = APIRouter(route_class=_DashboardRoute, include_in_schema=False)

    async def audit(
        request: Request,
        action: AuditAction,
        session: OperatorSession | None,
        **fields: Any,
    ) -> None:
        state = _state(request)
        try:
            await _store(state).record(
                action,
                operator=None if session is None else session.operator,
                source_ip=client_ip(request, _trusted(state)),
                **fields,
            )
        except DBAPIError:
            # The action itself is done (or refused); say loudly that its trail is missing.
            log.error("could not write the audit log for %s", action)

    def refuse(
        request: Request, session: OperatorSession, status_code: int, message: str
    ) -> _Answer:
        return _Answer(
            pages.render(
                request,
                "error.html",
                session=session,
                status_code=status_code,
                message=message,
            )
        )

    async def acting(
        request: Request, action: AuditAction, target: str
    ) -> tuple[OperatorSession, dict[str, str]]:
        """The session and form of an action: CSRF token checked, operator role required."""
        session = await _session(request)
        form = await read_form(request)
        if not csrf_matches(form.get("csrf_token"), session.csrf_token):
            await audit(
                request,
                action,
                session,
                target=target,
                outcome="refused",
                detail="missing or wrong CSRF token",
            )
            raise refuse(
                request,
                session,
                403,
                "This form was not sent from this dashboard session (its security token is "
                "missing or out of date). Reload the page and try again.",
            )
        if not session.operator.can_act:
            await audit(
                request,
                action,
                session,
                target=target,
                outcome="refused",
                detail=f"role {session.operator.role} cannot act",
            )
            raise refuse(
                request,
                session,
                403,
                f"Your role ({session.operator.role}) can read the dashboard but not act. "
                "Ask an administrator for the operator role.",
            )
        return session, form

    # -- sign in / out ------------------------------------------------------------------

    def sign_in_page(
        request: Request,
        *,
        status_code: int = 200,
        error: str | None = None,
        username: str = "",
        headers: dict[str, str] | None = None,
        next_target: str | None = None,
    ) -> HTMLResponse:
        token = new_csrf_token()
        response = pages.render(
            request,
            "sign_in.html",
            session=None,
            status_code=status_code,
            headers=headers,
            sign_in_token=token,
            next=safe_next(next_target or request.query_params.get("next")),
            username=username,
            error=error,
        )
        state = _state(request)
        set_cookie(
            response, CSRF_COOKIE, token, max_age=3600, secure=is_https(request, _trusted(state))
        )
        return response

    @router.get("/sign-in")
    async def sign_in_form(request: Request) -> Response:
        token = request.cookies.get(SESSION_COOKIE)
        if token and await _store(_state(request)).get_session(token) is not None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        return sign_in_page(request)

    @router.post("/sign-in")
    async def sign_in(request: Request) -> Response:
        state = _state(request)
        store = _store(state)
        form = await read_form(request)
        again = functools.partial(sign_in_page, next_target=form.get("next"))
        if not csrf_matches(form.get("csrf_token"), request.cookies.get(CSRF_COOKIE)):
            return again(
                request,
                status_code=403,
                error="The sign-in form expired or was not sent from this page. Try again.",
            )
        # Whatever was typed is recorded (audit, throttle): keep it storable.
        name = printable(form.get("username", "").strip())
        password = form.get("password", "")
        if not name or not password:
            missing = "username" if not name else "password"
            return again(request, status_code=422, error=f"{missing}: required", username=name)
        ip = client_ip(request, _trusted(state))
        blocked = await store.sign_in_blocked_until(
            name,
            ip,
            max_failures=pages.settings.dashboard_max_sign_in_failures,
            window=SIGN_IN_WINDOW,
        )
        if blocked is not None:
            wait = max(1, int((blocked - datetime.now(UTC)).total_seconds()) + 1)
            log.warning("dashboard sign-in throttled for %r (%s)", name[:64], ip)
            return again(
                request,
                status_code=429,
                headers={"Retry-After": str(wait)},
                error=f"Too many failed sign-ins. Try again in {(wait + 59) // 60} minute(s).",
                username=name,
            )
        operator = await store.authenticate(name, password)
        if operator is None:
            await audit(request, "sign_in_failed", None, operator_name=name, outcome="refused")
            return again(request, status_code=401, error="Wrong name or password.", username=name)
        ttl = timedelta(seconds=pages.settings.dashboard_session_ttl)
        token, session = await store.create_session(operator, ttl=ttl, source_ip=ip)
        await audit(request, "sign_in", session)
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        set_cookie(
            response,
            SESSION_COOKIE,
            token,
            max_age=int(ttl.total_seconds()),
            secure=is_https(request, _trusted(state)),
        )
        response.delete_cookie(CSRF_COOKIE, path=DASHBOARD_PATH)
        return response

    @router.post("/sign-out")
    async def sign_out(request: Request) -> Response:
        session = await _session(request)
        form = await read_form(request)
        if not csrf_matches(form.get("csrf_token"), session.csrf_token):
            raise refuse(request, session, 403, "Reload the page, then sign out again.")
        await _store(_state(request)).end_session(request.cookies[SESSION_COOKIE])
        await audit(request, "sign_out", session)
        response = RedirectResponse(f"{DASHBOARD_PATH}/sign-in?notice=signed-out", 303)
        response.delete_cookie(SESSION_COOKIE, path=DASHBOARD_PATH)
        return response

    # -- pages ----------------------------------------------------------------------------

    @router.get("/")
    async def overview(request: Request) -> Response:
        session = await _session(request)
        state = _state(request)
        reports = LedgerReports(state.ledger)
        today = datetime.now(NAIROBI).date()
        days = day_range(today, CHART_DAYS)
        boundaries = [day_start(d) for d in days] + [day_start(today + timedelta(days=1))]
        data = build_overview(await reports.outcomes(boundaries), days)
        backlog = await reports.backlog(
            now=datetime.now(UTC),
            min_age=timedelta(seconds=state.settings.reconcile_min_age),
        )
        return pages.render(
            request,
            "overview.html",
            session=session,
            active="overview",
            overview=data,
            backlog=backlog,
            today=today,
        )

    @router.get("/payments")
    async def payments_page(request: Request) -> Response:
        session = await _session(request)
        filters = _Filters(request)
        page = None
        error = None
        status_code = 200
        try:
            page = await LedgerReports(_state(request).ledger).search_payments(
                **filters.check(), cursor=filters.cursor, limit=_PAGE_SIZE
            )
        except ValidationError as err:
            error, status_code = str(err), 422
        return pages.render(
            request,
            "payments.html",
            session=session,
            active="payments",
            filters=filters,
            page=page,
            search_error=error,
            status_code=status_code,
        )

    @router.get("/payments.csv")
    async def payments_csv(request: Request) -> Response:
        session = await _session(request)
        filters = _Filters(request)
        try:
            criteria = filters.check()
        except ValidationError as err:
            raise refuse(request, session, 422, str(err)) from err
        reports = LedgerReports(_state(request).ledger)
        await audit(request, "export_csv", session, note=filters.describe())

        async def rows() -> AsyncIterator[str]:
            cursor: str | None = None
            header = True
            while True:
                page = await reports.search_payments(**criteria, cursor=cursor, limit=_CSV_PAGE)
                yield csv_rows(page.items, header=header)
                header = False
                if page.next_cursor is None:
                    return
                cursor = page.next_cursor

        stamp = datetime.now(NAIROBI).strftime("%Y%m%d-%H%M")
        return StreamingResponse(
            rows(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="pesa-payments-{stamp}.csv"'},
        )

    @router.get("/payments/{payment_id}")
    async def payment_page(request: Request, payment_id: str) -> Response:
        session = await _session(request)
        return await _payment(request, session, payment_id)

    async def _payment(
        request: Request,
        session: OperatorSession,
        payment_id: str,
        *,
        status_code: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        state = _state(request)
        payment = await state.ledger.get_payment(payment_id)
        if payment is None:
            raise refuse(request, session, 404, f"No payment {payment_id!r}.")
        reports = LedgerReports(state.ledger)
        refunds = (await reports.search_refunds(source_id=payment.id, limit=100)).items
        timeline = build_timeline(
            payment,
            events=await reports.payment_events(payment.id),
            callbacks=await reports.payment_callbacks(payment),
            queries=await state.ledger.list_stk_queries(payment.id),
            deliveries=await reports.payment_deliveries(payment.id),
            actions=(await _store(state).audit_entries(target=payment.id, limit=200)).items,
            refunds=refunds,
        )
        code = lookup_code(payment.result_code) if payment.result_code else None
        return pages.render(
            request,
            "payment.html",
            session=session,
            active="payments",
            payment=payment,
            timeline_items=timeline,
            refunds=refunds,
            code=code,
            status_code=status_code,
            error=error,
            headers=headers,
            # What the reconciler's settle() would query (the REST API's /refresh).
            can_refresh=payment.checkout_request_id is not None
            and (
                payment.status in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN)
                or payment.verify_at is not None
            ),
            **await refund_context(state, payment.id, "payment"),
        )

    @router.post("/payments/{payment_id}/refresh")
    async def refresh(request: Request, payment_id: str) -> Response:
        session, _ = await acting(request, "refresh", payment_id)
        state = _state(request)
        before = await state.ledger.get_payment(payment_id)
        if before is None:
            raise refuse(request, session, 404, f"No payment {payment_id!r}.")
        try:
            # The REST API's own handler: the same query, rate bound and error mapping.
            after = await _api.refresh_payment(payment_id, state)
        except _api.ApiError as err:
            await audit(
                request, "refresh", session, target=payment_id, outcome="error", detail=err.message
            )
            return await _payment(
                request,
                session,
                payment_id,
                status_code=err.status_code,
                error=err.message,
                headers=err.headers,
            )
        if before.is_terminal and before.verify_at is None:
            notice = "refresh-final"
        elif after.status != before.status.value:
            notice = "refresh-settled"
        else:
            notice = "refresh-unchanged"
        await audit(
            request,
            "refresh",
            session,
            target=payment_id,
            detail=f"{before.status.value} -> {after.status}",
        )
        return RedirectResponse(
            f"{DASHBOARD_PATH}/payments/{payment_id}?notice={notice}", status_code=303
        )

    @router.post("/payments/{payment_id}/resolve-flag")
    async def resolve_flag(request: Request, payment_id: str) -> Response:
        session, form = await acting(request, "resolve_flag", payment_id)
        note = form.get("note", "")
        ledger = _state(request).ledger
        try:
            await ledger.resolve_flag(payment_id, note, by=session.operator.name)
        except PaymentNotFoundError as err:
            raise refuse(request, session, 404, f"No payment {payment_id!r}.") from err
        except (ValidationError, InvalidTransitionError) as err:
            await audit(
                request,
                "resolve_flag",
                session,
                target=payment_id,
                note=note or None,
                outcome="refused",
                detail=str(err),
            )
            code = 422 if isinstance(err, ValidationError) else 409
            return await _payment(request, session, payment_id, status_code=code, error=str(err))
        await audit(request, "resolve_flag", session, target=payment_id, note=note.strip())
        return RedirectResponse(
            f"{DASHBOARD_PATH}/payments/{payment_id}?notice=flag-resolved", status_code=303
        )

    @router.post("/deliveries/{delivery_id}/redeliver")
    async def redeliver(request: Request, delivery_id: str) -> Response:
        session, form = await acting(request, "redeliver", delivery_id)
        back = safe_next(form.get("back"))
        try:
            await _state(request).ledger.redeliver(delivery_id)
        except DeliveryNotFoundError as err:
            raise refuse(request, session, 404, f"No webhook delivery {delivery_id!r}.") from err
        except LedgerError as err:
            await audit(
                request,
                "redeliver",
                session,
                target=delivery_id,
                outcome="refused",
                detail=str(err),
            )
            raise refuse(request, session, 409, str(err)) from err
        await audit(request, "redeliver", session, target=delivery_id)
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}notice=redelivered", status_code=303)

    @router.get("/attention")
    async def attention(request: Request) -> Response:
        session = await _session(request)
        state = _state(request)
        reports = LedgerReports(state.ledger)
        flagged = await reports.search_payments(flagged=True, limit=_PAGE_SIZE)
        payouts = await reports.search_payouts(attention=True, limit=_PAGE_SIZE)
        refunds = await reports.search_refunds(attention=True, limit=_PAGE_SIZE)
        receipts = await state.ledger.receipts.list_receipts(flagged=True, limit=_PAGE_SIZE)
        return pages.render(
            request,
            "attention.html",
            session=session,
            active="attention",
            flagged=flagged.items,
            flagged_more=flagged.has_more,
            unknown=(await reports.search_payments(status="unknown", limit=_PAGE_SIZE)).items,
            deliveries=await reports.failing_deliveries(limit=_PAGE_SIZE),
            payouts=payouts.items,
            payouts_more=payouts.has_more,
            refunds=refunds.items,
            refunds_more=refunds.has_more,
            receipts=receipts.items,
            receipts_expected=await reports.expected_payments(
                r.expected_payment_id for r in receipts.items
            ),
            backlog=await reports.backlog(
                now=datetime.now(UTC),
                min_age=timedelta(seconds=state.settings.reconcile_min_age),
            ),
        )

    @router.get("/audit")
    async def audit_page(request: Request) -> Response:
        session = await _session(request)
        before = request.query_params.get("before", "")
        page = await _store(_state(request)).audit_entries(
            before=int(before) if before.isdigit() else None, limit=_PAGE_SIZE
        )
        return pages.render(
            request,
            "audit.html",
            session=session,
            active="audit",
            page=page,
            request_before=before,
        )

    add_money_routes(
        router,
        Guard(
            session=_session,
            state=_state,
            store=_store,
            acting=acting,
            audit=audit,
            refuse=refuse,
            render=pages.render,
            payment_page=_payment,
        ),
    )
    return router


def install_dashboard(app: FastAPI, settings: Settings) -> None:
    """Mount the dashboard's routes and static files on the gateway app at ``/dashboard``.

    The router is kept as ``app.state.dashboard_router`` (its routes, without the prefix).
    """
    router = _build_router(_Pages(settings))
    app.include_router(router, prefix=DASHBOARD_PATH)
    app.state.dashboard_router = router
    app.mount(
        f"{DASHBOARD_PATH}/static",
        StaticFiles(packages=[("pesa.gateway.dashboard", "static")]),
        name="dashboard-static",
    )
