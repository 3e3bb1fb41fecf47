"""What the dashboard's pages show, computed from ledger values (no HTTP, no database).

Times are shown in Nairobi time, where the merchant and the customers are; amounts in
whole shillings. A payment's timeline merges its request, Daraja's answer, every raw
callback, every event, every webhook delivery and every operator action in time order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from pesa.daraja import NAIROBI, lookup_code
from pesa.gateway._dispatcher import _describe as describe_endpoint
from pesa.gateway.dashboard._charts import Series, stacked_bars
from pesa.ledger import (
    AuditEntry,
    DeliveryRecord,
    Event,
    OutcomeCount,
    Payment,
    PaymentStatus,
    StkQueryRecord,
    StoredCallback,
)

__all__ = [
    "CSV_COLUMNS",
    "FAILURE_KINDS",
    "Overview",
    "TimelineItem",
    "build_overview",
    "build_timeline",
    "csv_rows",
    "day_range",
    "day_start",
    "describe_endpoint",
    "failure_kind",
    "local_time",
    "money",
    "pretty_json",
]

# Failure kinds drawn in the overview, by Daraja result code (the catalogue's meanings are
# long; a chart legend wants a word or two). Everything else is "other".
_FAILURE_CODES: Final[dict[str, str]] = {
    "1032": "cancelled",
    "1": "no_funds",
    "1037": "unreachable",
    "2001": "wrong_pin",
    "1001": "busy",
}
FAILURE_KINDS: Final[dict[str, str]] = {
    "cancelled": "cancelled by the customer",
    "no_funds": "insufficient funds",
    "unreachable": "phone unreachable",
    "wrong_pin": "wrong PIN",
    "busy": "subscriber busy",
    "expired": "no answer (expired)",
    "rejected": "refused by Daraja",
    "other": "other failures",
}


def local_time(value: datetime | None, *, seconds: bool = True) -> str:
    """``29 Nov 2026 12:01:15`` in Nairobi time (``—`` for none)."""
    if value is None:
        return "—"
    shown = value.astimezone(NAIROBI)
    return shown.strftime("%d %b %Y %H:%M:%S" if seconds else "%d %b %Y %H:%M")


def money(value: int | Decimal | None) -> str:
    """``KES 1,250`` (whole shillings; cents shown only when there are some)."""
    if value is None:
        return "—"
    if isinstance(value, Decimal) and value != value.to_integral_value():
        return f"KES {value:,.2f}"
    return f"KES {int(value):,}"


def day_start(day: date) -> datetime:
    """Midnight in Nairobi at the start of ``day``, as an aware datetime."""
    return datetime(day.year, day.month, day.day, tzinfo=NAIROBI)


def pretty_json(body: bytes | str) -> str:
    """A raw body as indented JSON, or as text (invalid bytes replaced) if it is not JSON."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=False)
    except ValueError:
        return text


def failure_kind(outcome: OutcomeCount) -> str | None:
    """The overview's failure kind of a group of payments (``None`` if they did not fail)."""
    if outcome.status is PaymentStatus.REJECTED:
        return "rejected"
    if outcome.status is not PaymentStatus.FAILED:
        return None
    if outcome.expired:
        return "expired"
    return _FAILURE_CODES.get(outcome.result_code or "", "other")


@dataclass(frozen=True, slots=True)
class Overview:
    """The numbers and charts of the overview page.

    Attributes:
        counts: today's payments by status (every status, zeros included).
        volume: shillings paid today.
        success_rate: today's succeeded share of the payments that ended (``None`` if none).
        failures_today: today's failures by kind.
        outcome_chart: paid / failed / open per day, as SVG.
        failure_chart: failures per day by kind, as SVG.
        failure_legend: the kinds drawn, with their labels.
        days: how many days the charts cover.
    """

    counts: dict[str, int]
    volume: int
    success_rate: float | None
    failures_today: dict[str, int]
    outcome_chart: str
    failure_chart: str
    failure_legend: list[tuple[str, str]]
    days: int


def build_overview(outcomes: Iterable[OutcomeCount], days: Sequence[date]) -> Overview:
    """Turn outcome counts (one bucket per day in ``days``, today last) into the overview."""
    n = len(days)
    today = n - 1
    counts = {s.value: 0 for s in PaymentStatus}
    volume = 0
    failures_today: dict[str, int] = {}
    paid = [0] * n
    failed = [0] * n
    open_ = [0] * n
    by_kind: dict[str, list[int]] = {kind: [0] * n for kind in FAILURE_KINDS}
    for outcome in outcomes:
        i = outcome.bucket
        if not 0 <= i < n:
            continue
        kind = failure_kind(outcome)
        if outcome.status is PaymentStatus.SUCCEEDED:
            paid[i] += outcome.count
        elif kind is not None:
            failed[i] += outcome.count
            by_kind[kind][i] += outcome.count
        else:
            open_[i] += outcome.count
        if i == today:
            counts[outcome.status.value] += outcome.count
            if outcome.status is PaymentStatus.SUCCEEDED:
                volume += outcome.amount
            if kind is not None:
                failures_today[kind] = failures_today.get(kind, 0) + outcome.count
    ended = counts["succeeded"] + counts["failed"] + counts["rejected"]
    labels = [d.strftime("%d %b") for d in days]
    used = [kind for kind, values in by_kind.items() if any(values)]
    outcome_chart = stacked_bars(
        f"Payments per day, last {n} days",
        labels,
        [
            Series("succeeded", "paid", paid),
            Series("failed", "failed", failed),
            Series("open", "still open", open_),
        ],
    )
    failure_chart = stacked_bars(
        f"Failures per day by reason, last {n} days",
        labels,
        [Series(kind, FAILURE_KINDS[kind], by_kind[kind]) for kind in used],
    )
    return Overview(
        counts=counts,
        volume=volume,
        success_rate=None if ended == 0 else counts["succeeded"] / ended,
        failures_today=failures_today,
        outcome_chart=str(outcome_chart),
        failure_chart=str(failure_chart),
        failure_legend=[(kind, FAILURE_KINDS[kind]) for kind in used],
        days=n,
    )


@dataclass(slots=True)
class TimelineItem:
    """One entry of a payment's timeline.

    Attributes:
        at: when it happened.
        kind: ``request``, ``answer``, ``callback``, ``query``, ``event``, ``delivery`` or
            ``action``.
        title: one line saying what happened.
        tone: ``good``, ``bad``, ``warn`` or ``neutral`` (the badge's colour).
        facts: label/value pairs.
        body: raw JSON to show as code (callback bodies, event payloads), if any.
        delivery: the delivery, for its "redeliver" button.
    """

    at: datetime
    kind: str
    title: str
    tone: str = "neutral"
    facts: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    delivery: DeliveryRecord | None = None


_KIND_ORDER: Final = {
    "request": 0,
    "answer": 1,
    "callback": 2,
    "query": 3,
    "event": 4,
    "delivery": 5,
}
_EVENT_TONES: Final = {
    "payment.succeeded": "good",
    "payment.failed": "bad",
    "payment.rejected": "bad",
    "payment.flagged": "warn",
    "payment.unknown": "warn",
    "payment.corrected": "warn",
    "payment.flag_resolved": "good",
    "payment.updated": "good",
}
_CALLBACK_TONES: Final = {
    "applied": "good",
    "duplicate": "neutral",
    "ignored": "neutral",
    "unverified": "warn",
}
_QUERY_TONES: Final = {"succeeded": "good", "failed": "bad", "pending": "neutral"}
_ANSWERS: Final = {
    "payment.pending": "Daraja accepted the push",
    "payment.rejected": "Daraja refused the push",
    "payment.unknown": "No answer from Daraja to the push",
}


def _event_data(event: Event) -> dict[str, Any]:
    data = event.to_dict().get("data", {})
    return data if isinstance(data, dict) else {}


def build_timeline(
    payment: Payment,
    *,
    events: Sequence[Event],
    callbacks: Sequence[StoredCallback],
    queries: Sequence[StkQueryRecord],
    deliveries: Sequence[DeliveryRecord],
    actions: Sequence[AuditEntry],
) -> list[TimelineItem]:
    """Every step of a payment's life, oldest first."""
    items = [
        TimelineItem(
            payment.created_at,
            "request",
            "Payment requested (STK push)",
            facts=[
                ("phone", payment.phone),
                ("amount", money(payment.amount)),
                ("account reference", payment.account_reference),
                ("description", payment.description),
                ("idempotency key", payment.idempotency_key or "—"),
            ],
            body=None if payment.metadata is None else pretty_json(json.dumps(payment.metadata)),
        )
    ]
    answered = False
    for event in events:
        data = _event_data(event)
        snapshot = data.get("payment", {}) if isinstance(data.get("payment"), dict) else {}
        detail = str(data.get("detail") or "")
        if event.type in _ANSWERS and not answered:
            answered = True
            facts = [("detail", detail)] if detail else []
            if event.type == "payment.pending":
                facts += [
                    ("CheckoutRequestID", str(snapshot.get("checkout_request_id") or "—")),
                    ("MerchantRequestID", str(snapshot.get("merchant_request_id") or "—")),
                ]
            elif event.type == "payment.rejected":
                facts += [
                    ("error code", str(snapshot.get("result_code") or "—")),
                    ("message", str(snapshot.get("result_desc") or "—")),
                ]
            items.append(
                TimelineItem(
                    event.created_at,
                    "answer",
                    _ANSWERS[event.type],
                    "good" if event.type == "payment.pending" else "bad",
                    facts,
                )
            )
        items.append(
            TimelineItem(
                event.created_at,
                "event",
                f"Event {event.type}",
                _EVENT_TONES.get(event.type, "neutral"),
                [("event id", event.id)] + ([("detail", detail)] if detail else []),
                body=pretty_json(event.payload),
            )
        )
    for callback in callbacks:
        facts = [("outcome", callback.outcome), ("from", callback.source_ip or "unknown")]
        if callback.id == payment.evidence_callback_id:
            facts.append(("evidence", "held until Daraja's STK query confirms or denies it"))
        if callback.detail:
            label = "reason" if callback.outcome not in ("applied", "duplicate") else "detail"
            facts.append((label, callback.detail))
        items.append(
            TimelineItem(
                callback.received_at,
                "callback",
                f"Callback received ({callback.outcome})",
                _CALLBACK_TONES.get(callback.outcome, "bad"),
                facts,
                body=pretty_json(callback.body),
            )
        )
    for query in queries:
        facts = [("outcome", query.outcome), ("CheckoutRequestID", query.checkout_request_id)]
        if query.result_code is not None:
            facts.append(("result", f"{query.result_code} {query.result_desc or ''}".strip()))
        if query.detail:
            facts.append(("detail", query.detail))
        items.append(
            TimelineItem(
                query.asked_at,
                "query",
                f"STK query: {query.outcome.replace('_', ' ')}",
                _QUERY_TONES.get(query.outcome, "warn"),
                facts,
            )
        )
    for delivery in deliveries:
        facts = [
            ("event", f"{delivery.event_type} ({delivery.event_id})"),
            ("endpoint", describe_endpoint(delivery.endpoint)),
            ("attempts", str(delivery.attempts)),
        ]
        if delivery.attempts:
            facts.append(("last attempt", local_time(delivery.updated_at)))
        if delivery.last_status_code is not None:
            facts.append(("last answer", f"HTTP {delivery.last_status_code}"))
        if delivery.last_error:
            facts.append(("last error", delivery.last_error))
        if delivery.status == "pending" and delivery.next_attempt_at is not None:
            facts.append(("next attempt", local_time(delivery.next_attempt_at)))
        tone = {"delivered": "good", "failed": "bad"}.get(delivery.status, "warn")
        if delivery.status == "pending" and not delivery.last_error:
            tone = "neutral"
        items.append(
            TimelineItem(
                delivery.created_at,
                "delivery",
                f"Webhook {delivery.status}",
                tone,
                facts,
                delivery=delivery,
            )
        )
    for action in actions:
        facts = [("by", action.operator_name), ("outcome", action.outcome)]
        if action.note:
            facts.append(("note", action.note))
        if action.detail:
            facts.append(("detail", action.detail))
        items.append(
            TimelineItem(
                action.at,
                "action",
                f"Operator action: {action.action.replace('_', ' ')}",
                "neutral" if action.outcome == "ok" else "warn",
                facts,
            )
        )
    items.sort(key=lambda item: (item.at, _KIND_ORDER.get(item.kind, 9)))
    return items


CSV_COLUMNS: Final = (
    "id",
    "created_at",
    "status",
    "phone",
    "amount",
    "paid_amount",
    "receipt",
    "account_reference",
    "description",
    "result_code",
    "result_meaning",
    "failure_reason",
    "flagged",
    "flag_reason",
    "transaction_date",
    "checkout_request_id",
    "updated_at",
)

_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    # A spreadsheet runs a cell that starts like a formula: neutralise free text that
    # came from a customer or a merchant (OWASP "CSV injection").
    if text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_rows(payments: Iterable[Payment], *, header: bool) -> str:
    """Payments as CSV text (RFC 4180, UTC ISO timestamps), with the header row if asked."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    for p in payments:
        meaning = lookup_code(p.result_code).meaning if p.result_code else None
        writer.writerow(
            [
                _cell(v)
                for v in (
                    p.id,
                    p.created_at,
                    p.status.value,
                    p.phone,
                    p.amount,
                    p.paid_amount,
                    p.receipt,
                    p.account_reference,
                    p.description,
                    p.result_code,
                    meaning if p.status is not PaymentStatus.REJECTED else p.result_desc,
                    p.failure_reason,
                    p.flagged,
                    p.flag_reason,
                    p.transaction_date,
                    p.checkout_request_id,
                    p.updated_at,
                )
            ]
        )
    return out.getvalue()


def day_range(today: date, days: int) -> list[date]:
    """The ``days`` days ending with ``today``, oldest first."""
    return [today - timedelta(days=days - 1 - i) for i in range(days)]
