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
    Payout,
    Receipt,
    ReceiptQuery,
    Refund,
    StatusQuery,
    StkQueryRecord,
    StoredCallback,
    TransferStatus,
)

__all__ = [
    "CSV_COLUMNS",
    "FAILURE_KINDS",
    "Overview",
    "TimelineItem",
    "build_overview",
    "build_timeline",
    "build_receipt_timeline",
    "build_transfer_timeline",
    "csv_rows",
    "day_range",
    "day_start",
    "describe_endpoint",
    "failure_kind",
    "local_time",
    "money",
    "pretty_json",
    "receipt_csv_rows",
    "refund_item",
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
        kind: ``request``, ``answer``, ``callback``, ``query``, ``event``, ``delivery``,
            ``action`` or ``refund``.
        title: one line saying what happened.
        tone: ``good``, ``bad``, ``warn`` or ``neutral`` (the badge's colour).
        facts: label/value pairs.
        body: raw JSON to show as code (callback bodies, event payloads), if any.
        delivery: the delivery, for its "redeliver" button.
        link: a dashboard page with more (a refund's own page).
    """

    at: datetime
    kind: str
    title: str
    tone: str = "neutral"
    facts: list[tuple[str, str]] = field(default_factory=list)
    body: str | None = None
    delivery: DeliveryRecord | None = None
    link: str | None = None


_KIND_ORDER: Final = {
    "request": 0,
    "answer": 1,
    "callback": 2,
    "query": 3,
    "event": 4,
    "delivery": 5,
    "refund": 6,
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
    refunds: Sequence[Refund] = (),
) -> list[TimelineItem]:
    """Every step of a payment's life, oldest first (its refunds included)."""
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
    items += [delivery_item(d) for d in deliveries]
    items += [action_item(a) for a in actions]
    items += [refund_item(r) for r in refunds]
    items.sort(key=lambda item: (item.at, _KIND_ORDER.get(item.kind, 9)))
    return items


def delivery_item(delivery: DeliveryRecord) -> TimelineItem:
    """A webhook delivery as a timeline entry (with its "redeliver" button)."""
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
    return TimelineItem(
        delivery.created_at,
        "delivery",
        f"Webhook {delivery.status}",
        tone,
        facts,
        delivery=delivery,
    )


def action_item(action: AuditEntry) -> TimelineItem:
    """An operator's action (from the audit log) as a timeline entry."""
    facts = [("by", action.operator_name), ("outcome", action.outcome)]
    if action.note:
        facts.append(("note", action.note))
    if action.detail:
        facts.append(("detail", action.detail))
    return TimelineItem(
        action.at,
        "action",
        f"Operator action: {action.action.replace('_', ' ')}",
        "neutral" if action.outcome == "ok" else "warn",
        facts,
    )


_TRANSFER_TONES: Final = {
    TransferStatus.SUCCEEDED: "good",
    TransferStatus.FAILED: "bad",
    TransferStatus.REJECTED: "bad",
    TransferStatus.UNKNOWN: "warn",
}


def refund_item(refund: Refund) -> TimelineItem:
    """A refund of a payment or receipt, as an entry of that payment's timeline."""
    facts = [
        ("refund", refund.id),
        ("amount", money(refund.amount)),
        ("state", refund.status.value),
        ("remarks", refund.remarks),
    ]
    if refund.receipt:
        facts.append(("reversal receipt", refund.receipt))
    if refund.result_code is not None:
        facts.append(("result", f"{refund.result_code} {refund.result_desc or ''}".strip()))
    if refund.failure_reason:
        facts.append(("why", refund.failure_reason))
    if refund.flagged:
        facts.append(("flagged", refund.flag_reason or "yes"))
    return TimelineItem(
        refund.created_at,
        "refund",
        f"Refund of {money(refund.amount)}: {refund.status.value}",
        _TRANSFER_TONES.get(refund.status, "neutral"),
        facts,
        link=f"/dashboard/refunds/{refund.id}",
    )


def _event_items(events: Sequence[Event]) -> list[TimelineItem]:
    items = []
    for event in events:
        data = _event_data(event)
        detail = str(data.get("detail") or "")
        suffix = event.type.rsplit(".", 1)[-1]
        tone = {"succeeded": "good", "confirmed": "good", "paid": "good"}.get(suffix, "neutral")
        if suffix in ("failed", "rejected", "refuted"):
            tone = "bad"
        elif suffix in ("flagged", "unknown", "overpaid", "partially_paid"):
            tone = "warn"
        items.append(
            TimelineItem(
                event.created_at,
                "event",
                f"Event {event.type}",
                tone,
                [("event id", event.id)] + ([("detail", detail)] if detail else []),
                body=pretty_json(event.payload),
            )
        )
    return items


def _callback_items(callbacks: Sequence[StoredCallback], label: str) -> list[TimelineItem]:
    items = []
    for callback in callbacks:
        facts = [
            ("kind", callback.kind),
            ("outcome", callback.outcome),
            ("from", callback.source_ip or "unknown"),
        ]
        if callback.detail:
            name = "reason" if callback.outcome not in ("applied", "duplicate") else "detail"
            facts.append((name, callback.detail))
        items.append(
            TimelineItem(
                callback.received_at,
                "callback",
                f"{label} received: {callback.kind.replace('_', ' ')} ({callback.outcome})",
                _CALLBACK_TONES.get(callback.outcome, "bad"),
                facts,
                body=pretty_json(callback.body),
            )
        )
    return items


def build_transfer_timeline(
    transfer: Payout | Refund,
    *,
    events: Sequence[Event],
    callbacks: Sequence[StoredCallback],
    queries: Sequence[StatusQuery],
    deliveries: Sequence[DeliveryRecord],
    actions: Sequence[AuditEntry] = (),
) -> list[TimelineItem]:
    """Every step of a payout's or a refund's life, oldest first: the request, Daraja's
    answer, every raw Result and queue timeout, every Transaction Status query, every event
    and webhook delivery."""
    if isinstance(transfer, Payout):
        title = f"Payout requested (B2C {transfer.command_id})"
        facts = [
            ("phone", transfer.phone),
            ("amount", money(transfer.amount)),
            ("remarks", transfer.remarks),
            ("occasion", transfer.occasion or "—"),
            ("account", f"{transfer.account} ({transfer.shortcode})"),
        ]
        if transfer.batch_id is not None:
            facts.append(("batch", f"{transfer.batch_id}, row {transfer.batch_row}"))
    else:
        title = "Refund requested (reversal)"
        facts = [
            ("of", transfer.source_id),
            ("M-Pesa receipt reversed", transfer.original_receipt),
            ("amount", money(transfer.amount)),
            ("remarks", transfer.remarks),
            ("paid to", transfer.receiver_party),
        ]
    facts.append(("idempotency key", transfer.idempotency_key or "—"))
    items = [
        TimelineItem(
            transfer.created_at,
            "request",
            title,
            facts=facts,
            body=None if transfer.metadata is None else pretty_json(json.dumps(transfer.metadata)),
        )
    ]
    answered = False
    for event in events:
        suffix = event.type.rsplit(".", 1)[-1]
        if not answered and suffix in ("pending", "rejected", "unknown"):
            answered = True
            answer = {
                "pending": ("Daraja accepted the request", "good"),
                "rejected": ("Daraja refused the request", "bad"),
                "unknown": ("No answer from Daraja to the request", "warn"),
            }[suffix]
            detail = str(_event_data(event).get("detail") or "")
            items.append(
                TimelineItem(
                    event.created_at,
                    "answer",
                    answer[0],
                    answer[1],
                    [("detail", detail)] if detail else [],
                )
            )
    items += _event_items(events)
    items += _callback_items(callbacks, "Result")
    for query in queries:
        facts = [("outcome", query.outcome)]
        if query.by_receipt:
            facts.append(("by receipt", query.by_receipt))
        if query.by_originator_id:
            facts.append(("by OriginatorConversationID", query.by_originator_id))
        if query.result_code is not None:
            facts.append(("result", f"{query.result_code} {query.result_desc or ''}".strip()))
        if query.detail:
            facts.append(("detail", query.detail))
        items.append(
            TimelineItem(
                query.asked_at,
                "query",
                f"Transaction Status query: {query.outcome.replace('_', ' ')}",
                {"answered": "good", "sent": "neutral"}.get(query.outcome, "warn"),
                facts,
            )
        )
    items += [delivery_item(d) for d in deliveries]
    items += [action_item(a) for a in actions]
    items.sort(key=lambda item: (item.at, _KIND_ORDER.get(item.kind, 9)))
    return items


def build_receipt_timeline(
    receipt: Receipt,
    *,
    events: Sequence[Event],
    callbacks: Sequence[StoredCallback],
    queries: Sequence[ReceiptQuery],
    deliveries: Sequence[DeliveryRecord],
    actions: Sequence[AuditEntry] = (),
    refunds: Sequence[Refund] = (),
) -> list[TimelineItem]:
    """Every step of a C2B receipt's life, oldest first: its raw confirmation(s), every
    Transaction Status query, every event, webhook delivery, operator action and refund."""
    items = _event_items(events)
    items += _callback_items(callbacks, "Callback")
    for query in queries:
        facts = [("purpose", query.purpose), ("outcome", query.outcome)]
        if query.result_code is not None:
            facts.append(("result", f"{query.result_code} {query.result_desc or ''}".strip()))
        if query.detail:
            facts.append(("detail", query.detail))
        items.append(
            TimelineItem(
                query.asked_at,
                "query",
                f"Transaction Status query: {query.outcome.replace('_', ' ')}",
                {"confirmed": "good", "sent": "neutral", "refuted": "bad"}.get(
                    query.outcome, "warn"
                ),
                facts,
            )
        )
    items += [delivery_item(d) for d in deliveries]
    items += [action_item(a) for a in actions]
    items += [refund_item(r) for r in refunds]
    if not items or items[0].at > receipt.created_at:
        items.append(
            TimelineItem(
                receipt.created_at,
                "request",
                f"Receipt recorded (from its {receipt.source})",
                facts=[("M-Pesa receipt", receipt.trans_id), ("amount", money(receipt.amount))],
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


RECEIPT_CSV_COLUMNS: Final = (
    "id",
    "trans_id",
    "trans_time",
    "status",
    "source",
    "account",
    "shortcode",
    "amount",
    "account_reference",
    "expected_payment_id",
    "msisdn",
    "phone",
    "payer_name",
    "transaction_type",
    "invoice_number",
    "flagged",
    "flag_reason",
    "created_at",
)


def receipt_csv_rows(items: Iterable[Receipt], *, header: bool) -> str:
    """C2B receipts as CSV text (RFC 4180, UTC ISO timestamps), with the header if asked."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if header:
        writer.writerow(RECEIPT_CSV_COLUMNS)
    for r in items:
        writer.writerow(
            [
                _cell(v)
                for v in (
                    r.id,
                    r.trans_id,
                    r.trans_time,
                    r.status.value,
                    r.source,
                    r.account,
                    r.shortcode,
                    r.amount,
                    r.account_reference,
                    r.expected_payment_id,
                    r.msisdn,
                    r.phone,
                    r.payer_name,
                    r.transaction_type,
                    r.invoice_number,
                    r.flagged,
                    r.flag_reason,
                    r.created_at,
                )
            ]
        )
    return out.getvalue()


def day_range(today: date, days: int) -> list[date]:
    """The ``days`` days ending with ``today``, oldest first."""
    return [today - timedelta(days=days - 1 - i) for i in range(days)]
