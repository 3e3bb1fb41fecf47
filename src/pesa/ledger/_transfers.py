"""Durable payouts and refunds: intents, transitions, Results, status queries, the outbox.

The same discipline as payments (:mod:`pesa.ledger._ledger`): every transition is one
transaction that reads the row (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
asks the pure state machine (:func:`pesa.ledger.decide_transfer`), updates the row guarded
by its ``version`` and writes its events and webhook deliveries; every Result is stored raw
in ``callbacks`` in the same transaction that applies it. Reach these books through
``ledger.payouts``, ``ledger.refunds`` and ``ledger.status_queries``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from sqlalchemy import Row, Table, and_, case, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa._logging import get_logger, mask_phone, redact
from pesa.daraja import normalize_msisdn
from pesa.ledger._engine import BEGIN_MODE
from pesa.ledger._errors import (
    IdempotencyConflictError,
    LedgerConflictError,
    PaymentNotFoundError,
    ReceiptNotFoundError,
    RefundNotAllowedError,
    TransferNotFoundError,
)
from pesa.ledger._ids import new_id
from pesa.ledger._ledger import _VersionConflict
from pesa.ledger._payout_states import (
    PAYOUT_COMMANDS,
    TransferAccepted,
    TransferDecision,
    TransferExpired,
    TransferInput,
    TransferKind,
    TransferNotFound,
    TransferOutcomeUnknown,
    TransferRefused,
    TransferResult,
    TransferState,
    TransferStatus,
    TransferTimedOut,
    decide_transfer,
    transfer_outcome,
)
from pesa.ledger._receipts import ReceiptStatus
from pesa.ledger._results import (
    ParsedResult,
    initiator_code,
    parse_payout_result,
    parse_reversal_result,
    parse_status_result,
    parse_timeout,
)
from pesa.ledger._schema import (
    UTCDateTime,
    callbacks,
    payments,
    payouts,
    receipts,
    refunds,
    status_queries,
)
from pesa.ledger._states import DecisionKind, PaymentStatus
from pesa.ledger._transfer_types import (
    BatchSummary,
    OutcomeStatus,
    Payout,
    PayoutSpec,
    Refund,
    RefundRoom,
    StatusQuery,
    TransferOutcome,
    payout_hash,
)

if TYPE_CHECKING:
    from pesa.ledger._ledger import Ledger

__all__ = [
    "PayoutBook",
    "RefundBook",
    "StatusBook",
]

log = get_logger("pesa.ledger")

T = TypeVar("T", Payout, Refund)


_MAX_ERROR_TEXT = 1000
_MAX_PAGE = 1000
_OPEN = (TransferStatus.CREATED, TransferStatus.PENDING, TransferStatus.UNKNOWN)
# Refunds that still hold part of what was paid: everything not failed or rejected, and a
# failed one whose success Result awaits Transaction Status.
_HOLDING = (
    TransferStatus.CREATED.value,
    TransferStatus.PENDING.value,
    TransferStatus.UNKNOWN.value,
    TransferStatus.SUCCEEDED.value,
)


def _hash(*parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _outcome_status(decision: TransferDecision) -> OutcomeStatus:
    return transfer_outcome(decision)


_TRANSFER_FIELDS = (
    "id",
    "amount",
    "metadata",
    "idempotency_key",
    "originator_conversation_id",
    "conversation_id",
    "result_code",
    "result_desc",
    "receipt",
    "counterparty",
    "completed_at",
    "failure_reason",
    "flag_reason",
    "first_sent_at",
    "created_at",
    "updated_at",
    "send_at",
    "next_check_at",
    "claimed_until",
    "evidence_callback_id",
    "verify_at",
    "verify_since",
    "expired_at",
)


def _common(m: Any) -> dict[str, Any]:
    values = {name: m[name] for name in _TRANSFER_FIELDS}
    paid = m["paid_amount"]
    values.update(
        status=TransferStatus(m["status"]),
        amount=int(m["amount"]),
        ids_verified=bool(m["ids_verified"]),
        paid_amount=None if paid is None else Decimal(paid),
        flagged=bool(m["flagged"]),
        attempts=int(m["attempts"]),
        version=int(m["version"]),
        check_count=int(m["check_count"]),
    )
    return values


class _Book(ABC, Generic[T]):
    """What payouts and refunds share: transitions, Results, claims for status checks."""

    kind: ClassVar[TransferKind]
    table: ClassVar[Table]
    result_kind: ClassVar[str]
    timeout_kind: ClassVar[str]

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.max_sends = 3

    # -- rows and state ---------------------------------------------------------------------

    @abstractmethod
    def _row(self, row: Row[Any] | Any) -> T:
        """Defined by each book."""

    @abstractmethod
    def _parse(self, body: bytes) -> ParsedResult:
        """Defined by each book."""

    @staticmethod
    def _named(parsed: ParsedResult) -> str | None:
        """The id a stored Result is found by later (``callbacks.checkout_request_id``)."""
        return parsed.originator_conversation_id or parsed.conversation_id

    async def _lock(self, conn: AsyncConnection, where: Any) -> T | None:
        # First in the transaction: the event feed must see it before it may write events.
        await self._ledger._hold_feed(conn)
        query = select(self.table).where(where)
        if self._ledger._postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        return None if row is None else self._row(row)

    async def _load_state(self, conn: AsyncConnection, current: T) -> TransferState:
        evidence: TransferResult | None = None
        evidence_id = current.evidence_callback_id
        if evidence_id is not None:
            row = (
                await conn.execute(select(callbacks.c.body).where(callbacks.c.id == evidence_id))
            ).first()
            if row is not None:
                try:
                    evidence = self._parse(bytes(row[0])).result
                except (InvalidCallbackError, ValueError, TypeError, KeyError):  # pragma: no cover
                    evidence = None
        return TransferState(
            status=current.status,
            amount=current.amount,
            attempts=current.attempts,
            originator_conversation_id=current.originator_conversation_id,
            conversation_id=current.conversation_id,
            ids_verified=current.ids_verified,
            receipt=current.receipt,
            result_code=current.result_code,
            flagged=current.flagged,
            flag_reason=current.flag_reason,
            evidence=evidence,
            evidence_id=evidence_id if evidence is not None else None,
            verifying=current.verify_at is not None,
            expired=current.expired_at is not None,
            phone=current.phone,
        )

    async def _apply(
        self,
        conn: AsyncConnection,
        current: T,
        event: TransferInput,
        *,
        callback_id: str | None = None,
        resend: bool = False,
        always: dict[str, Any] | None = None,
    ) -> tuple[TransferDecision, T]:
        """Decide and write (row, events, deliveries) in ``conn``; no commit.

        ``always`` are bookkeeping values written whatever the decision (ending a send).
        """
        ledger = self._ledger
        state = await self._load_state(conn, current)
        decision = decide_transfer(
            state,
            event,
            kind=self.kind,
            lookup=initiator_code,
            resend=resend,
            max_sends=self.max_sends,
        )
        if not decision.writes and not always:
            return decision, current
        now = ledger._now()
        changes: dict[str, Any] = dict(always or {})
        if decision.writes:
            changes.update(decision.changes)
        if "status" in changes:
            changes["status"] = TransferStatus(changes["status"]).value
            changes["claimed_until"] = None
            changes["next_check_at"] = None
        if decision.verify:
            changes["verify_at"] = now
            changes["verify_since"] = current.verify_since or now
        if decision.keep_evidence:
            if callback_id is None:  # pragma: no cover - only Results are kept as evidence
                raise LedgerConflictError("evidence kept without a stored callback")
            changes["evidence_callback_id"] = callback_id
        if decision.resend:
            changes["send_at"] = now
            changes["claimed_until"] = None
        if isinstance(event, TransferExpired) and decision.kind is DecisionKind.APPLIED:
            changes["expired_at"] = now
        if isinstance(changes.get("completed_at"), datetime):
            changes["completed_at"] = changes["completed_at"].astimezone(UTC)
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        result = await conn.execute(
            update(self.table)
            .where(self.table.c.id == current.id, self.table.c.version == current.version)
            .values(changes)
        )
        if result.rowcount != 1:
            raise _VersionConflict
        fields = {f.name for f in dataclasses.fields(current)}
        snapshot = {k: v for k, v in changes.items() if k in fields and k != "status"}
        if "ids_verified" in changes:
            snapshot["ids_verified"] = bool(changes["ids_verified"])
        snapshot["status"] = TransferStatus(changes.get("status", current.status))
        updated = dataclasses.replace(current, **snapshot)
        if decision.writes and decision.events:
            data = {self.kind: updated.to_dict(), "detail": decision.detail}
            types = [f"{self.kind}.{e}" for e in decision.events]
            events = [(event_type, data) for event_type in types]
            await ledger._flush(conn, ledger._outbox_inserts(updated.id, events, now))
        if decision.writes:
            log.info(
                "%s %s: %s -> %s (%s)",
                self.kind,
                current.id,
                current.status,
                updated.status,
                decision.detail,
            )
        return decision, updated

    async def _transition(
        self,
        transfer_id: str,
        event: TransferInput,
        *,
        always: dict[str, Any] | None = None,
        after: Callable[[AsyncConnection, T], Awaitable[T]] | None = None,
    ) -> T:
        async def work(conn: AsyncConnection) -> T:
            current = await self._lock(conn, self.table.c.id == transfer_id)
            if current is None:
                raise TransferNotFoundError(transfer_id)
            decision, updated = await self._apply(conn, current, event, always=always)
            if after is not None:
                updated = await after(conn, updated)
            return updated

        transfer: T = await self._ledger._write(work)
        return transfer

    # -- the answer to a send ---------------------------------------------------------------

    _END_SEND: ClassVar[dict[str, Any]] = {"send_at": None, "claimed_until": None}

    async def mark_accepted(
        self, transfer_id: str, conversation_id: str, originator_conversation_id: str | None
    ) -> T:
        """Daraja accepted the request (its synchronous answer gave ``conversation_id``).

        A Result that arrived before this answer was recorded (kept as evidence because its
        ConversationID could not be checked yet) is applied now, in the same transaction.
        """
        if not isinstance(conversation_id, str) or not conversation_id.strip():
            raise ValidationError("conversation_id", "must be a non-empty string")
        event = TransferAccepted(conversation_id.strip(), originator_conversation_id)

        async def early(conn: AsyncConnection, transfer: T) -> T:
            return await self._apply_early_result(conn, transfer)

        return await self._transition(transfer_id, event, always=self._END_SEND, after=early)

    async def _apply_early_result(self, conn: AsyncConnection, transfer: T) -> T:
        transfer = await self._apply_evidence(conn, transfer)
        # A Result that named ids nobody had recorded yet (a reversal's: Daraja gives them):
        # stored as unknown_payment, applied now, in the order received.
        ids = [i for i in (transfer.conversation_id, transfer.originator_conversation_id) if i]
        if not ids:
            return transfer
        rows = (
            await conn.execute(
                select(callbacks.c.id, callbacks.c.body)
                .where(
                    callbacks.c.kind == self.result_kind,
                    callbacks.c.outcome == "unknown_payment",
                    callbacks.c.checkout_request_id.in_(ids),
                )
                .order_by(callbacks.c.received_at, callbacks.c.id)
            )
        ).all()
        for callback_id, body in rows:
            try:
                parsed = self._parse(bytes(body))
            except (InvalidCallbackError, ValueError, TypeError, KeyError):  # pragma: no cover
                continue
            decision, transfer = await self._apply(
                conn, transfer, parsed.result, callback_id=callback_id
            )
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id)
                .values(
                    outcome=_outcome_status(decision),
                    detail=f"{decision.detail} (arrived before Daraja's answer was recorded)",
                    subject_id=transfer.id,
                )
            )
        return transfer

    async def _apply_evidence(self, conn: AsyncConnection, transfer: T) -> T:
        evidence_id = transfer.evidence_callback_id
        if evidence_id is None or transfer.status is not TransferStatus.PENDING:
            return transfer
        row = (
            await conn.execute(select(callbacks.c.body).where(callbacks.c.id == evidence_id))
        ).first()
        if row is None:  # pragma: no cover - evidence rows are never deleted
            return transfer
        parsed = self._parse(bytes(row[0]))
        if parsed.result.conversation_id != transfer.conversation_id:
            return transfer
        # Clear the evidence so the Result is judged afresh, now that its id can be checked.
        cleared = await self._write_fields(conn, transfer, {"evidence_callback_id": None})
        decision, applied = await self._apply(conn, cleared, parsed.result, callback_id=evidence_id)
        await conn.execute(
            update(callbacks)
            .where(callbacks.c.id == evidence_id)
            .values(
                outcome=_outcome_status(decision),
                detail=f"{decision.detail} (arrived before Daraja's answer was recorded)",
            )
        )
        return applied

    async def _write_fields(self, conn: AsyncConnection, current: T, values: dict[str, Any]) -> T:
        now = self._ledger._now()
        changes = {**values, "version": current.version + 1, "updated_at": now}
        result = await conn.execute(
            update(self.table)
            .where(self.table.c.id == current.id, self.table.c.version == current.version)
            .values(changes)
        )
        if result.rowcount != 1:
            raise _VersionConflict
        return dataclasses.replace(current, **changes)

    async def mark_refused(
        self,
        transfer_id: str,
        error_code: str | None,
        error_message: str,
        *,
        duplicate: bool = False,
    ) -> T:
        """Daraja refused the request; ``duplicate`` when it names an earlier send."""
        event = TransferRefused(error_code, redact(error_message)[:_MAX_ERROR_TEXT], duplicate)
        return await self._transition(transfer_id, event, always=self._END_SEND)

    async def mark_unknown(self, transfer_id: str, reason: str) -> T:
        """The request may have left, but no usable answer came: settled by status."""
        event = TransferOutcomeUnknown(redact(reason)[:_MAX_ERROR_TEXT])
        return await self._transition(transfer_id, event, always=self._END_SEND)

    async def expire(self, transfer_id: str) -> T:
        """The deadline passed: an open transfer is flagged and no longer checked."""
        return await self._transition(transfer_id, TransferExpired())

    # -- Results ----------------------------------------------------------------------------

    @abstractmethod
    async def _find_for_result(self, conn: AsyncConnection, parsed: ParsedResult) -> T | None:
        """Defined by each book."""

    async def ingest_result(self, body: bytes, *, source_ip: str | None) -> TransferOutcome:
        """Store a raw ``Result`` POST and apply it, in one transaction.

        The body is always stored (kind ``b2c_result`` / ``reversal_result``), even when it
        is not a Result or names nothing we sent. Answer Daraja 200 only after this returns.
        """
        return await self._ingest(body, source_ip, self.result_kind, self._apply_result)

    async def ingest_timeout(self, body: bytes, *, source_ip: str | None) -> TransferOutcome:
        """Store a raw QueueTimeOutURL call and apply it: the transfer becomes ``unknown``."""
        return await self._ingest(body, source_ip, self.timeout_kind, self._apply_timeout)

    async def _ingest(
        self,
        body: bytes,
        source_ip: str | None,
        kind: str,
        apply: Callable[
            [AsyncConnection, bytes, str],
            Awaitable[tuple[OutcomeStatus, T | None, str, str | None]],
        ],
    ) -> TransferOutcome:
        ledger = self._ledger
        received = ledger._now()
        record: dict[str, Any] = {
            "id": new_id("cb", now_ms=int(received.timestamp() * 1000)),
            "kind": kind,
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }

        async def work(conn: AsyncConnection) -> TransferOutcome:
            try:
                status, subject, detail, named = await apply(conn, bytes(body), record["id"])
            except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
                status, subject, detail, named = "invalid", None, f"invalid {kind}: {err}", None
            await conn.execute(
                insert(callbacks).values(
                    **record,
                    outcome=status,
                    detail=detail[:_MAX_ERROR_TEXT],
                    checkout_request_id=named,
                    subject_id=None if subject is None else subject.id,
                )
            )
            return TransferOutcome(record["id"], status, subject, detail)

        try:
            outcome: TransferOutcome = await ledger._write(work)
        except Exception as err:
            # Never lose the raw body, even when applying it failed unexpectedly.
            await ledger._store_callback(record, "error", type(err).__name__, None, None)
            raise
        if outcome.status not in ("applied", "duplicate"):
            log.warning(
                "%s %s: %s (%s)", kind, outcome.callback_id, outcome.status, redact(outcome.detail)
            )
        return outcome

    async def _apply_result(
        self, conn: AsyncConnection, body: bytes, callback_id: str
    ) -> tuple[OutcomeStatus, T | None, str, str | None]:
        parsed = self._parse(body)
        named = self._named(parsed)
        current = await self._find_for_result(conn, parsed)
        if current is None:
            return "unknown_payment", None, f"no {self.kind} has these ids", named
        decision, updated = await self._apply(conn, current, parsed.result, callback_id=callback_id)
        return _outcome_status(decision), updated, decision.detail, named

    async def _apply_timeout(
        self, conn: AsyncConnection, body: bytes, callback_id: str
    ) -> tuple[OutcomeStatus, T | None, str, str | None]:
        del callback_id
        conversation, originator = parse_timeout(body)
        current = None
        if conversation is not None:
            current = await self._lock(conn, self.table.c.conversation_id == conversation)
        if current is None and originator is not None:
            current = await self._lock(conn, self.table.c.originator_conversation_id == originator)
        named = originator or conversation
        if current is None:
            return "unknown_payment", None, f"no {self.kind} has these ids", named
        decision, updated = await self._apply(conn, current, TransferTimedOut())
        return _outcome_status(decision), updated, decision.detail, named

    # -- status checks ----------------------------------------------------------------------

    async def claim_for_checks(
        self, *, limit: int, min_age: timedelta, lease: timedelta
    ) -> list[T]:
        """Claim open transfers due for a Transaction Status query (see the reconciler).

        Due: pending or unknown, first sent ``min_age`` ago, ``next_check_at`` reached, not
        expired, no send due; or a verification asked for (``verify_at`` reached). Claimed
        rows are leased (``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and ``check_count`` grows.
        """
        _check_limit(limit)
        ledger = self._ledger
        now = ledger._now()
        table = self.table
        free = or_(table.c.claimed_until.is_(None), table.c.claimed_until <= now)
        routine = and_(
            table.c.status.in_([TransferStatus.PENDING.value, TransferStatus.UNKNOWN.value]),
            # Daraja is given min_age to answer from the first send, not from the creation
            # (a batch row may wait behind the payout pace long after it was committed).
            func.coalesce(table.c.first_sent_at, table.c.created_at) <= now - min_age,
            or_(table.c.next_check_at.is_(None), table.c.next_check_at <= now),
            table.c.expired_at.is_(None),
            table.c.send_at.is_(None),
        )
        verification = and_(table.c.verify_at <= now, table.c.send_at.is_(None))
        # A read first: an idle worker must not take SQLite's write lock every round.
        if not await ledger._select(
            select(table.c.id).where(or_(verification, routine), free).limit(1)
        ):
            return []

        async def work(conn: AsyncConnection) -> list[T]:
            ids: list[str] = []
            for due, order in (
                (verification, (table.c.verify_at,)),
                (routine, (table.c.next_check_at.nulls_first(), table.c.created_at)),
            ):
                if len(ids) >= limit:
                    break
                query = select(table.c.id).where(due, free).order_by(*order)
                if ids:
                    query = query.where(table.c.id.not_in(ids))
                query = query.limit(limit - len(ids))
                if ledger._postgres:
                    query = query.with_for_update(skip_locked=True)
                ids.extend(row[0] for row in (await conn.execute(query)).all())
            if not ids:
                return []
            rows = await conn.execute(
                update(table)
                .where(table.c.id.in_(ids))
                .values(claimed_until=now + lease, check_count=table.c.check_count + 1)
                .returning(*table.c)
            )
            claimed = [self._row(row) for row in rows.all()]
            claimed.sort(key=lambda t: ids.index(t.id))
            return claimed

        claimed: list[T] = await ledger._write(work)
        return claimed

    async def record_check(self, transfer_id: str, next_check_at: datetime) -> T:
        """Release the claim and schedule the next check (of the transfer and of its
        verification, if one is asked for). Writes no event."""
        table = self.table

        async def work(conn: AsyncConnection) -> T:
            row = (
                await conn.execute(
                    update(table)
                    .where(table.c.id == transfer_id)
                    .values(
                        next_check_at=next_check_at,
                        claimed_until=None,
                        verify_at=_keep_verify(table, next_check_at),
                    )
                    .returning(*table.c)
                )
            ).first()
            if row is None:
                raise TransferNotFoundError(transfer_id)
            return self._row(row)

        transfer: T = await self._ledger._write(work)
        return transfer

    async def apply_status(
        self,
        conn: AsyncConnection,
        transfer_id: str,
        event: TransferInput,
        *,
        resend: bool,
    ) -> tuple[TransferDecision, T] | None:
        """Apply a Transaction Status answer about ``transfer_id`` in ``conn`` (no commit)."""
        current = await self._lock(conn, self.table.c.id == transfer_id)
        if current is None:
            return None
        return await self._apply(conn, current, event, resend=resend)

    # -- reads ------------------------------------------------------------------------------

    async def get(self, transfer_id: str) -> T | None:
        """The payout (``po_...``) or refund (``rf_...``) with this id, or ``None``."""
        rows = await self._ledger._select(select(self.table).where(self.table.c.id == transfer_id))
        return self._row(rows[0]) if rows else None

    async def by_key(self, idempotency_key: str) -> T | None:
        """The transfer created with this idempotency key, or ``None``."""
        rows = await self._ledger._select(
            select(self.table).where(self.table.c.idempotency_key == idempotency_key)
        )
        return self._row(rows[0]) if rows else None

    async def stats(self) -> dict[str, int]:
        """Count by status (every status present, zeros included)."""
        rows = await self._ledger._select(
            select(self.table.c.status, func.count()).group_by(self.table.c.status)
        )
        counts = {s.value: 0 for s in TransferStatus}
        counts.update({str(status): int(n) for status, n in (tuple(row) for row in rows)})
        return counts


def _keep_verify(table: Table, when: datetime) -> Any:
    return case((table.c.verify_at.is_(None), None), else_=when)


def _check_limit(limit: int, maximum: int = _MAX_PAGE) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise ValidationError("limit", f"must be an integer from 1 to {maximum}", limit)


# -- payouts -------------------------------------------------------------------------------------


class PayoutBook(_Book[Payout]):
    """B2C payouts in the ledger (``ledger.payouts``).

    Example:
        >>> payout, created = await ledger.payouts.create(  # doctest: +SKIP
        ...     "salary-2026-11-42", PayoutSpec("0708374149", 1500, "SalaryPayment", "Salary"),
        ...     claim=timedelta(seconds=120))
    """

    kind: ClassVar[TransferKind] = "payout"
    table: ClassVar[Table] = payouts
    result_kind: ClassVar[str] = "b2c_result"
    timeout_kind: ClassVar[str] = "b2c_timeout"

    def _row(self, row: Row[Any] | Any) -> Payout:
        m = row._mapping if isinstance(row, Row) else row
        return Payout(
            **_common(m),
            phone=m["phone"],
            command_id=m["command_id"],
            remarks=m["remarks"],
            occasion=m["occasion"],
            account=m["account"],
            shortcode=m["shortcode"],
            batch_id=m["batch_id"],
            batch_row=None if m["batch_row"] is None else int(m["batch_row"]),
        )

    def _parse(self, body: bytes) -> ParsedResult:
        return parse_payout_result(body)

    async def _find_for_result(self, conn: AsyncConnection, parsed: ParsedResult) -> Payout | None:
        # The OriginatorConversationID is ours (the payout's id): it finds the payout even
        # when Daraja's answer, and so the ConversationID, was lost.
        if parsed.originator_conversation_id is not None:
            found = await self._lock(
                conn, payouts.c.originator_conversation_id == parsed.originator_conversation_id
            )
            if found is not None:
                return found
        if parsed.conversation_id is not None:
            return await self._lock(conn, payouts.c.conversation_id == parsed.conversation_id)
        return None

    @staticmethod
    def _check(spec: PayoutSpec) -> PayoutSpec:
        amount = spec.amount
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError("amount", "must be an integer number of shillings")
        if amount < 1:
            raise ValidationError("amount", "must be at least 1 shilling", amount)
        if spec.command_id not in PAYOUT_COMMANDS:
            raise ValidationError("command", f"must be one of {', '.join(PAYOUT_COMMANDS)}")
        if not isinstance(spec.remarks, str) or not 2 <= len(spec.remarks) <= 100:
            raise ValidationError("remarks", "must be 2 to 100 characters")
        if spec.occasion is not None and (
            not isinstance(spec.occasion, str) or len(spec.occasion) > 100
        ):
            raise ValidationError("occasion", "must be at most 100 characters")
        if not isinstance(spec.account, str) or not 1 <= len(spec.account) <= 64:
            raise ValidationError("account", "must be 1 to 64 characters")
        if not (spec.shortcode.isascii() and spec.shortcode.isdigit() and len(spec.shortcode) < 17):
            raise ValidationError("shortcode", "must be digits")
        if spec.metadata is not None:
            if not isinstance(spec.metadata, dict):
                raise ValidationError("metadata", "must be a JSON object")
            try:
                json.dumps(spec.metadata, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValidationError("metadata", "must be JSON-serialisable") from err
        return dataclasses.replace(spec, phone=normalize_msisdn(spec.phone))

    @staticmethod
    def _digest(spec: PayoutSpec) -> str:
        return payout_hash(spec)

    def _values(
        self,
        spec: PayoutSpec,
        key: str | None,
        now: datetime,
        *,
        claim: timedelta | None,
        batch_id: str | None = None,
        batch_row: int | None = None,
    ) -> dict[str, Any]:
        payout_id = new_id("po", now_ms=int(now.timestamp() * 1000))
        return {
            "id": payout_id,
            "idempotency_key": key,
            "request_hash": self._digest(spec),
            "status": TransferStatus.CREATED.value,
            "amount": spec.amount,
            "metadata": spec.metadata,
            # Ours and stable: a re-send of this payout is a duplicate to Daraja.
            "originator_conversation_id": payout_id,
            "conversation_id": None,
            "ids_verified": True,
            "flagged": False,
            "attempts": 1 if claim is not None else 0,
            "first_sent_at": now if claim is not None else None,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "send_at": now,
            "claimed_until": None if claim is None else now + claim,
            "check_count": 0,
            "phone": spec.phone,
            "command_id": spec.command_id,
            "remarks": spec.remarks,
            "occasion": spec.occasion,
            "account": spec.account,
            "shortcode": spec.shortcode,
            "batch_id": batch_id,
            "batch_row": batch_row,
        }

    async def create(
        self,
        idempotency_key: str | None,
        spec: PayoutSpec,
        *,
        claim: timedelta | None = None,
    ) -> tuple[Payout, bool]:
        """Commit a payout intent before anything is sent to Daraja.

        Args:
            idempotency_key: the caller's key; a repeat with the same parameters returns the
                existing payout (and sends nothing).
            spec: the payout (phone in any Safaricom format).
            claim: the caller sends it now: the row is claimed for this long and its first
                attempt counted (if the caller dies, the worker re-sends it after the claim,
                with the same OriginatorConversationID). Without it the worker sends it.

        Returns:
            ``(payout, created)``.

        Raises:
            ValidationError: a field is invalid.
            IdempotencyConflictError: the key was used with other parameters (HTTP 409).
        """
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255
        ):
            raise ValidationError("idempotency_key", "must be a string of 1 to 255 characters")
        spec = self._check(spec)
        digest = self._digest(spec)
        if idempotency_key is not None:
            existing = await self._by_key_hash(idempotency_key)
            if existing is not None:
                return self._repeat(existing, idempotency_key, digest), False
        values = self._values(spec, idempotency_key, self._ledger._now(), claim=claim)
        try:
            async with self._ledger.engine.begin() as conn:
                await conn.execute(insert(payouts).values(values))
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = await self._by_key_hash(idempotency_key)
            if existing is None:
                raise
            return self._repeat(existing, idempotency_key, digest), False
        payout = self._row({**values, **_DEFAULTS})
        log.info(
            "payout %s created for %s (%d KES)", payout.id, mask_phone(spec.phone), spec.amount
        )
        return payout, True

    def _repeat(self, existing: tuple[Payout, str], key: str, digest: str) -> Payout:
        payout, stored = existing
        if stored != digest:
            raise IdempotencyConflictError(key, payout.id)
        return payout

    async def _by_key_hash(self, key: str) -> tuple[Payout, str] | None:
        rows = await self._ledger._select(select(payouts).where(payouts.c.idempotency_key == key))
        if not rows:
            return None
        return self._row(rows[0]), rows[0]._mapping["request_hash"]

    async def create_batch(
        self, batch_id: str, specs: Sequence[PayoutSpec]
    ) -> tuple[BatchSummary, int]:
        """Commit every row of a batch at once (one transaction), idempotently.

        Row ``n`` has the idempotency key ``batch:<batch_id>:<n>``: posting the same batch
        again (after a crash, from a resumed CLI) creates only the rows not yet stored and
        sends nothing twice; a row stored with other parameters is a conflict. The worker
        sends the rows at the configured rate.

        Returns:
            ``(summary, created)``: ``created`` is how many rows are new.

        Raises:
            ValidationError: a row is invalid (``field`` is ``rows[n].<field>``); nothing is
                stored.
            IdempotencyConflictError: a row exists with other parameters.
        """
        if not isinstance(batch_id, str) or not 1 <= len(batch_id) <= 100:
            raise ValidationError("batch_id", "must be 1 to 100 characters")
        if not batch_id.isprintable():
            raise ValidationError("batch_id", "must be printable")
        if not specs:
            raise ValidationError("rows", "a batch needs at least one row")
        checked: list[PayoutSpec] = []
        for index, spec in enumerate(specs):
            try:
                checked.append(self._check(spec))
            except ValidationError as err:
                raise ValidationError(f"rows[{index}].{err.field}", err.rule) from err
        ledger = self._ledger

        async def work(conn: AsyncConnection) -> int:
            stored = {
                int(row.batch_row): (row.id, row.request_hash)
                for row in (
                    await conn.execute(
                        select(payouts.c.id, payouts.c.batch_row, payouts.c.request_hash).where(
                            payouts.c.batch_id == batch_id
                        )
                    )
                ).all()
            }
            now = ledger._now()
            rows = []
            for index, spec in enumerate(checked):
                key = f"batch:{batch_id}:{index}"
                if index in stored:
                    payout_id, digest = stored[index]
                    if digest != self._digest(spec):
                        raise IdempotencyConflictError(key, payout_id)
                    continue
                rows.append(
                    self._values(spec, key, now, claim=None, batch_id=batch_id, batch_row=index)
                )
            if rows:
                await conn.execute(insert(payouts), rows)
            return len(rows)

        created: int = await ledger._write(work)
        if created:
            log.info("batch %s: %d payout(s) committed", batch_id, created)
        return await self.batch_summary(batch_id), created

    async def claim_for_sending(self, *, limit: int, lease: timedelta) -> list[Payout]:
        """Claim payouts whose request is due (new batch rows, a re-send asked for, a sender
        that died with its claim) and count an attempt for each, committed before sending."""
        _check_limit(limit)
        ledger = self._ledger
        now = ledger._now()
        due = (
            payouts.c.send_at <= now,
            payouts.c.status.in_([TransferStatus.CREATED.value, TransferStatus.UNKNOWN.value]),
            or_(payouts.c.claimed_until.is_(None), payouts.c.claimed_until <= now),
        )
        # A read first: an idle sender must not take SQLite's write lock every round.
        if not await ledger._select(select(payouts.c.id).where(*due).limit(1)):
            return []

        async def work(conn: AsyncConnection) -> list[Payout]:
            query = (
                select(payouts.c.id)
                .where(*due)
                .order_by(payouts.c.send_at, payouts.c.batch_row, payouts.c.id)
                .limit(limit)
            )
            if ledger._postgres:
                query = query.with_for_update(skip_locked=True)
            ids = [row[0] for row in (await conn.execute(query)).all()]
            if not ids:
                return []
            rows = await conn.execute(
                update(payouts)
                .where(payouts.c.id.in_(ids))
                .values(
                    claimed_until=now + lease,
                    attempts=payouts.c.attempts + 1,
                    # The first attempt's time, kept by every later one: the deadline's start.
                    first_sent_at=func.coalesce(
                        payouts.c.first_sent_at, literal(now, UTCDateTime())
                    ),
                    version=payouts.c.version + 1,
                    updated_at=now,
                )
                .returning(*payouts.c)
            )
            claimed = [self._row(row) for row in rows.all()]
            claimed.sort(key=lambda p: ids.index(p.id))
            return claimed

        claimed: list[Payout] = await ledger._write(work)
        return claimed

    async def release_send(self, payout_id: str, send_at: datetime) -> Payout:
        """Hand a claimed send back unsent (spike arrest): due again at ``send_at``.

        The attempt counted by the claim is given back: the request never left. If it was
        the first, ``first_sent_at`` is cleared too (the deadline counts from a real send).
        """

        async def work(conn: AsyncConnection) -> Payout:
            row = (
                await conn.execute(
                    update(payouts)
                    .where(payouts.c.id == payout_id)
                    .values(
                        send_at=send_at,
                        claimed_until=None,
                        attempts=payouts.c.attempts - 1,
                        first_sent_at=case(
                            (payouts.c.attempts <= 1, None), else_=payouts.c.first_sent_at
                        ),
                        version=payouts.c.version + 1,
                    )
                    .returning(*payouts.c)
                )
            ).first()
            if row is None:
                raise TransferNotFoundError(payout_id)
            return self._row(row)

        payout: Payout = await self._ledger._write(work)
        return payout

    async def page(
        self,
        *,
        status: TransferStatus | str | None = None,
        phone: str | None = None,
        batch_id: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Payout], str | None]:
        """Payouts, newest first (or a batch's rows in row order); ``(items, next_cursor)``."""
        _check_limit(limit, 500)
        query = select(payouts)
        if status is not None:
            try:
                query = query.where(payouts.c.status == TransferStatus(status).value)
            except ValueError as err:
                allowed = ", ".join(s.value for s in TransferStatus)
                raise ValidationError("status", f"must be one of {allowed}", status) from err
        if phone is not None:
            query = query.where(payouts.c.phone == normalize_msisdn(phone))
        if batch_id is not None:
            query = query.where(payouts.c.batch_id == batch_id)
            if cursor is not None:
                if not cursor.isdigit() or len(cursor) > 9:
                    raise ValidationError("cursor", "must be a next_cursor of this batch", cursor)
                query = query.where(payouts.c.batch_row > int(cursor))
            query = query.order_by(payouts.c.batch_row)
        else:
            if cursor is not None:
                if len(cursor) > 40:
                    raise ValidationError("cursor", "must be a next_cursor", cursor)
                query = query.where(payouts.c.id < cursor)
            query = query.order_by(payouts.c.id.desc())
        rows = await self._ledger._select(query.limit(limit + 1))
        items = [self._row(row) for row in rows[:limit]]
        more = len(rows) > limit
        if not more or not items:
            return items, None
        last = items[-1]
        return items, str(last.batch_row) if batch_id is not None else last.id

    async def batch_summary(self, batch_id: str) -> BatchSummary:
        """A batch's rows counted (and summed) by status."""
        rows = await self._ledger._select(
            select(
                payouts.c.status,
                func.count(),
                func.coalesce(func.sum(payouts.c.amount), 0),
                func.min(payouts.c.created_at),
            )
            .where(payouts.c.batch_id == batch_id)
            .group_by(payouts.c.status)
        )
        by_status = {s.value: 0 for s in TransferStatus}
        amounts = {s.value: 0 for s in TransferStatus}
        created: datetime | None = None
        for row in rows:
            status, count, total, first = tuple(row)
            by_status[status] = int(count)
            amounts[status] = int(total)
            if first is not None and (created is None or first < created):
                created = first
        return BatchSummary(batch_id, sum(by_status.values()), by_status, amounts, created)


_DEFAULTS: dict[str, Any] = {
    "result_code": None,
    "result_desc": None,
    "receipt": None,
    "paid_amount": None,
    "counterparty": None,
    "completed_at": None,
    "failure_reason": None,
    "flag_reason": None,
    "next_check_at": None,
    "evidence_callback_id": None,
    "verify_at": None,
    "verify_since": None,
    "expired_at": None,
}


# -- refunds ---------------------------------------------------------------------------------------


class RefundBook(_Book[Refund]):
    """Refunds (reversals) in the ledger (``ledger.refunds``).

    Never more than was paid: :meth:`create` locks the payment and sums its refunds that
    still hold money (everything but failed and rejected) in the same transaction, so
    concurrent requests cannot together exceed it.
    """

    kind: ClassVar[TransferKind] = "refund"
    table: ClassVar[Table] = refunds
    result_kind: ClassVar[str] = "reversal_result"
    timeout_kind: ClassVar[str] = "reversal_timeout"

    def _row(self, row: Row[Any] | Any) -> Refund:
        m = row._mapping if isinstance(row, Row) else row
        return Refund(
            **_common(m),
            source_id=m["source_id"],
            original_receipt=m["original_receipt"],
            receiver_party=m["receiver_party"],
            phone=m["phone"],
            remarks=m["remarks"],
        )

    def _parse(self, body: bytes) -> ParsedResult:
        return parse_reversal_result(body)

    @staticmethod
    def _named(parsed: ParsedResult) -> str | None:
        # Daraja gives a reversal both ids; the ConversationID is what its answer records.
        return parsed.conversation_id or parsed.originator_conversation_id

    async def _find_for_result(self, conn: AsyncConnection, parsed: ParsedResult) -> Refund | None:
        if parsed.conversation_id is not None:
            found = await self._lock(conn, refunds.c.conversation_id == parsed.conversation_id)
            if found is not None:
                return found
        if parsed.originator_conversation_id is not None:
            found = await self._lock(
                conn, refunds.c.originator_conversation_id == parsed.originator_conversation_id
            )
            if found is not None:
                return found
        return await self._adopt(conn, parsed)

    async def _adopt(self, conn: AsyncConnection, parsed: ParsedResult) -> Refund | None:
        """A success naming ids we never recorded may belong to a refund whose answer was
        lost: the one unknown refund of that receipt and amount takes them, unverified."""
        result = parsed.result
        if (
            not result.is_success
            or result.original_receipt is None
            or result.amount is None
            or parsed.conversation_id is None
        ):
            return None
        query = select(refunds).where(
            refunds.c.status == TransferStatus.UNKNOWN.value,
            refunds.c.conversation_id.is_(None),
            refunds.c.original_receipt == result.original_receipt,
            refunds.c.amount == int(result.amount),
        )
        if self._ledger._postgres:
            query = query.with_for_update()
        found = [self._row(row) for row in (await conn.execute(query.limit(2))).all()]
        if len(found) != 1:
            return None
        refund = found[0]
        log.warning(
            "refund %s: its answer was lost; a Result names its receipt and amount "
            "(ids unverified, settled by Transaction Status)",
            refund.id,
        )
        return await self._write_fields(
            conn,
            refund,
            {
                "conversation_id": parsed.conversation_id,
                "originator_conversation_id": parsed.originator_conversation_id,
                "ids_verified": False,
            },
        )

    async def create(
        self,
        idempotency_key: str | None,
        payment_id: str,
        amount: int | None,
        *,
        remarks: str,
        receiver_party: str,
        partial: bool,
        claim: timedelta,
        metadata: dict[str, Any] | None = None,
        source: Literal["payment", "receipt"] = "payment",
    ) -> tuple[Refund, bool]:
        """Commit a refund of a succeeded payment (or a C2B receipt), within what remains
        unrefunded.

        Args:
            idempotency_key: the caller's key; a repeat with the same parameters returns the
                existing refund.
            payment_id: the payment refunded (it needs an M-Pesa receipt), or with
                ``source="receipt"`` the receipt (``rcp_...``) refunded: one Daraja confirmed
                (or that counts unverified), never one still waiting or refuted.
            amount: shillings to give back; ``None`` for everything that remains.
            remarks: the reversal's ``Remarks`` (2 to 100 characters).
            receiver_party: the shortcode the payment was made to (``ReceiverParty``).
            partial: whether less than the whole payment may be reversed (unknown whether
                Daraja allows it: ``PESA_REFUND_PARTIAL``).
            claim: the caller sends it now; it is claimed for this long.

        Raises:
            PaymentNotFoundError: no such payment.
            ReceiptNotFoundError: no such receipt.
            RefundNotAllowedError: not succeeded (not counted), no receipt, more than
                remains, or a part when parts are not allowed (HTTP 409).
            IdempotencyConflictError: the key was used with other parameters.
            ValidationError: a bad amount or remarks.
        """
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255
        ):
            raise ValidationError("idempotency_key", "must be a string of 1 to 255 characters")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
            raise ValidationError("amount", "must be an integer number of shillings")
        if amount is not None and amount < 1:
            raise ValidationError("amount", "must be at least 1 shilling", amount)
        if not isinstance(remarks, str) or not 2 <= len(remarks) <= 100:
            raise ValidationError("remarks", "must be 2 to 100 characters")
        digest = _hash(payment_id, amount, remarks, metadata)
        ledger = self._ledger
        load = self._paid_payment if source == "payment" else self._paid_receipt
        if idempotency_key is not None:
            existing = await self._by_key_hash(idempotency_key)
            if existing is not None:
                return self._repeat(existing, idempotency_key, digest), False

        async def work(conn: AsyncConnection) -> Refund:
            receipt, paid, phone = await load(conn, payment_id)
            held = await self._held(conn, payment_id)
            remaining = paid - held
            wanted = remaining if amount is None else amount
            if remaining <= 0:
                raise RefundNotAllowedError(f"{source} {payment_id} is already refunded in full")
            if wanted > remaining:
                raise RefundNotAllowedError(
                    f"refund of {wanted} is more than remains of {source} {payment_id}: "
                    f"{remaining} of {paid}",
                    remaining,
                )
            if not partial and (wanted != paid or int(held) != 0):
                raise RefundNotAllowedError(
                    f"only the whole {source} ({paid}) can be refunded: partial reversals are "
                    "not allowed (PESA_REFUND_PARTIAL=deny)",
                    remaining,
                )
            now = ledger._now()
            values = {
                "id": new_id("rf", now_ms=int(now.timestamp() * 1000)),
                "idempotency_key": idempotency_key,
                "request_hash": digest,
                "status": TransferStatus.CREATED.value,
                "amount": wanted,
                "metadata": metadata,
                "originator_conversation_id": None,
                "conversation_id": None,
                "ids_verified": True,
                "flagged": False,
                "attempts": 1,
                "first_sent_at": now,
                "version": 1,
                "created_at": now,
                "updated_at": now,
                "send_at": None,
                "claimed_until": now + claim,
                "check_count": 0,
                "source_id": payment_id,
                "original_receipt": receipt,
                "receiver_party": receiver_party,
                "phone": phone,
                "remarks": remarks,
            }
            await conn.execute(insert(refunds).values(values))
            return self._row({**values, **_DEFAULTS})

        try:
            refund: Refund = await ledger._write(work)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = await self._by_key_hash(idempotency_key)
            if existing is None:
                raise
            return self._repeat(existing, idempotency_key, digest), False
        log.info(
            "refund %s of %s %s created (%d KES)", refund.id, source, payment_id, refund.amount
        )
        return refund, True

    @staticmethod
    async def _held(conn: AsyncConnection, source_id: str) -> int:
        """Shillings of ``source_id`` that its refunds hold (all but failed and rejected)."""
        held = (
            await conn.execute(
                select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
                    refunds.c.source_id == source_id,
                    or_(refunds.c.status.in_(_HOLDING), refunds.c.verify_at.is_not(None)),
                )
            )
        ).scalar_one()
        return int(held)

    async def room(
        self, source_id: str, *, source: Literal["payment", "receipt"] = "payment"
    ) -> RefundRoom:
        """What may still be refunded of a payment (or a receipt), by :meth:`create`'s rule.

        Read-only, for people deciding (the dashboard's refund form): :meth:`create` checks
        again in the transaction that stores a refund. ``refusal`` says why nothing can be
        refunded (not succeeded, no receipt, not confirmed), if so.

        Raises:
            PaymentNotFoundError / ReceiptNotFoundError: no such payment or receipt.
        """
        load = self._paid_payment if source == "payment" else self._paid_receipt

        async def read(conn: AsyncConnection) -> RefundRoom:
            held = await self._held(conn, source_id)
            try:
                _, paid, _ = await load(conn, source_id, lock=False)
            except RefundNotAllowedError as err:
                return RefundRoom(paid=0, held=held, remaining=0, refusal=err.rule)
            remaining = max(paid - held, 0)
            refusal = None if remaining > 0 else f"{source} {source_id} is already refunded in full"
            return RefundRoom(paid=paid, held=held, remaining=remaining, refusal=refusal)

        async with self._ledger.engine.connect() as conn:
            if not self._ledger._postgres:
                conn = await conn.execution_options(**{BEGIN_MODE: "DEFERRED"})
            return await read(conn)

    async def _paid_payment(
        self, conn: AsyncConnection, payment_id: str, *, lock: bool = True
    ) -> tuple[str, int, str]:
        """The M-Pesa receipt, amount paid and phone of a payment that may be refunded."""
        query = select(payments).where(payments.c.id == payment_id)
        if lock and self._ledger._postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        payment = row._mapping
        if payment["status"] != PaymentStatus.SUCCEEDED.value:
            raise RefundNotAllowedError(
                f"payment {payment_id} is {payment['status']}: only a succeeded payment "
                "can be refunded"
            )
        receipt = payment["receipt"]
        if not receipt:
            raise RefundNotAllowedError(
                f"payment {payment_id} has no M-Pesa receipt (it was settled by STK query, "
                "which carries none): a reversal needs the receipt"
            )
        paid_value = payment["paid_amount"]
        paid = int(Decimal(paid_value)) if paid_value is not None else int(payment["amount"])
        return str(receipt), paid, str(payment["phone"])

    async def _paid_receipt(
        self, conn: AsyncConnection, receipt_id: str, *, lock: bool = True
    ) -> tuple[str, int, str | None]:
        """The TransID, amount and (full, when known) phone of a receipt that may be refunded.

        Only money that counts may go back: a receipt Daraja confirmed, or one that counts
        unverified (no initiator to ask). One still waiting for Daraja's Transaction Status,
        or refuted, may not: a forged confirmation must not become a reversal request.
        """
        query = select(receipts).where(receipts.c.id == receipt_id)
        if lock and self._ledger._postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        if row is None:
            raise ReceiptNotFoundError(receipt_id)
        receipt = row._mapping
        if receipt["status"] not in (ReceiptStatus.CONFIRMED.value, ReceiptStatus.UNVERIFIED.value):
            raise RefundNotAllowedError(
                f"receipt {receipt_id} is {receipt['status']}: only a receipt that counts "
                "(confirmed by Daraja, or unverified) can be refunded"
            )
        amount = Decimal(receipt["amount"])
        if amount != amount.to_integral_value():
            raise RefundNotAllowedError(
                f"receipt {receipt_id} is for {amount}: reversals are in whole shillings"
            )
        return str(receipt["trans_id"]), int(amount), receipt["phone"]

    def _repeat(self, existing: tuple[Refund, str], key: str, digest: str) -> Refund:
        refund, stored = existing
        if stored != digest:
            raise IdempotencyConflictError(key, refund.id)
        return refund

    async def _by_key_hash(self, key: str) -> tuple[Refund, str] | None:
        rows = await self._ledger._select(select(refunds).where(refunds.c.idempotency_key == key))
        if not rows:
            return None
        return self._row(rows[0]), rows[0]._mapping["request_hash"]

    async def recover_stale_created(self, older_than: timedelta) -> list[Refund]:
        """Refunds left ``created`` by a process that died around the send become
        ``unknown``: a reversal is never re-sent (it has no duplicate check)."""
        now = self._ledger._now()
        reason = "the reversal's outcome was never recorded (process stopped during the send)"
        stale = (
            refunds.c.status == TransferStatus.CREATED.value,
            refunds.c.created_at <= now - older_than,
            or_(refunds.c.claimed_until.is_(None), refunds.c.claimed_until <= now),
        )
        if not await self._ledger._select(select(refunds.c.id).where(*stale).limit(1)):
            return []

        async def work(conn: AsyncConnection) -> list[Refund]:
            await self._ledger._hold_feed(conn)
            query = select(refunds).where(*stale)
            if self._ledger._postgres:
                query = query.with_for_update(skip_locked=True)
            moved = []
            for row in (await conn.execute(query)).all():
                decision, refund = await self._apply(
                    conn, self._row(row), TransferOutcomeUnknown(reason)
                )
                if decision.kind is DecisionKind.APPLIED:
                    moved.append(refund)
            return moved

        moved: list[Refund] = await self._ledger._write(work)
        return moved

    async def page(
        self, *, source_id: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> tuple[list[Refund], str | None]:
        """Refunds, newest first (of one payment when ``source_id``)."""
        _check_limit(limit, 500)
        query = select(refunds)
        if source_id is not None:
            query = query.where(refunds.c.source_id == source_id)
        if cursor is not None:
            if len(cursor) > 40:
                raise ValidationError("cursor", "must be a next_cursor", cursor)
            query = query.where(refunds.c.id < cursor)
        rows = await self._ledger._select(query.order_by(refunds.c.id.desc()).limit(limit + 1))
        items = [self._row(row) for row in rows[:limit]]
        return items, items[-1].id if len(rows) > limit and items else None


# -- Transaction Status --------------------------------------------------------------------------


class StatusBook:
    """Transaction Status queries about payouts and refunds (``ledger.status_queries``).

    A query's Result is matched by the ConversationID Daraja gave *the query*: nobody but
    Daraja and this ledger knows it, which is why its answer is trusted as Daraja's own.
    """

    def __init__(self, ledger: Ledger, payout_book: PayoutBook, refund_book: RefundBook) -> None:
        self._ledger = ledger
        self._books: dict[str, _Book[Any]] = {"po": payout_book, "rf": refund_book}

    def _book(self, subject_id: str) -> _Book[Any]:
        book = self._books.get(subject_id.split("_", 1)[0])
        if book is None:
            raise TransferNotFoundError(subject_id)
        return book

    async def record(
        self,
        subject_id: str,
        *,
        by_originator_id: str | None,
        by_receipt: str | None = None,
        outcome: str,
        conversation_id: str | None = None,
        originator_conversation_id: str | None = None,
        result_code: str | None = None,
        result_desc: str | None = None,
        detail: str | None = None,
        resend: bool = True,
    ) -> StatusQuery:
        """Log one Transaction Status query (``sent`` with Daraja's ids, or why not).

        An answer that already arrived for these ids (stored as ``unknown_payment``) is
        applied in the same transaction; ``resend`` as for :meth:`ingest_result`.
        """
        self._book(subject_id)
        now = self._ledger._now()
        values: dict[str, Any] = {
            "id": new_id("tsq", now_ms=int(now.timestamp() * 1000)),
            "subject_id": subject_id,
            "by_originator_id": by_originator_id,
            "by_receipt": by_receipt,
            "conversation_id": conversation_id,
            "originator_conversation_id": originator_conversation_id,
            "asked_at": now,
            "outcome": outcome,
            "result_code": None if result_code is None else result_code[:32],
            "result_desc": None if result_desc is None else redact(result_desc)[:_MAX_ERROR_TEXT],
            "detail": None if detail is None else redact(detail)[:_MAX_ERROR_TEXT],
            "answered_at": None,
        }

        async def work(conn: AsyncConnection) -> None:
            await self._ledger._hold_feed(conn)
            await conn.execute(insert(status_queries).values(values))
            if conversation_id is not None and outcome == "sent":
                await self._apply_early_answers(conn, conversation_id, resend)

        await self._ledger._write(work)
        return StatusQuery(**values)

    async def _apply_early_answers(
        self, conn: AsyncConnection, conversation_id: str, resend: bool
    ) -> None:
        """Apply status Results that arrived before the query's ids were recorded (a fast
        Daraja, a slow database): they were stored as ``unknown_payment``."""
        rows = (
            await conn.execute(
                select(callbacks.c.id, callbacks.c.kind, callbacks.c.body, callbacks.c.received_at)
                .where(
                    callbacks.c.kind.in_(["status_result", "status_timeout"]),
                    callbacks.c.outcome == "unknown_payment",
                    callbacks.c.checkout_request_id == conversation_id,
                )
                .order_by(callbacks.c.received_at, callbacks.c.id)
            )
        ).all()
        for callback_id, kind, body, received in rows:
            try:
                if kind == "status_timeout":
                    _, named = parse_timeout(bytes(body))
                    parsed = None
                else:
                    parsed = parse_status_result(bytes(body))
                    named = parsed.originator_conversation_id
            except (InvalidCallbackError, ValueError, TypeError, KeyError):  # pragma: no cover
                continue
            status, subject, detail = await self._apply(
                conn, conversation_id, named, parsed, received, resend
            )
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id)
                .values(
                    outcome=status,
                    detail=f"{detail} (arrived before the query's answer was recorded)"[
                        :_MAX_ERROR_TEXT
                    ],
                    subject_id=None if subject is None else subject.id,
                )
            )

    async def latest(self, subject_id: str) -> StatusQuery | None:
        """The last status query about a payout or refund, if any."""
        rows = await self._ledger._select(
            select(status_queries)
            .where(status_queries.c.subject_id == subject_id)
            .order_by(status_queries.c.seq.desc())
            .limit(1)
        )
        if not rows:
            return None
        return StatusQuery(**{k: v for k, v in rows[0]._mapping.items() if k != "seq"})

    async def for_subject(self, subject_id: str) -> list[StatusQuery]:
        """Every status query about a payout or refund, oldest first."""
        rows = await self._ledger._select(
            select(status_queries)
            .where(status_queries.c.subject_id == subject_id)
            .order_by(status_queries.c.seq)
        )
        return [
            StatusQuery(**{k: v for k, v in row._mapping.items() if k != "seq"}) for row in rows
        ]

    async def ingest_result(
        self, body: bytes, *, source_ip: str | None, resend: bool = True
    ) -> TransferOutcome:
        """Store a Transaction Status Result and apply it to the payout or refund it is about.

        Matched by the query's ConversationID; a repeat of an answered query changes
        nothing. ``2032`` (no such transaction) may ask for a payout to be re-sent when
        ``resend`` (see :func:`pesa.ledger.decide_transfer`).
        """
        return await self._ingest(body, source_ip, "status_result", resend)

    async def ingest_timeout(self, body: bytes, *, source_ip: str | None) -> TransferOutcome:
        """Store a status query's QueueTimeOutURL call: the query is marked ``timed_out``
        (the next check asks again)."""
        return await self._ingest(body, source_ip, "status_timeout", False)

    async def _ingest(
        self, body: bytes, source_ip: str | None, kind: str, resend: bool
    ) -> TransferOutcome:
        ledger = self._ledger
        received = ledger._now()
        record: dict[str, Any] = {
            "id": new_id("cb", now_ms=int(received.timestamp() * 1000)),
            "kind": kind,
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }

        async def work(conn: AsyncConnection) -> TransferOutcome:
            await ledger._hold_feed(conn)
            subject: Any = None
            named: str | None = None
            conversation: str | None = None
            try:
                if kind == "status_timeout":
                    conversation, named = parse_timeout(body)
                    parsed = None
                else:
                    parsed = parse_status_result(body)
                    conversation = parsed.conversation_id
                    named = parsed.originator_conversation_id
            except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
                status: OutcomeStatus = "invalid"
                detail = f"invalid {kind}: {err}"
            else:
                status, subject, detail = await self._apply(
                    conn, conversation, named, parsed, received, resend
                )
            await conn.execute(
                insert(callbacks).values(
                    **record,
                    outcome=status,
                    detail=detail[:_MAX_ERROR_TEXT],
                    checkout_request_id=conversation,
                    subject_id=None if subject is None else subject.id,
                )
            )
            return TransferOutcome(record["id"], status, subject, detail)

        try:
            outcome: TransferOutcome = await ledger._write(work)
        except Exception as err:
            await ledger._store_callback(record, "error", type(err).__name__, None, None)
            raise
        if outcome.status not in ("applied", "duplicate", "ignored"):
            log.warning("%s %s: %s (%s)", kind, outcome.callback_id, outcome.status, outcome.detail)
        return outcome

    async def _apply(
        self,
        conn: AsyncConnection,
        conversation: str | None,
        originator: str | None,
        parsed: ParsedResult | None,
        received: datetime,
        resend: bool,
    ) -> tuple[OutcomeStatus, Any, str]:
        query = None
        if conversation is not None:
            lookup = select(status_queries).where(status_queries.c.conversation_id == conversation)
            if self._ledger._postgres:
                lookup = lookup.with_for_update()
            query = (await conn.execute(lookup)).first()
        if query is None:
            return "unknown_payment", None, "no status query has this ConversationID"
        q = query._mapping
        if (
            originator is not None
            and q["originator_conversation_id"] is not None
            and originator != q["originator_conversation_id"]
        ):
            return "invalid", None, "its OriginatorConversationID is not the query's"
        book = self._book(q["subject_id"])
        if q["outcome"] != "sent":
            subject = await book.get(q["subject_id"])
            return "duplicate", subject, f"status query {q['id']} was already {q['outcome']}"
        answer: dict[str, Any] = {"answered_at": received}
        if parsed is None:
            answer.update(outcome="timed_out", detail="the status query timed out in the queue")
            await conn.execute(
                update(status_queries).where(status_queries.c.id == q["id"]).values(answer)
            )
            subject = await book.get(q["subject_id"])
            return "ignored", subject, "status query timed out: the next check asks again"
        envelope = parsed.envelope
        code = envelope.result_code
        answer.update(
            outcome="answered",
            result_code=code[:32],
            result_desc=redact(envelope.result_desc or "")[:_MAX_ERROR_TEXT],
        )
        event: TransferInput | None
        if code == "2032":
            event = TransferNotFound()
        elif code == "0":
            event = parsed.result
        else:
            event = None
        if event is None:
            answer["detail"] = f"no answer about the transaction (result code {code})"
            await conn.execute(
                update(status_queries).where(status_queries.c.id == q["id"]).values(answer)
            )
            subject = await book.get(q["subject_id"])
            return "ignored", subject, answer["detail"]
        applied = await book.apply_status(conn, q["subject_id"], event, resend=resend)
        if applied is None:  # pragma: no cover - subjects are never deleted
            return "unknown_payment", None, "the status query's subject is gone"
        decision, subject = applied
        answer["detail"] = decision.detail[:_MAX_ERROR_TEXT]
        await conn.execute(
            update(status_queries).where(status_queries.c.id == q["id"]).values(answer)
        )
        return _outcome_status(decision), subject, decision.detail
