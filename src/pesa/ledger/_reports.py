"""Read-only views of the ledger for people: search, a payment's history, outcome counts.

The operator dashboard reads through here; nothing in this module writes or decides. Phone
numbers are matched after :func:`pesa.daraja.normalize_msisdn`, so ``0708 374 149`` finds
``254708374149``::

    reports = LedgerReports(ledger)
    page = await reports.search_payments("0708 374 149", flagged=True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, false, func, or_, select, true

from pesa._exceptions import ValidationError
from pesa.daraja import normalize_msisdn
from pesa.ledger._engine import BEGIN_MODE
from pesa.ledger._ledger import Ledger, _row_to_callback, _row_to_event, _row_to_payment
from pesa.ledger._payout_states import TransferStatus
from pesa.ledger._receipt_book import _row_to_expected
from pesa.ledger._receipt_types import ExpectedPayment
from pesa.ledger._schema import (
    callbacks,
    expected_payments,
    payment_events,
    payments,
    payouts,
    refunds,
    webhook_deliveries,
)
from pesa.ledger._states import PaymentStatus
from pesa.ledger._transfer_types import Payout, Refund
from pesa.ledger._types import (
    DeliveryRecord,
    Event,
    Page,
    Payment,
    StoredCallback,
    row_to_delivery_record,
)

__all__ = ["Backlog", "LedgerReports", "OutcomeCount"]

_MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class OutcomeCount:
    """Payments created in one time range with one outcome.

    Attributes:
        bucket: the index of the range (``boundaries[i]`` to ``boundaries[i + 1]``).
        status: their status.
        result_code: Daraja's result code (``None`` when there is none, e.g. expired).
        expired: whether they failed because no answer came before the deadline.
        count: how many.
        amount: the sum of their requested amounts, in shillings.
    """

    bucket: int
    status: PaymentStatus
    result_code: str | None
    expired: bool
    count: int
    amount: int


@dataclass(frozen=True, slots=True)
class Backlog:
    """What the reconciler and the webhook dispatcher still have to do.

    Attributes:
        created: intents not yet sent or answered (``created``).
        pending: payments waiting for the customer's answer.
        unknown: payments whose push got no answer.
        due: pending and unknown payments due for an STK query now.
        oldest_open: when the oldest created, pending or unknown payment was created.
        deliveries_pending: webhook deliveries not yet delivered (first try or retrying).
        deliveries_retrying: those of them that failed at least once.
        deliveries_failed: deliveries given up on.
    """

    created: int
    pending: int
    unknown: int
    due: int
    oldest_open: datetime | None
    deliveries_pending: int
    deliveries_retrying: int
    deliveries_failed: int


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_PAGE:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_PAGE}", limit)


def search_condition(text: str) -> ColumnElement[bool]:
    """What a free-text search matches: the phone in any format, the payment id, the M-Pesa
    receipt, the CheckoutRequestID or the account reference (as typed or in capitals)."""
    query = text.strip()
    conditions: list[ColumnElement[bool]] = [
        payments.c.id == query,
        payments.c.receipt == query.upper(),
        payments.c.checkout_request_id == query,
        payments.c.account_reference.in_(sorted({query, query.upper()})),
    ]
    with contextlib.suppress(ValidationError):  # not a phone number: the other keys
        conditions.append(payments.c.phone == normalize_msisdn(query, field="q"))
    return or_(*conditions)


class LedgerReports:
    """Read-only queries over a :class:`~pesa.ledger.Ledger` for the operator dashboard.

    Args:
        ledger: the open ledger (its engine is shared; nothing is written).
    """

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._engine = ledger.engine
        self._postgres = self._engine.dialect.name == "postgresql"

    async def _rows(self, query: Any) -> list[Row[Any]]:
        async with self._engine.connect() as conn:
            if not self._postgres:
                conn = await conn.execution_options(**{BEGIN_MODE: "DEFERRED"})
            return list((await conn.execute(query)).all())

    async def search_payments(
        self,
        q: str | None = None,
        *,
        status: PaymentStatus | str | None = None,
        flagged: bool | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Payment]:
        """Payments matching a free-text search and filters, newest first.

        Args:
            q: a phone number in any format, a payment id, an M-Pesa receipt, a
                CheckoutRequestID or an account reference.
            status: only this status.
            flagged: only flagged (``True``) or unflagged (``False``) payments.
            created_from: created at or after (aware).
            created_to: created before (aware).
            cursor: ``next_cursor`` of the previous page.
            limit: 1 to 500.

        Raises:
            ValidationError: an unknown status, a naive date or a bad limit.
        """
        _check_limit(limit)
        query = select(payments)
        if q is not None and q.strip():
            query = query.where(search_condition(q))
        if status is not None:
            try:
                query = query.where(payments.c.status == PaymentStatus(status).value)
            except ValueError as err:
                allowed = ", ".join(s.value for s in PaymentStatus)
                raise ValidationError("status", f"must be one of {allowed}", status) from err
        if flagged is not None:
            query = query.where(payments.c.flagged.is_(true() if flagged else false()))
        for name, value in (("created_from", created_from), ("created_to", created_to)):
            if value is not None and value.tzinfo is None:
                raise ValidationError(name, "must be timezone-aware", value.isoformat())
        if created_from is not None:
            query = query.where(payments.c.created_at >= created_from)
        if created_to is not None:
            query = query.where(payments.c.created_at < created_to)
        if cursor:
            query = query.where(payments.c.id < cursor)
        rows = await self._rows(query.order_by(payments.c.id.desc()).limit(limit + 1))
        items = [_row_to_payment(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def payment_events(self, payment_id: str) -> list[Event]:
        """Every event of one payment, in the order written."""
        rows = await self._rows(
            select(payment_events)
            .where(payment_events.c.payment_id == payment_id)
            .order_by(payment_events.c.seq)
        )
        return [_row_to_event(row) for row in rows]

    async def payment_callbacks(self, payment: Payment) -> list[StoredCallback]:
        """Every raw callback about one payment, as received, refused ones included."""
        match = callbacks.c.payment_id == payment.id
        if payment.checkout_request_id is not None:
            match = or_(match, callbacks.c.checkout_request_id == payment.checkout_request_id)
        rows = await self._rows(
            select(callbacks).where(match).order_by(callbacks.c.received_at, callbacks.c.id)
        )
        return [_row_to_callback(row) for row in rows]

    def _deliveries(self) -> Any:
        return select(
            webhook_deliveries,
            payment_events.c.type.label("event_type"),
            payment_events.c.payment_id.label("payment_id"),
            payment_events.c.subject_id.label("subject_id"),
        ).join(payment_events, payment_events.c.id == webhook_deliveries.c.event_id)

    async def payment_deliveries(self, payment_id: str) -> list[DeliveryRecord]:
        """Every webhook delivery of one payment's events."""
        rows = await self._rows(
            self._deliveries()
            .where(payment_events.c.payment_id == payment_id)
            .order_by(payment_events.c.seq, webhook_deliveries.c.endpoint)
        )
        return [row_to_delivery_record(row) for row in rows]

    async def get_delivery(self, delivery_id: str) -> DeliveryRecord | None:
        """One webhook delivery, with its event's type and payment."""
        rows = await self._rows(self._deliveries().where(webhook_deliveries.c.id == delivery_id))
        return row_to_delivery_record(rows[0]) if rows else None

    async def failing_deliveries(self, *, limit: int = 50) -> list[DeliveryRecord]:
        """Deliveries given up on, and pending ones whose last attempt failed; newest first."""
        _check_limit(limit)
        failing = or_(
            webhook_deliveries.c.status == "failed",
            and_(
                webhook_deliveries.c.status == "pending",
                webhook_deliveries.c.last_error.is_not(None),
            ),
        )
        rows = await self._rows(
            self._deliveries()
            .where(failing)
            .order_by(webhook_deliveries.c.updated_at.desc(), webhook_deliveries.c.id)
            .limit(limit)
        )
        return [row_to_delivery_record(row) for row in rows]

    # -- payouts and refunds ---------------------------------------------------------------

    async def search_payouts(
        self,
        q: str | None = None,
        *,
        status: TransferStatus | str | None = None,
        batch_id: str | None = None,
        attention: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Payout]:
        """Payouts matching a free-text search and filters, newest first.

        Args:
            q: a phone number in any format, a payout id, its M-Pesa receipt, a
                ConversationID, a batch id or the occasion.
            status: only this status.
            batch_id: only this batch's rows.
            attention: only payouts a person should look at (unknown or flagged).
            cursor: ``next_cursor`` of the previous page.
            limit: 1 to 500.

        Raises:
            ValidationError: an unknown status or a bad limit.
        """
        _check_limit(limit)
        query = select(payouts)
        if q is not None and q.strip():
            text = q.strip()
            found: list[ColumnElement[bool]] = [
                payouts.c.id == text,
                payouts.c.receipt == text.upper(),
                payouts.c.conversation_id == text,
                payouts.c.originator_conversation_id == text,
                payouts.c.batch_id == text,
                payouts.c.occasion == text,
            ]
            with contextlib.suppress(ValidationError):  # not a phone number: the other keys
                found.append(payouts.c.phone == normalize_msisdn(text, field="q"))
            query = query.where(or_(*found))
        query = _transfer_filters(query, payouts, status, attention)
        if batch_id is not None:
            query = query.where(payouts.c.batch_id == batch_id)
        if cursor:
            query = query.where(payouts.c.id < cursor)
        rows = await self._rows(query.order_by(payouts.c.id.desc()).limit(limit + 1))
        items = [self._ledger.payouts._row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def search_refunds(
        self,
        q: str | None = None,
        *,
        status: TransferStatus | str | None = None,
        source_id: str | None = None,
        attention: bool = False,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[Refund]:
        """Refunds matching a free-text search and filters, newest first.

        Args:
            q: a refund id, the payment or receipt refunded, an M-Pesa receipt (the one
                reversed or the reversal's own) or a phone number in any format.
            status: only this status.
            source_id: only the refunds of this payment or receipt.
            attention: only refunds a person should look at (unknown or flagged).

        Raises:
            ValidationError: an unknown status or a bad limit.
        """
        _check_limit(limit)
        query = select(refunds)
        if q is not None and q.strip():
            text = q.strip()
            found: list[ColumnElement[bool]] = [
                refunds.c.id == text,
                refunds.c.source_id == text,
                refunds.c.original_receipt == text.upper(),
                refunds.c.receipt == text.upper(),
            ]
            with contextlib.suppress(ValidationError):
                found.append(refunds.c.phone == normalize_msisdn(text, field="q"))
            query = query.where(or_(*found))
        query = _transfer_filters(query, refunds, status, attention)
        if source_id is not None:
            query = query.where(refunds.c.source_id == source_id)
        if cursor:
            query = query.where(refunds.c.id < cursor)
        rows = await self._rows(query.order_by(refunds.c.id.desc()).limit(limit + 1))
        items = [self._ledger.refunds._row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def expected_payments(self, ids: Iterable[str | None]) -> dict[str, ExpectedPayment]:
        """The expected payments with these ids (``None`` skipped), by id, in one query."""
        wanted = sorted({i for i in ids if i})
        if not wanted:
            return {}
        rows = await self._rows(select(expected_payments).where(expected_payments.c.id.in_(wanted)))
        found = [_row_to_expected(row) for row in rows]
        return {e.id: e for e in found}

    async def subject_events(self, subject_id: str) -> list[Event]:
        """Every event about a receipt, payout or refund, in the order written."""
        rows = await self._rows(
            select(payment_events)
            .where(payment_events.c.subject_id == subject_id)
            .order_by(payment_events.c.seq)
        )
        return [_row_to_event(row) for row in rows]

    async def subject_callbacks(self, subject_id: str) -> list[StoredCallback]:
        """Every raw callback (Result, queue timeout, confirmation) matched to a receipt,
        payout or refund, as received."""
        rows = await self._rows(
            select(callbacks)
            .where(callbacks.c.subject_id == subject_id)
            .order_by(callbacks.c.received_at, callbacks.c.id)
        )
        return [_row_to_callback(row) for row in rows]

    async def subject_deliveries(self, subject_id: str) -> list[DeliveryRecord]:
        """Every webhook delivery of the events about a receipt, payout or refund."""
        rows = await self._rows(
            self._deliveries()
            .where(payment_events.c.subject_id == subject_id)
            .order_by(payment_events.c.seq, webhook_deliveries.c.endpoint)
        )
        return [row_to_delivery_record(row) for row in rows]

    async def outcomes(self, boundaries: Sequence[datetime]) -> list[OutcomeCount]:
        """Count payments by creation range, status and result code, in one query.

        Args:
            boundaries: increasing aware datetimes; range ``i`` is ``[boundaries[i],
                boundaries[i + 1])``.
        """
        if len(boundaries) < 2 or any(b.tzinfo is None for b in boundaries):
            raise ValidationError("boundaries", "must be at least two aware datetimes")
        if any(a >= b for a, b in zip(boundaries, boundaries[1:], strict=False)):
            raise ValidationError("boundaries", "must be increasing")
        bucket = case(
            *[(payments.c.created_at < end, index) for index, end in enumerate(boundaries[1:])],
            else_=len(boundaries) - 1,
        ).label("bucket")
        expired = case((payments.c.failure_reason == "expired", 1), else_=0).label("expired")
        query = (
            select(
                bucket,
                payments.c.status,
                payments.c.result_code,
                expired,
                func.count().label("count"),
                func.coalesce(func.sum(payments.c.amount), 0).label("amount"),
            )
            .where(
                payments.c.created_at >= boundaries[0],
                payments.c.created_at < boundaries[-1],
            )
            .group_by(bucket, payments.c.status, payments.c.result_code, expired)
        )
        return [
            OutcomeCount(
                bucket=int(m["bucket"]),
                status=PaymentStatus(m["status"]),
                result_code=m["result_code"],
                expired=bool(m["expired"]),
                count=int(m["count"]),
                amount=int(m["amount"]),
            )
            for m in (row._mapping for row in await self._rows(query))
        ]

    async def backlog(self, *, now: datetime, min_age: timedelta) -> Backlog:
        """The reconciler's and the dispatcher's outstanding work at ``now``."""
        open_statuses = [
            PaymentStatus.CREATED.value,
            PaymentStatus.PENDING.value,
            PaymentStatus.UNKNOWN.value,
        ]
        counts = {s: 0 for s in open_statuses}
        for row in await self._rows(
            select(payments.c.status, func.count().label("n"))
            .where(payments.c.status.in_(open_statuses))
            .group_by(payments.c.status)
        ):
            counts[row._mapping["status"]] = int(row._mapping["n"])
        due_rows = await self._rows(
            select(func.count())
            .select_from(payments)
            .where(
                payments.c.status.in_(open_statuses[1:]),
                payments.c.created_at <= now - min_age,
                or_(payments.c.next_check_at.is_(None), payments.c.next_check_at <= now),
            )
        )
        oldest = await self._rows(
            select(func.min(payments.c.created_at)).where(payments.c.status.in_(open_statuses))
        )
        deliveries = {"pending": 0, "failed": 0}
        retrying = 0
        for row in await self._rows(
            select(
                webhook_deliveries.c.status,
                webhook_deliveries.c.last_error.is_not(None).label("failed_before"),
                func.count().label("n"),
            )
            .where(webhook_deliveries.c.status.in_(["pending", "failed"]))
            .group_by(webhook_deliveries.c.status, webhook_deliveries.c.last_error.is_not(None))
        ):
            m = row._mapping
            status, count = m["status"], int(m["n"])
            deliveries[status] += count
            if status == "pending" and m["failed_before"]:
                retrying += count
        oldest_open = oldest[0][0] if oldest else None
        return Backlog(
            created=counts[PaymentStatus.CREATED.value],
            pending=counts[PaymentStatus.PENDING.value],
            unknown=counts[PaymentStatus.UNKNOWN.value],
            due=int(due_rows[0][0]),
            oldest_open=_aware(oldest_open),
            deliveries_pending=deliveries["pending"],
            deliveries_retrying=retrying,
            deliveries_failed=deliveries["failed"],
        )


def _transfer_filters(query: Any, table: Any, status: Any, attention: bool) -> Any:
    if status is not None:
        try:
            query = query.where(table.c.status == TransferStatus(status).value)
        except ValueError as err:
            allowed = ", ".join(s.value for s in TransferStatus)
            raise ValidationError("status", f"must be one of {allowed}", status) from err
    if attention:
        query = query.where(
            or_(table.c.status == TransferStatus.UNKNOWN.value, table.c.flagged.is_(true()))
        )
    return query


def _aware(value: Any) -> datetime | None:
    # func.min() loses the column's type decorator: SQLite hands back a naive UTC string
    # or datetime, PostgreSQL an aware datetime.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
