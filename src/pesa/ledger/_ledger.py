"""The durable ledger: payments, their events (the outbox), raw callbacks, webhook deliveries.

Every transition is one database transaction: read the payment (``FOR UPDATE`` on
PostgreSQL, under ``BEGIN IMMEDIATE`` on SQLite), ask the pure state machine
(:func:`pesa.ledger.decide`), update the row guarded by its ``version``, and insert the
events and one webhook delivery per configured endpoint, then commit. Duplicate or
concurrent inputs therefore apply once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Table,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Insert

from pesa._clock import SYSTEM_CLOCK, Clock, require_clock
from pesa._exceptions import ConfigurationError, InvalidCallbackError, ValidationError
from pesa._logging import get_logger, mask_phone, redact
from pesa.daraja import normalize_msisdn
from pesa.ledger import _migrate
from pesa.ledger._callbacks import parse_stk_callback_body, stk_code
from pesa.ledger._driving import (
    callback_status,
    merchant_request_mismatch,
    payment_state,
    request_hash,
    row_changes,
    single_orphan,
)
from pesa.ledger._driving import storable_key as _storable_key
from pesa.ledger._driving import storable_text as _storable_text
from pesa.ledger._engine import BEGIN_MODE, create_engine
from pesa.ledger._errors import (
    DeliveryNotFoundError,
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerConflictError,
    LedgerError,
    PaymentNotFoundError,
)
from pesa.ledger._ids import new_id
from pesa.ledger._receipts import VerifyPolicy
from pesa.ledger._schema import (
    callbacks,
    payment_events,
    payments,
    stk_queries,
    webhook_deliveries,
)
from pesa.ledger._states import (
    Accepted,
    CodeLookup,
    Decision,
    DecisionKind,
    Expired,
    FlagResolved,
    IdFromCallback,
    IdUnknownToDaraja,
    LedgerInput,
    OutcomeUnknown,
    PaymentState,
    PaymentStatus,
    Rejected,
    StkResult,
    Unverifiable,
    decide,
    orphan_matches,
)
from pesa.ledger._types import (
    CallbackOutcome,
    CallbackStatus,
    Delivery,
    DeliveryRecord,
    Event,
    LedgerStats,
    MismatchPolicy,
    Page,
    ParsedStkCallback,
    Payment,
    StkCallbackParser,
    StkQueryOutcome,
    StkQueryRecord,
    StoredCallback,
    row_to_delivery_record,
)
from pesa.ledger._wake import OutboxSignal, install_outbox_hooks, mark_outbox_written

if TYPE_CHECKING:
    from pesa.ledger._receipt_book import ReceiptBook

__all__ = ["Clock", "Ledger"]

log = get_logger("pesa.ledger")

_T = TypeVar("_T")


# The event feed's horizon on PostgreSQL: the oldest transaction still running that holds a
# lock on this ledger's `payments` table (so it may be about to write events), or, when
# there is none, the snapshot's xmax (everything committed is visible). Every ledger write
# that inserts events locks its payment row first, before its transaction id exists, so
# such a transaction is always seen here; transactions elsewhere in the cluster (other
# schemas, other databases) never hold the feed back. pg_locks reports 32-bit xids, the
# snapshot 64-bit ones: compare the low 32 bits.
_PG_FEED_HORIZON: ColumnElement[int] = literal_column(
    """(SELECT coalesce(min(x::text::bigint),
                        pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
        FROM pg_snapshot_xip(pg_current_snapshot()) AS x
        WHERE x::text::bigint % 4294967296 IN (
            SELECT t.transactionid::text::bigint FROM pg_locks AS t
            WHERE t.locktype = 'transactionid' AND t.pid IN (
                SELECT r.pid FROM pg_locks AS r
                WHERE r.locktype = 'relation' AND r.relation = 'payments'::regclass)))""",
    BigInteger,
)

_MAX_RETRIES = 5

# The fast callback path's read (PostgreSQL): a payment by CheckoutRequestID with the body
# and outcome of its evidence callback, if any, in one round trip.
_evidence = callbacks.alias("pesa_evidence")
_FAST_READ = (
    select(
        payments,
        _evidence.c.body.label("pesa_evidence_body"),
        _evidence.c.outcome.label("pesa_evidence_outcome"),
    )
    .select_from(payments.outerjoin(_evidence, _evidence.c.id == payments.c.evidence_callback_id))
    .where(payments.c.checkout_request_id == bindparam("cid"))
)


# Built once per shape (which columns change, how many events and deliveries): SQLAlchemy
# then finds the compiled form by the statement object's memoized cache key instead of
# walking a new statement tree per callback (measured: most of the callback's CPU).
_GATED: dict[tuple[Any, ...], Insert] = {}
_GATED_MAX = 64


def _gated_write(
    current: Payment, plan: _Plan, stored: Mapping[str, Any]
) -> tuple[Insert, dict[str, Any]]:
    """One statement and its parameters: the guarded UPDATE of ``current`` and, only if
    it matched, the plan's event and deliveries and the raw callback ``stored``
    (``RETURNING`` its id)."""
    assert plan.changes is not None
    rows = [("e", n, payment_events, row) for n, row in enumerate(plan.events)]
    rows += [("d", n, webhook_deliveries, row) for n, row in enumerate(plan.deliveries)]
    params: dict[str, Any] = {"pesa_id": current.id, "pesa_version": current.version}
    params.update((f"u_{name}", value) for name, value in plan.changes.items())
    for kind, n, _, row in rows:
        params.update((f"{kind}{n}_{name}", value) for name, value in row.items())
    params.update((f"c_{name}", value) for name, value in stored.items())
    shape = (
        tuple(plan.changes),
        tuple((kind, tuple(row)) for kind, _, _, row in rows),
        tuple(stored),
    )
    statement = _GATED.get(shape)
    if statement is None:
        statement = _build_gated(plan.changes, rows, stored)
        if len(_GATED) >= _GATED_MAX:
            _GATED.clear()
        _GATED[shape] = statement
    return statement, params


def _build_gated(
    changes: Mapping[str, Any],
    rows: Sequence[tuple[str, int, Table, Mapping[str, Any]]],
    stored: Mapping[str, Any],
) -> Insert:
    moved = (
        update(payments)
        .where(
            payments.c.id == bindparam("pesa_id", type_=payments.c.id.type),
            payments.c.version == bindparam("pesa_version", type_=payments.c.version.type),
        )
        .values({name: bindparam(f"u_{name}", type_=payments.c[name].type) for name in changes})
        .returning(payments.c.id)
        .cte("pesa_moved")
    )

    def gated(table: Table, prefix: str, names: Sequence[str]) -> Insert:
        values = select(*(bindparam(prefix + name, type_=table.c[name].type) for name in names))
        return insert(table).from_select(list(names), values.select_from(moved))

    ctes = [
        gated(table, f"{kind}{n}_", list(row)).cte(f"pesa_{kind}{n}")
        for kind, n, table, row in rows
    ]
    return gated(callbacks, "c_", list(stored)).add_cte(moved, *ctes).returning(callbacks.c.id)


_INSERT_CALLBACK = insert(callbacks)


_MAX_PAGE = 500
_MAX_BIGINT = 2**63
_ID_LENGTH = 40  # payments.id, payment_events.id (String(40))
_CHECKOUT_ID_LENGTH = 128  # payments.checkout_request_id (String(128))
_MAX_ERROR_TEXT = 1000
# How many stored orphan callbacks one adoption attempt reads (newest payments find theirs
# among the first; a flood of forged orphans cannot make a scan unbounded).
_MAX_ORPHAN_SCAN = 200


def _row_to_payment(row: Row[Any] | Mapping[str, Any]) -> Payment:
    m: Mapping[str, Any] = row._mapping if isinstance(row, Row) else row  # type: ignore[assignment]  # RowMapping is a Mapping[str, Any] at runtime
    paid = m["paid_amount"]
    return Payment(
        id=m["id"],
        status=PaymentStatus(m["status"]),
        phone=m["phone"],
        amount=int(m["amount"]),
        account_reference=m["account_reference"],
        description=m["description"],
        metadata=m["metadata"],
        idempotency_key=m["idempotency_key"],
        checkout_request_id=m["checkout_request_id"],
        merchant_request_id=m["merchant_request_id"],
        result_code=m["result_code"],
        result_desc=m["result_desc"],
        receipt=m["receipt"],
        paid_amount=None if paid is None else Decimal(paid),
        paid_phone=m["paid_phone"],
        transaction_date=m["transaction_date"],
        failure_reason=m["failure_reason"],
        flagged=bool(m["flagged"]),
        flag_reason=m["flag_reason"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        next_check_at=m["next_check_at"],
        check_count=int(m["check_count"]),
        version=int(m["version"]),
        checkout_request_id_verified=bool(m["checkout_request_id_verified"]),
        evidence_callback_id=m["evidence_callback_id"],
        verify_at=m["verify_at"],
        verify_since=m["verify_since"],
        account=m["account"],
    )


def _row_to_event(row: Row[Any]) -> Event:
    m = row._mapping
    return Event(
        seq=int(m["seq"]),
        id=m["id"],
        type=m["type"],
        payment_id=m["payment_id"],
        created_at=m["created_at"],
        payload=m["payload"].encode(),
        txid=int(m["txid"]),
        subject_id=m["subject_id"],
    )


def _row_to_callback(row: Row[Any]) -> StoredCallback:
    m = row._mapping
    return StoredCallback(
        id=m["id"],
        kind=m["kind"],
        body=bytes(m["body"]),
        source_ip=m["source_ip"],
        received_at=m["received_at"],
        outcome=m["outcome"],
        detail=m["detail"],
        checkout_request_id=m["checkout_request_id"],
        payment_id=m["payment_id"],
    )


def _state(
    payment: Payment, evidence: StkResult | None = None, *, evidence_refused: bool = False
) -> PaymentState:
    return payment_state(payment, evidence, evidence_refused=evidence_refused)


def _required_text(field: str, value: object, maximum: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(field, "must be a non-empty string")
    text_value = value.strip()
    if len(text_value) > maximum:
        raise ValidationError(field, f"must be at most {maximum} characters", len(text_value))
    if "\x00" in text_value or _storable_text(text_value) != text_value:
        # PostgreSQL's text type refuses NUL and lone surrogates.
        raise ValidationError(field, "must be text without NUL or unpaired surrogates")
    return text_value


def _check_key(value: Any, field: str, max_length: int) -> str:
    if not _storable_key(value, max_length):
        raise ValidationError(
            field, f"must be printable ASCII of at most {max_length} characters", str(value)[:60]
        )
    return str(value)


def _check_time(value: datetime, field: str) -> datetime:
    if value.tzinfo is None:
        raise ValidationError(field, "must be timezone-aware", value.isoformat())
    try:
        # In UTC, as stored: 0001-01-01T00:00:00+14:00 is before the first representable
        # instant, 9999-12-31T23:59:59-14:00 after the last.
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as err:
        raise ValidationError(
            field, "must be a time between years 1 and 9999 in UTC", value.isoformat()
        ) from err


def _check_position(value: int, field: str) -> int:
    # Both parts of an event cursor are BIGINTs in the database.
    if not -1 <= value < _MAX_BIGINT:
        raise ValidationError(field, "must be a cursor from list_events", str(value)[:40])
    return value


def _check_limit(limit: int, maximum: int = _MAX_PAGE) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise ValidationError("limit", f"must be an integer from 1 to {maximum}", limit)


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """What the state machine decided for one input, before anything is written."""

    decision: Decision
    payment: Payment  # the row as it will be once ``changes`` are written
    changes: dict[str, Any] | None  # None: nothing to write
    events: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]


def _log_transition(current: Payment, plan: _Plan) -> None:
    log.info(
        "payment %s: %s -> %s (%s)",
        current.id,
        current.status,
        plan.payment.status,
        plan.decision.detail,
    )


class _VersionConflict(Exception):
    """The payment changed between our read and our guarded update: retry the transaction."""


class Ledger:
    """The payments ledger over SQLite or PostgreSQL (async SQLAlchemy 2).

    Open it with :meth:`open`, create the tables with :meth:`migrate`, close it with
    :meth:`close` (or ``async with``)::

        ledger = await Ledger.open("sqlite:///pesa.db", webhook_endpoints=["https://shop/hook"])
        await ledger.migrate()
        payment, created = await ledger.create_payment(
            "order-42", phone="0708374149", amount=10, account_reference="INV42",
            description="Order 42")
        await ledger.mark_accepted(payment.id, "ws_CO_...", "29115-...")
        outcome = await ledger.ingest_stk_callback(raw_body, source_ip="196.201.214.200")

    Args:
        engine: an async engine (see :func:`pesa.ledger.create_engine`).
        webhook_endpoints: one delivery row is written per event per endpoint.
        clock: where the ledger reads the time (:class:`pesa.daraja.Clock`; tests inject
            :class:`pesa.testing.FrozenClock`). Workers built on this ledger share it.
        parse: parses raw STK callback bodies.
        lookup: the result-code catalogue (default :func:`pesa.daraja.lookup_code` for STK):
            a known code's meaning becomes ``failure_reason``; a code it calls not final
            (an unknown code) leaves the payment open for the reconciler to verify.
        on_mismatch: ``"flag"`` (default) applies a success whose amount or phone differs
            from the request and flags the payment; ``"refuse"`` stores such a callback as
            ``invalid`` and changes nothing.
        c2b_verify: when C2B confirmations count (:data:`pesa.ledger.VerifyPolicy`): see
            :attr:`receipts`.
        notify: on PostgreSQL, a commit that makes webhook deliveries due also sends
            ``NOTIFY pesa_outbox`` (dispatchers in other processes LISTEN for it). Commits
            always fire :attr:`outbox_signal` in this process.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        webhook_endpoints: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        parse: StkCallbackParser = parse_stk_callback_body,
        lookup: CodeLookup = stk_code,
        on_mismatch: MismatchPolicy = "flag",
        c2b_verify: VerifyPolicy = "auto",
        notify: bool = True,
    ) -> None:
        self._engine = engine
        self._endpoints = tuple(dict.fromkeys(webhook_endpoints))
        self.outbox_signal = OutboxSignal()
        """Fires after each commit of this ledger that made webhook deliveries due."""
        self.notify = notify and engine.dialect.name == "postgresql"
        """Whether commits also send ``NOTIFY pesa_outbox`` (PostgreSQL only)."""
        install_outbox_hooks(engine, self.outbox_signal, notify=self.notify)
        self._clock = require_clock(clock)
        self._parse = parse
        self._lookup = lookup
        if on_mismatch not in ("flag", "refuse"):
            raise ValidationError("on_mismatch", 'must be "flag" or "refuse"', on_mismatch)
        self._on_mismatch: MismatchPolicy = on_mismatch
        self._postgres = engine.dialect.name == "postgresql"
        # Imported here: the receipts half uses this module's checks.
        from pesa.ledger._receipt_book import ReceiptBook

        self._receipts = ReceiptBook(self, policy=c2b_verify)
        # Imported here too: the transfer books use this module's storage primitives.
        from pesa.ledger._balances import BalanceBook
        from pesa.ledger._transfers import PayoutBook, RefundBook, StatusBook

        self.payouts = PayoutBook(self)
        """B2C payouts: intents, sends, Results, batches (:class:`PayoutBook`)."""
        self.refunds = RefundBook(self)
        """Refunds (reversals), never more than was paid (:class:`RefundBook`)."""
        self.status_queries = StatusBook(self, self.payouts, self.refunds)
        """Transaction Status queries about payouts and refunds, and their answers."""
        self.balances = BalanceBook(self)
        """Account Balance requests and the balances they reported."""

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        webhook_endpoints: Sequence[str] = (),
        clock: Clock = SYSTEM_CLOCK,
        parse: StkCallbackParser = parse_stk_callback_body,
        lookup: CodeLookup = stk_code,
        on_mismatch: MismatchPolicy = "flag",
        engine_options: Mapping[str, Any] | None = None,
        c2b_verify: VerifyPolicy = "auto",
        notify: bool = True,
    ) -> Ledger:
        """Open the ledger at ``url`` (``sqlite:///pesa.db``, ``postgresql://...``).

        Sync-style URLs are mapped to the async drivers (aiosqlite, psycopg 3). Opening does
        no I/O; the first query connects.

        Raises:
            ConfigurationError: the URL is not SQLite or PostgreSQL.
        """
        engine = create_engine(url, **dict(engine_options or {}))
        return cls(
            engine,
            webhook_endpoints=webhook_endpoints,
            clock=clock,
            parse=parse,
            lookup=lookup,
            on_mismatch=on_mismatch,
            c2b_verify=c2b_verify,
            notify=notify,
        )

    @property
    def clock(self) -> Clock:
        """The ledger's clock; the gateway's workers default to it, so their times agree."""
        return self._clock

    @property
    def engine(self) -> AsyncEngine:
        """The underlying async engine."""
        return self._engine

    @property
    def receipts(self) -> ReceiptBook:
        """C2B receipts, expected payments and their Transaction Status queries."""
        return self._receipts

    @property
    def webhook_endpoints(self) -> tuple[str, ...]:
        """The endpoints each event is delivered to."""
        return self._endpoints

    async def migrate(self) -> None:
        """Create or upgrade the tables (``alembic upgrade head``); a no-op when current."""
        await _migrate.upgrade(self._engine)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._engine.dispose()

    async def __aenter__(self) -> Ledger:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _now(self) -> datetime:
        now = self._clock.now()
        if now.tzinfo is None:
            raise ConfigurationError("the ledger clock must return an aware datetime")
        return now

    # -- create -------------------------------------------------------------------------

    async def create_payment(
        self,
        idempotency_key: str | None,
        phone: str,
        amount: int,
        account_reference: str,
        description: str,
        metadata: dict[str, Any] | None = None,
        *,
        account: str | None = None,
    ) -> tuple[Payment, bool]:
        """Commit a payment intent (status ``created``) before anything is sent to Daraja.

        Args:
            idempotency_key: the caller's key; a repeat with the same parameters returns the
                existing payment.
            phone: the customer's Safaricom number (normalised to ``2547XXXXXXXX``).
            amount: whole shillings, a positive ``int`` (never a float).
            account_reference: ``AccountReference`` shown to the customer.
            description: ``TransactionDesc``.
            metadata: free JSON for the caller, returned in the API and webhooks.
            account: the named Daraja account the payment is asked on (part of what an
                idempotent repeat must match).

        Returns:
            ``(payment, created)``: ``created`` is ``False`` for an idempotent repeat.

        Raises:
            ValidationError: a parameter is invalid (names the field and the rule).
            IdempotencyConflictError: the key was used with different parameters (HTTP 409).
        """
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= 255
        ):
            raise ValidationError("idempotency_key", "must be a string of 1 to 255 characters")
        number = normalize_msisdn(phone)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError(
                "amount", "must be an integer number of shillings", type(amount).__name__
            )
        if amount < 1:
            raise ValidationError("amount", "must be at least 1 shilling", amount)
        if not isinstance(account_reference, str) or not account_reference.strip():
            raise ValidationError("account_reference", "must be a non-empty string")
        if len(account_reference) > 64:
            raise ValidationError("account_reference", "must be at most 64 characters")
        if not isinstance(description, str) or not description.strip():
            raise ValidationError("description", "must be a non-empty string")
        if len(description) > 255:
            raise ValidationError("description", "must be at most 255 characters")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise ValidationError("metadata", "must be a JSON object")
            try:
                json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValidationError("metadata", "must be JSON-serialisable") from err
        if account is not None and (not isinstance(account, str) or not 1 <= len(account) <= 32):
            raise ValidationError("account", "must be an account name of 1 to 32 characters")
        digest = request_hash(number, amount, account_reference, description, metadata, account)
        legacy = request_hash(number, amount, account_reference, description, metadata)

        if idempotency_key is not None:
            existing = await self._by_key(idempotency_key)
            if existing is not None:
                return self._repeat(existing, idempotency_key, digest, legacy), False
        now = self._now()
        values = {
            "id": new_id("pay", now_ms=int(now.timestamp() * 1000)),
            "idempotency_key": idempotency_key,
            "request_hash": digest,
            "status": PaymentStatus.CREATED.value,
            "phone": number,
            "amount": amount,
            "account_reference": account_reference,
            "description": description,
            "metadata": metadata,
            "flagged": False,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            "check_count": 0,
            "account": account,
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(payments).values(values))
        except IntegrityError:
            # Lost a race with a concurrent request carrying the same key.
            if idempotency_key is None:
                raise
            existing = await self._by_key(idempotency_key)
            if existing is None:
                raise
            return self._repeat(existing, idempotency_key, digest, legacy), False
        payment = _row_to_payment({**values, **_DEFAULTS})
        log.info("payment %s created for %s (%d KES)", payment.id, mask_phone(number), amount)
        return payment, True

    def _repeat(self, existing: tuple[Payment, str], key: str, digest: str, legacy: str) -> Payment:
        payment, stored_digest = existing
        # A payment stored before accounts existed was hashed without one.
        expected = legacy if payment.account is None else digest
        if stored_digest != expected:
            raise IdempotencyConflictError(key, payment.id)
        return payment

    async def _by_key(self, key: str) -> tuple[Payment, str] | None:
        rows = await self._select(select(payments).where(payments.c.idempotency_key == key))
        if not rows:
            return None
        return _row_to_payment(rows[0]), rows[0]._mapping["request_hash"]

    # -- transitions ----------------------------------------------------------------------

    async def mark_accepted(
        self,
        payment_id: str,
        checkout_request_id: str,
        merchant_request_id: str | None,
        *,
        apply_stored_callbacks: bool = True,
    ) -> Payment:
        """Daraja accepted the STK push: ``created``/``unknown`` → ``pending``.

        Idempotent: repeating it with the same CheckoutRequestID returns the payment. Daraja's
        answer always wins over an id learnt from a callback (which is replaced).

        Under load Daraja's callback can arrive before the push's answer is recorded; it is
        then stored raw as ``unknown_payment``. Recording the CheckoutRequestID applies any
        such stored callback in the same transaction (state machine rules as usual, in the
        order received; each stored row's outcome is updated, so it is applied once).

        Args:
            payment_id: the payment.
            checkout_request_id: the id Daraja gave the push.
            merchant_request_id: Daraja's MerchantRequestID, when known.
            apply_stored_callbacks: ``False`` records the id without applying stored
                callbacks.

        Raises:
            PaymentNotFoundError: no such payment.
            InvalidTransitionError: the payment cannot be accepted in its state.
        """
        if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
            raise ValidationError("checkout_request_id", "must be a non-empty string")
        cid = checkout_request_id.strip()
        accepted = Accepted(cid, merchant_request_id)

        async def work(conn: AsyncConnection) -> Payment:
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            decision, payment = await self._apply(conn, current, accepted)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            if apply_stored_callbacks and payment.checkout_request_id == cid:
                payment = await self._apply_early_callbacks(conn, payment)
            return payment

        return await self._write(work)

    async def _apply_early_callbacks(self, conn: AsyncConnection, payment: Payment) -> Payment:
        """Apply the callbacks stored as ``unknown_payment`` for the payment's id (no commit)."""
        cid = payment.checkout_request_id
        rows = (
            await conn.execute(
                select(callbacks.c.id, callbacks.c.body)
                .where(
                    callbacks.c.checkout_request_id == cid,
                    callbacks.c.kind == "stk",
                    callbacks.c.outcome == "unknown_payment",
                )
                .order_by(callbacks.c.received_at, callbacks.c.id)
            )
        ).all()
        for callback_id, body in rows:
            inserts: list[Insert] = []
            try:
                parsed = self._parse(bytes(body))
            except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
                status: CallbackStatus = "invalid"
                detail = f"invalid STK callback: {err}"
            else:
                status, settled, detail, inserts = await self._settle_callback(
                    conn, payment, parsed, self._on_mismatch, callback_id
                )
                payment = settled
            await self._flush(conn, inserts)
            await conn.execute(
                update(callbacks)
                .where(callbacks.c.id == callback_id)
                .values(
                    outcome=status,
                    detail=f"{detail} (arrived before the push's answer was recorded)",
                    payment_id=payment.id,
                )
            )
            log.info(
                "callback %s arrived early for payment %s: %s", callback_id, payment.id, status
            )
        return payment

    async def mark_rejected(
        self, payment_id: str, error_code: str | None, error_message: str
    ) -> Payment:
        """Daraja refused the STK push synchronously: ``created`` → ``rejected``."""
        return await self._transition(payment_id, Rejected(error_code, error_message))

    async def mark_unknown(self, payment_id: str, reason: str) -> Payment:
        """The push may have reached Daraja but no answer came: ``created`` → ``unknown``.

        In the same transaction, a success callback already stored for an id we never
        recorded, with this payment's amount and phone, gives it that id, unverified (see
        :meth:`adopt_orphan_callbacks`).
        """

        async def work(conn: AsyncConnection) -> Payment:
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            decision, payment = await self._apply(conn, current, OutcomeUnknown(reason))
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            return await self._adopt_stored_orphan(conn, payment)

        return await self._write(work)

    async def expire(self, payment_id: str) -> Payment:
        """No final answer before the deadline: ``pending``/``unknown`` → ``failed`` (expired).

        Flagged when the customer may have paid (the push was never confirmed, or a success
        callback waited for Daraja's confirmation).
        """
        return await self._transition(payment_id, Expired())

    async def resolve_flag(self, payment_id: str, note: str, *, by: str) -> Payment:
        """A person resolved the payment's flag: clear it and write ``payment.flag_resolved``.

        The status does not change. The event's ``detail`` records who resolved it, their
        note and the flag's reason.

        Args:
            payment_id: the flagged payment.
            note: what was found or done (1 to 1000 characters).
            by: who resolved it (an operator's name, 1 to 64 characters).

        Raises:
            ValidationError: an empty or too long note or name.
            PaymentNotFoundError: no such payment.
            InvalidTransitionError: the payment is not flagged.
        """
        note = _required_text("note", note, 1000)
        by = _required_text("by", by, 64)
        return await self._transition(payment_id, FlagResolved(note, by))

    async def redeliver(self, delivery_id: str) -> DeliveryRecord:
        """Send a webhook delivery again now: one more attempt for a ``failed`` one, or a
        repeat of a ``delivered`` one (receivers de-duplicate on the event id).

        A ``pending`` delivery is refused: it is already scheduled, and may be in flight
        (claimed by a dispatcher), which must never happen twice at once.

        Raises:
            DeliveryNotFoundError: no such delivery.
            LedgerError: the delivery is pending.
        """
        now = self._now()
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    update(webhook_deliveries)
                    .where(
                        webhook_deliveries.c.id == delivery_id,
                        webhook_deliveries.c.status.in_(["failed", "delivered"]),
                    )
                    .values(status="pending", next_attempt_at=now, updated_at=now)
                    .returning(*webhook_deliveries.c)
                )
            ).first()
            if row is not None:
                mark_outbox_written(conn)
            if row is None:
                current = (
                    await conn.execute(
                        select(webhook_deliveries.c.status).where(
                            webhook_deliveries.c.id == delivery_id
                        )
                    )
                ).first()
                if current is None:
                    raise DeliveryNotFoundError(delivery_id)
                raise LedgerError(
                    f"webhook delivery {delivery_id} is already pending (scheduled or in flight)"
                )
        log.info("webhook delivery %s scheduled again now", delivery_id)
        return row_to_delivery_record(row)

    async def abandon_verification(self, payment_id: str) -> Payment:
        """Stop asking Daraja about a payment's evidence (its verification window passed).

        A pending or unknown payment expires (flagged when it holds evidence); a failed one
        that holds a success callback Daraja never confirmed is flagged for a human.
        """
        return await self._transition(payment_id, Unverifiable())

    async def drop_unverified_id(self, payment_id: str, detail: str = "") -> Payment:
        """Daraja refused an STK query by an id learnt from a callback: forget that id.

        The callbacks that named it are marked ``invalid``; another stored success callback
        that matches the payment may then give it an id (in the same transaction).

        Raises:
            PaymentNotFoundError: no such payment.
            InvalidTransitionError: the payment's id is not an unverified one.
        """

        async def work(conn: AsyncConnection) -> Payment:
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            dropped = current.checkout_request_id
            decision, payment = await self._apply(conn, current, IdUnknownToDaraja(detail))
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            await conn.execute(
                update(callbacks)
                .where(
                    callbacks.c.kind == "stk",
                    callbacks.c.checkout_request_id == dropped,
                    callbacks.c.outcome.in_(["unverified", "unknown_payment"]),
                )
                .values(outcome="invalid", detail="Daraja does not know this CheckoutRequestID")
            )
            return await self._adopt_stored_orphan(conn, payment)

        return await self._write(work)

    async def adopt_orphan_callbacks(self, payment_id: str) -> Payment:
        """Look for a stored success callback naming an id we never recorded that fits this
        ``unknown`` payment without an id (its push answer was lost), and adopt its id.

        The id is unverified: it only lets the reconciler ask Daraja (``verify_at`` is set),
        and never makes the payment ``succeeded`` by itself. Exactly one distinct id must
        match (the amount asked, a phone that agrees); otherwise nothing changes.

        Returns:
            The payment, with the adopted id or unchanged.
        """

        async def work(conn: AsyncConnection) -> Payment:
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            return await self._adopt_stored_orphan(conn, current)

        return await self._write(work)

    async def _adopt_stored_orphan(self, conn: AsyncConnection, payment: Payment) -> Payment:
        """Adopt the id of the one stored orphan success fitting ``payment`` (no commit)."""
        state = _state(payment)
        if payment.status is not PaymentStatus.UNKNOWN or payment.checkout_request_id is not None:
            return payment
        rows = (
            await conn.execute(
                select(callbacks.c.id, callbacks.c.body, callbacks.c.checkout_request_id)
                .where(
                    callbacks.c.kind == "stk",
                    callbacks.c.outcome == "unknown_payment",
                    callbacks.c.received_at >= payment.created_at,
                    callbacks.c.checkout_request_id.is_not(None),
                )
                .order_by(callbacks.c.received_at, callbacks.c.id)
                .limit(_MAX_ORPHAN_SCAN)
            )
        ).all()
        parsed_by_id: dict[str, tuple[str, ParsedStkCallback]] = {}
        for callback_id, body, cid in rows:
            try:
                parsed = self._parse(bytes(body))
            except (InvalidCallbackError, ValueError, TypeError, KeyError):
                continue
            if orphan_matches(state, parsed.result):
                parsed_by_id[callback_id] = (cid, parsed)
        if not parsed_by_id:
            return payment
        candidates = [(key, cid, p.result) for key, (cid, p) in parsed_by_id.items()]
        ids = list({cid for cid, _ in parsed_by_id.values()})
        taken = (
            await conn.execute(
                select(payments.c.checkout_request_id).where(
                    payments.c.checkout_request_id.in_(ids)
                )
            )
        ).all()
        chosen = single_orphan(state, candidates, (cid for (cid,) in taken))
        if chosen is None:
            log.warning(
                "payment %s fits stored callbacks with %d different ids; none adopted",
                payment.id,
                len(ids),
            )
            return payment
        callback_id, _ = chosen
        return await self._adopt(conn, payment, parsed_by_id[callback_id][1], callback_id)

    async def _adopt(
        self, conn: AsyncConnection, payment: Payment, parsed: ParsedStkCallback, callback_id: str
    ) -> Payment:
        event = IdFromCallback(parsed.checkout_request_id, parsed.merchant_request_id)
        decision, adopted = await self._apply(conn, payment, event, callback_id=callback_id)
        if not decision.writes:
            return payment
        await conn.execute(
            update(callbacks)
            .where(callbacks.c.id == callback_id)
            .values(outcome="unverified", detail=decision.detail, payment_id=payment.id)
        )
        log.warning(
            "payment %s: its push answer was lost; callback %s named its CheckoutRequestID "
            "(unverified), to be settled by query",
            payment.id,
            callback_id,
        )
        return adopted

    async def _transition(self, payment_id: str, event: LedgerInput) -> Payment:
        async def work(conn: AsyncConnection) -> Payment:
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            decision, payment = await self._apply(conn, current, event)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            return payment

        return await self._write(work)

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """Run ``work`` in a write transaction, retrying when a guarded update lost a race."""
        for attempt in range(_MAX_RETRIES):
            try:
                async with self._engine.begin() as conn:
                    return await work(conn)
            except _VersionConflict:
                log.debug("version conflict, retrying (attempt %d)", attempt + 1)
        raise LedgerConflictError("payment kept changing under a guarded update; gave up")

    async def _lock_payment(self, conn: AsyncConnection, where: Any) -> Payment | None:
        query = select(payments).where(where)
        if self._postgres:
            query = query.with_for_update()
        row = (await conn.execute(query)).first()
        return None if row is None else _row_to_payment(row)

    async def _apply(
        self,
        conn: AsyncConnection,
        current: Payment,
        event: LedgerInput,
        *,
        callback_id: str | None = None,
    ) -> tuple[Decision, Payment]:
        """Decide and, if applied, write the row, its events and deliveries (no commit)."""
        decision, payment, inserts = await self._update(
            conn, current, event, callback_id=callback_id
        )
        await self._flush(conn, inserts)
        return decision, payment

    async def _flush(self, conn: AsyncConnection, statements: Sequence[Insert]) -> None:
        """Execute INSERTs; on PostgreSQL as one statement (data-modifying CTEs).

        The callback path writes up to three tables after its update (events, deliveries,
        the raw callback): one round trip instead of three keeps it lean. Foreign keys
        between the CTEs are checked at the end of the statement.
        """
        if not statements:
            return
        if self._postgres and len(statements) > 1:
            *first, last = statements
            await conn.execute(
                last.add_cte(*(stmt.cte(f"pesa_write_{n}") for n, stmt in enumerate(first)))
            )
            return
        for stmt in statements:
            await conn.execute(stmt)

    async def _load_state(self, conn: AsyncConnection, payment: Payment) -> PaymentState:
        """The state machine's view of ``payment``, with its unsettled evidence parsed."""
        if payment.evidence_callback_id is None:
            return _state(payment)
        row = (
            await conn.execute(
                select(callbacks.c.body, callbacks.c.outcome).where(
                    callbacks.c.id == payment.evidence_callback_id
                )
            )
        ).first()
        if row is None:  # pragma: no cover - evidence rows are never deleted
            return _state(payment)
        return self._evidence_state(payment, row[0], row[1])

    def _evidence_state(self, payment: Payment, body: Any, outcome: str | None) -> PaymentState:
        """The state machine's view of ``payment`` given its evidence callback's stored body
        and outcome (``None`` when it has none)."""
        if payment.evidence_callback_id is None or body is None:
            return _state(payment)
        try:
            evidence = self._parse(bytes(body)).result
        except (InvalidCallbackError, ValueError, TypeError, KeyError):  # pragma: no cover
            return _state(payment)
        return _state(payment, evidence, evidence_refused=outcome == "invalid")

    def _plan(
        self,
        current: Payment,
        state: PaymentState,
        event: LedgerInput,
        *,
        callback_id: str | None,
        on_mismatch: MismatchPolicy | None,
    ) -> _Plan:
        """Ask the state machine; when it writes, the row's changes and the outbox rows.

        Pure (no I/O): the caller writes ``changes`` under the version guard.
        """
        decision = decide(
            state, event, lookup=self._lookup, on_mismatch=on_mismatch or self._on_mismatch
        )
        if not decision.writes:
            return _Plan(decision, current, None, [], [])
        now = self._now()
        changes = row_changes(
            decision, now=now, verify_since=current.verify_since, callback_id=callback_id
        )
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        snapshot = {name: changes[name] for name in _PAYMENT_FIELDS if name in changes}
        snapshot["status"] = PaymentStatus(changes.get("status", current.status))
        payment = dataclasses.replace(current, **snapshot)
        data = {"payment": payment.to_dict(), "detail": decision.detail}
        events, deliveries = self._outbox_rows(
            payment.id, [(str(t), data) for t in decision.events], now, payment_id=payment.id
        )
        return _Plan(decision, payment, changes, events, deliveries)

    async def _update(
        self,
        conn: AsyncConnection,
        current: Payment,
        event: LedgerInput,
        *,
        callback_id: str | None = None,
        on_mismatch: MismatchPolicy | None = None,
    ) -> tuple[Decision, Payment, list[Insert]]:
        """Decide and, if the row changes, update it; return the inserts still to execute."""
        state = await self._load_state(conn, current)
        plan = self._plan(current, state, event, callback_id=callback_id, on_mismatch=on_mismatch)
        if plan.changes is None:
            return plan.decision, current, []
        result = await conn.execute(
            update(payments)
            .where(payments.c.id == current.id, payments.c.version == current.version)
            .values(plan.changes)
        )
        if result.rowcount != 1:
            raise _VersionConflict
        _log_transition(current, plan)
        return plan.decision, plan.payment, self._outbox_statements(plan.events, plan.deliveries)

    def _outbox_inserts(
        self,
        subject_id: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        now: datetime,
        *,
        payment_id: str | None = None,
    ) -> list[Insert]:
        """Outbox rows for ``events`` (type, data) about ``subject_id``, and their deliveries.

        Every kind (payments, receipts, ...) writes its events here, in the transaction of
        its transition. On PostgreSQL a transaction that writes events without locking a
        payment row must call :meth:`_hold_feed` first (the event feed's horizon).
        """
        rows, deliveries = self._outbox_rows(subject_id, events, now, payment_id=payment_id)
        return self._outbox_statements(rows, deliveries)

    def _outbox_rows(
        self,
        subject_id: str,
        events: Sequence[tuple[str, Mapping[str, Any]]],
        now: datetime,
        *,
        payment_id: str | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The event rows of ``events`` and one delivery row per event per endpoint."""
        rows: list[dict[str, Any]] = []
        now_ms = int(now.timestamp() * 1000)
        for event_type, data in events:
            event_id = new_id("evt", now_ms=now_ms)
            body = {"id": event_id, "type": event_type, "created_at": now.isoformat(), "data": data}
            rows.append(
                {
                    "id": event_id,
                    "payment_id": payment_id,
                    "subject_id": subject_id,
                    "type": event_type,
                    "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    "created_at": now,
                }
            )
        deliveries = [
            {
                "id": new_id("whd", now_ms=now_ms),
                "event_id": row["id"],
                "endpoint": endpoint,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for row in rows
            for endpoint in self._endpoints
        ]
        return rows, deliveries

    @staticmethod
    def _outbox_statements(
        rows: Sequence[dict[str, Any]], deliveries: Sequence[dict[str, Any]]
    ) -> list[Insert]:
        if not rows:
            return []
        # SQLAlchemy cannot cache the compiled form of a multi-row VALUES (its cache key is
        # None), so the usual single event is a single-row insert: compiled once per process
        # instead of once per transition. Several events stay one statement so that their
        # seq follows their order.
        statements = [insert(payment_events).values(rows[0] if len(rows) == 1 else list(rows))]
        # Single-row inserts (cacheable, see above); deliveries have no order among them.
        statements.extend(insert(webhook_deliveries).values(row) for row in deliveries)
        return statements

    async def _hold_feed(self, conn: AsyncConnection) -> None:
        """Make this write transaction visible to the event feed's horizon (PostgreSQL).

        The feed shows an event once every older transaction that may write events has
        ended; it finds those by their lock on ``payments`` (see ``_PG_FEED_HORIZON``). A
        transition of another kind (a receipt, ...) takes that lock here, first, before its
        transaction id exists. ``ACCESS SHARE`` conflicts with nothing but DDL.
        """
        if self._postgres:
            await conn.execute(text("LOCK TABLE payments IN ACCESS SHARE MODE"))

    # -- callbacks and query results ------------------------------------------------------

    async def ingest_stk_callback(
        self,
        body: bytes | str | Mapping[str, Any],
        *,
        source_ip: str | None,
        parse: StkCallbackParser | None = None,
        on_mismatch: MismatchPolicy | None = None,
    ) -> CallbackOutcome:
        """Store a raw STK callback and apply it, in one transaction.

        The raw body is always stored (with its source IP, time and outcome), even when it
        is malformed or names a CheckoutRequestID we never issued; then no payment changes.
        Answer Daraja 200 only after this returns: the callback is committed.

        A callback is evidence (see :mod:`pesa.ledger._states`): a success settles the payment
        only when it can be cross-checked against the request; otherwise it is kept as the
        payment's evidence (``unverified``) and the reconciler's STK query settles it. A
        success naming an id we never recorded gives that id (unverified) to the one
        ``unknown`` payment it fits, if exactly one does (a push whose answer was lost).

        Args:
            body: the request body exactly as received (bytes); a ``str`` is stored as
                UTF-8 and a parsed ``dict`` as compact JSON.
            source_ip: the client address the gateway trusts (after proxy handling).
            parse: overrides the ledger's parser for this call.
            on_mismatch: overrides the ledger's policy for a success whose amount or phone
                differs from the request: ``"flag"`` keeps it as evidence (``unverified``),
                ``"refuse"`` stores it as ``invalid``; either way a query settles the payment
                and the payment is flagged if Daraja confirms it.

        Returns:
            A :class:`CallbackOutcome` (``applied``, ``unverified``, ``duplicate``,
            ``ignored``, ``unknown_payment`` or ``invalid``).
        """
        body = _callback_bytes(body)
        received = self._now()
        callback_id = new_id("cb", now_ms=int(received.timestamp() * 1000))
        record = {
            "id": callback_id,
            "kind": "stk",
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }
        try:
            parsed = (parse or self._parse)(bytes(body))
        except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
            detail = f"invalid STK callback: {err}"
            await self._store_callback(record, "invalid", detail, None, None)
            log.warning("callback %s rejected: %s", callback_id, redact(detail))
            return CallbackOutcome(callback_id, "invalid", None, detail)

        policy = on_mismatch or self._on_mismatch

        async def work(conn: AsyncConnection) -> CallbackOutcome:
            return await self._ingest(conn, record, parsed, policy)

        try:
            fast = await self._ingest_fast(record, parsed, policy) if self._postgres else None
            outcome: CallbackOutcome = fast if fast is not None else await self._write(work)
        except Exception as err:
            # Never lose the raw body, even when applying it failed unexpectedly.
            await self._store_callback(
                record, "error", f"{type(err).__name__}", parsed.checkout_request_id, None
            )
            raise
        return outcome

    async def _ingest(
        self,
        conn: AsyncConnection,
        record: dict[str, Any],
        parsed: ParsedStkCallback,
        on_mismatch: MismatchPolicy,
    ) -> CallbackOutcome:
        cid = parsed.checkout_request_id
        current = await self._lock_payment(conn, payments.c.checkout_request_id == cid)
        status: CallbackStatus
        inserts: list[Insert] = []
        payment: Payment | None
        if current is None:
            status, payment, detail = "unknown_payment", None, "no payment has this id"
            adopted = await self._adopt_for_orphan(conn, record["id"], parsed)
            if adopted is not None:
                status, payment = "unverified", adopted
                detail = "CheckoutRequestID learnt from this callback (unverified): "
                detail += "an STK query settles the payment"
        else:
            status, payment, detail, inserts = await self._settle_callback(
                conn, current, parsed, on_mismatch, record["id"]
            )
        inserts.append(
            insert(callbacks).values(
                **record,
                outcome=status,
                detail=detail,
                checkout_request_id=cid,
                payment_id=None if payment is None else payment.id,
            )
        )
        await self._flush(conn, inserts)
        if status not in ("applied", "duplicate"):
            log.warning("callback %s: %s (%s)", record["id"], status, detail)
        return CallbackOutcome(record["id"], status, payment, detail)

    async def _ingest_fast(
        self, record: dict[str, Any], parsed: ParsedStkCallback, on_mismatch: MismatchPolicy
    ) -> CallbackOutcome | None:
        """PostgreSQL: a callback for a known payment in two round trips instead of five.

        The transactional path takes BEGIN, a locked read, the guarded UPDATE, the inserts
        and COMMIT. Here, on an autocommit connection: one read of the payment (with its
        evidence callback, joined), the state machine's decision in Python as always, then
        **one statement**, itself a transaction: the guarded UPDATE as a data-modifying CTE
        whose ``RETURNING`` gates the event, delivery and raw-callback inserts (``INSERT
        ... SELECT ... FROM moved``). When the payment moved since the read (the version
        guard matched no row), nothing at all was written: read and decide again. A
        callback that changes nothing (a duplicate, a mismatch) is one INSERT of the raw
        body. The statement locks ``payments`` when it is parsed, before its transaction id
        exists, as the event feed's horizon needs (``_PG_FEED_HORIZON``).

        Returns:
            ``None`` when the transactional path must run instead: no payment has this
            CheckoutRequestID (an orphan may be adopted, under locks) or the decision writes
            several events (their ``seq`` must follow their order: one multi-row INSERT).
        """
        cid = parsed.checkout_request_id
        for attempt in range(_MAX_RETRIES):
            async with self._engine.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                row = (await conn.execute(_FAST_READ, {"cid": cid})).first()
                if row is None:
                    return None
                current = _row_to_payment(row)
                m = row._mapping
                plan: _Plan | None = None
                mismatch = merchant_request_mismatch(
                    parsed.merchant_request_id, current.merchant_request_id
                )
                status: CallbackStatus
                if mismatch is not None:
                    status, payment, detail = "invalid", current, mismatch
                else:
                    state = self._evidence_state(
                        current, m["pesa_evidence_body"], m["pesa_evidence_outcome"]
                    )
                    plan = self._plan(
                        current,
                        state,
                        parsed.result,
                        callback_id=record["id"],
                        on_mismatch=on_mismatch,
                    )
                    if len(plan.events) > 1:
                        return None
                    status, payment = callback_status(plan.decision), plan.payment
                    detail = plan.decision.detail
                stored = {
                    **record,
                    "outcome": status,
                    "detail": detail,
                    "checkout_request_id": cid,
                    "payment_id": payment.id,
                }
                if plan is None or plan.changes is None:
                    await conn.execute(_INSERT_CALLBACK, stored)
                elif (await conn.execute(*_gated_write(current, plan, stored))).first() is None:
                    log.debug("version conflict, retrying (attempt %d)", attempt + 1)
                    continue
                else:
                    _log_transition(current, plan)
            if status not in ("applied", "duplicate"):
                log.warning("callback %s: %s (%s)", record["id"], status, detail)
            return CallbackOutcome(record["id"], status, payment, detail)
        raise LedgerConflictError("payment kept changing under a guarded update; gave up")

    async def _adopt_for_orphan(
        self, conn: AsyncConnection, callback_id: str, parsed: ParsedStkCallback
    ) -> Payment | None:
        """Find the one ``unknown`` payment without an id that this success fits, and adopt."""
        result = parsed.result
        if not result.is_success or result.amount is None or result.phone is None:
            return None
        query = select(payments).where(
            payments.c.status == PaymentStatus.UNKNOWN.value,
            payments.c.checkout_request_id.is_(None),
            payments.c.amount == result.amount,
        )
        with contextlib.suppress(ValidationError):
            # A full number narrows the search in the database; a masked one cannot.
            query = query.where(payments.c.phone == normalize_msisdn(result.phone))
        query = query.order_by(payments.c.created_at).limit(_MAX_PAGE)
        if self._postgres:
            query = query.with_for_update()
        candidates = [
            p
            for p in (_row_to_payment(row) for row in (await conn.execute(query)).all())
            if orphan_matches(_state(p), result)
        ]
        if len(candidates) != 1:
            if candidates:
                log.warning(
                    "callback %s fits %d unknown payments; not adopted",
                    callback_id,
                    len(candidates),
                )
            return None
        payment = candidates[0]
        event = IdFromCallback(parsed.checkout_request_id, parsed.merchant_request_id)
        decision, adopted = await self._apply(conn, payment, event, callback_id=callback_id)
        if not decision.writes:  # pragma: no cover - orphan_matches admits only adoptable ones
            return None
        log.warning(
            "payment %s: its push answer was lost; callback %s named its CheckoutRequestID "
            "(unverified), to be settled by query",
            payment.id,
            callback_id,
        )
        return adopted

    async def _settle_callback(
        self,
        conn: AsyncConnection,
        current: Payment,
        parsed: ParsedStkCallback,
        on_mismatch: MismatchPolicy,
        callback_id: str,
    ) -> tuple[CallbackStatus, Payment, str, list[Insert]]:
        """Check a parsed callback against its payment and apply it (the inserts still to run)."""
        mismatch = merchant_request_mismatch(
            parsed.merchant_request_id, current.merchant_request_id
        )
        if mismatch is not None:
            return "invalid", current, mismatch, []
        decision, payment, inserts = await self._update(
            conn, current, parsed.result, callback_id=callback_id, on_mismatch=on_mismatch
        )
        return callback_status(decision), payment, decision.detail, inserts

    async def store_refused_callback(
        self, body: bytes, *, source_ip: str | None, detail: str, kind: str = "stk"
    ) -> str:
        """Keep raw a callback refused before it could be parsed (a body over the size
        cap, of which ``body`` is the start), as ``invalid`` evidence; nothing else changes.
        ``kind`` is the route's (``stk``, ``b2c_result``, ...).

        Returns:
            The stored callback's id.
        """
        received = self._now()
        callback_id = new_id("cb", now_ms=int(received.timestamp() * 1000))
        record = {
            "id": callback_id,
            "kind": kind,
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }
        await self._store_callback(record, "invalid", detail, None, None)
        return callback_id

    async def _store_callback(
        self,
        record: dict[str, Any],
        outcome: str,
        detail: str,
        checkout_request_id: str | None,
        payment_id: str | None,
    ) -> None:
        # This is the path that must not fail because of what the body said: the raw body
        # always fits (LargeBinary), and a parsed field that cannot be stored (too long for
        # its column, NUL, a lone surrogate) is left out, with the reason in ``detail``.
        notes: list[str] = []
        row = dict(record)
        if checkout_request_id is not None and not _storable_key(
            checkout_request_id, _CHECKOUT_ID_LENGTH
        ):
            notes.append("CheckoutRequestID not stored (not printable ASCII of at most 128)")
            checkout_request_id = None
        if row.get("source_ip") is not None and not _storable_key(row["source_ip"], 64):
            notes.append("source address not stored (not printable ASCII of at most 64)")
            row["source_ip"] = None
        if payment_id is not None and not _storable_key(payment_id, _ID_LENGTH):
            payment_id = None
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(callbacks).values(
                    **row,
                    outcome=outcome,
                    detail=_storable_text("; ".join([detail, *notes])),
                    checkout_request_id=checkout_request_id,
                    payment_id=payment_id,
                )
            )

    async def apply_stk_result(
        self,
        checkout_request_id: str,
        result: StkResult,
        *,
        source: Literal["callback", "query"] = "query",
    ) -> CallbackOutcome:
        """Apply a result learnt by STK query (Daraja's authoritative answer).

        A success settles the payment (its evidence, if any, completes the record or is
        flagged); a final failure fails it; either closes any pending verification.

        Returns:
            A :class:`CallbackOutcome` with ``callback_id=None``; ``unknown_payment`` when no
            payment has this CheckoutRequestID.
        """
        result = dataclasses.replace(result, source=source)

        async def work(conn: AsyncConnection) -> CallbackOutcome:
            current = await self._lock_payment(
                conn, payments.c.checkout_request_id == checkout_request_id
            )
            if current is None:
                return CallbackOutcome(None, "unknown_payment", None, "no payment has this id")
            decision, payment = await self._apply(conn, current, result)
            return CallbackOutcome(None, callback_status(decision), payment, decision.detail)

        outcome: CallbackOutcome = await self._write(work)
        return outcome

    async def record_stk_query(
        self,
        payment_id: str,
        checkout_request_id: str,
        outcome: StkQueryOutcome,
        *,
        result_code: str | None = None,
        result_desc: str | None = None,
        detail: str | None = None,
    ) -> StkQueryRecord:
        """Log one STK query and Daraja's answer (shown on the payment's timeline)."""
        now = self._now()
        values: dict[str, Any] = {
            "id": new_id("qry", now_ms=int(now.timestamp() * 1000)),
            "payment_id": payment_id,
            "checkout_request_id": checkout_request_id,
            "asked_at": now,
            "outcome": outcome,
            "result_code": None if result_code is None else result_code[:32],
            "result_desc": None if result_desc is None else redact(result_desc)[:_MAX_ERROR_TEXT],
            "detail": None if detail is None else redact(detail)[:_MAX_ERROR_TEXT],
        }
        async with self._engine.begin() as conn:
            await conn.execute(insert(stk_queries).values(values))
        return StkQueryRecord(**values)

    async def list_stk_queries(self, payment_id: str) -> list[StkQueryRecord]:
        """Every STK query logged for a payment, oldest first."""
        rows = await self._select(
            select(stk_queries)
            .where(stk_queries.c.payment_id == payment_id)
            .order_by(stk_queries.c.seq)
        )
        return [
            StkQueryRecord(**{k: v for k, v in row._mapping.items() if k != "seq"}) for row in rows
        ]

    # -- reconciliation -------------------------------------------------------------------

    async def claim_for_reconciliation(
        self, *, limit: int, min_age: timedelta, lease: timedelta
    ) -> list[Payment]:
        """Claim payments due for a status query.

        Due means either: pending/unknown, created at least ``min_age`` ago, and
        ``next_check_at`` (if set) reached; or a verification asked for (``verify_at``
        reached) whatever the status, without waiting ``min_age`` (a success callback that
        could not be cross-checked is waiting). Never while another worker's claim lease
        runs. Claimed payments are leased for ``lease``: a crashed worker's claims return
        after it. On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED``, so
        concurrent workers never claim the same payment.
        """
        _check_limit(limit)
        now = self._now()
        free = or_(payments.c.claimed_until.is_(None), payments.c.claimed_until <= now)
        routine = and_(
            payments.c.status.in_([PaymentStatus.PENDING.value, PaymentStatus.UNKNOWN.value]),
            payments.c.created_at <= now - min_age,
            or_(payments.c.next_check_at.is_(None), payments.c.next_check_at <= now),
        )
        verification = payments.c.verify_at <= now

        async def work(conn: AsyncConnection) -> list[Payment]:
            ids: list[str] = []
            # Two queries rather than one OR, so each uses its own index.
            for due, order in (
                (verification, (payments.c.verify_at,)),
                (routine, (payments.c.next_check_at.nulls_first(), payments.c.created_at)),
            ):
                if len(ids) >= limit:
                    break
                query = select(payments.c.id).where(due, free).order_by(*order)
                if ids:
                    query = query.where(payments.c.id.not_in(ids))
                query = query.limit(limit - len(ids))
                if self._postgres:
                    query = query.with_for_update(skip_locked=True)
                ids.extend(row[0] for row in (await conn.execute(query)).all())
            if not ids:
                return []
            rows = await conn.execute(
                update(payments)
                .where(payments.c.id.in_(ids))
                .values(claimed_until=now + lease, check_count=payments.c.check_count + 1)
                .returning(*payments.c)
            )
            claimed = [_row_to_payment(row) for row in rows.all()]
            claimed.sort(key=lambda p: ids.index(p.id))
            return claimed

        claimed: list[Payment] = await self._write(work)
        return claimed

    async def record_still_pending(self, payment_id: str, next_check_at: datetime) -> Payment:
        """No final answer yet (still processing, or no usable answer): check again later.

        Releases the reconciliation claim and schedules the next check (of the payment, and
        of its pending verification if one is asked for). Writes no event.

        Raises:
            PaymentNotFoundError: no such payment.
        """

        async def work(conn: AsyncConnection) -> Payment:
            row = (
                await conn.execute(
                    update(payments)
                    .where(
                        payments.c.id == payment_id,
                        or_(
                            payments.c.status.in_(
                                [PaymentStatus.PENDING.value, PaymentStatus.UNKNOWN.value]
                            ),
                            payments.c.verify_at.is_not(None),
                        ),
                    )
                    .values(
                        next_check_at=next_check_at,
                        claimed_until=None,
                        verify_at=case((payments.c.verify_at.is_(None), None), else_=next_check_at),
                    )
                    .returning(*payments.c)
                )
            ).first()
            if row is not None:
                return _row_to_payment(row)
            current = await self._lock_payment(conn, payments.c.id == payment_id)
            if current is None:
                raise PaymentNotFoundError(payment_id)
            return current  # already settled: nothing to schedule

        payment: Payment = await self._write(work)
        return payment

    async def recover_stale_created(self, older_than: timedelta) -> list[Payment]:
        """Move intents stuck in ``created`` for ``older_than`` to ``unknown``.

        A payment stays ``created`` only if the process died between committing the intent
        and recording Daraja's answer: the push may or may not have been sent, so the
        payment becomes ``unknown`` (never re-sent automatically) and is settled by the
        reconciler or expires.
        """
        cutoff = self._now() - older_than
        reason = "the STK push's outcome was never recorded (process stopped during the send)"

        async def work(conn: AsyncConnection) -> list[Payment]:
            query = select(payments).where(
                payments.c.status == PaymentStatus.CREATED.value,
                payments.c.created_at <= cutoff,
            )
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            moved = []
            for row in (await conn.execute(query)).all():
                decision, payment = await self._apply(
                    conn, _row_to_payment(row), OutcomeUnknown(reason)
                )
                if decision.applied:
                    moved.append(await self._adopt_stored_orphan(conn, payment))
            return moved

        moved: list[Payment] = await self._write(work)
        return moved

    async def list_callbacks(self, payment_id: str) -> list[StoredCallback]:
        """Every raw callback linked to a payment (applied, evidence, refused...), oldest first."""
        rows = await self._select(
            select(callbacks)
            .where(callbacks.c.payment_id == payment_id)
            .order_by(callbacks.c.received_at, callbacks.c.id)
        )
        return [_row_to_callback(row) for row in rows]

    # -- reads ----------------------------------------------------------------------------

    async def _select(self, query: Any) -> list[Row[Any]]:
        async with self._engine.connect() as conn:
            if not self._postgres:
                conn = await conn.execution_options(**{BEGIN_MODE: "DEFERRED"})
            return list((await conn.execute(query)).all())

    async def get_payment(self, payment_id: str) -> Payment | None:
        """The payment with this id (``pay_...``), or ``None``."""
        if not _storable_key(payment_id, _ID_LENGTH):
            return None
        rows = await self._select(select(payments).where(payments.c.id == payment_id))
        return _row_to_payment(rows[0]) if rows else None

    async def get_payment_by_checkout_id(self, checkout_request_id: str) -> Payment | None:
        """The payment Daraja knows by this CheckoutRequestID, or ``None``."""
        if not _storable_key(checkout_request_id, _CHECKOUT_ID_LENGTH):
            return None
        rows = await self._select(
            select(payments).where(payments.c.checkout_request_id == checkout_request_id)
        )
        return _row_to_payment(rows[0]) if rows else None

    async def list_payments(
        self,
        *,
        status: PaymentStatus | str | None = None,
        phone: str | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
        account: str | None = None,
    ) -> Page[Payment]:
        """Payments, newest first, filtered; pass ``page.next_cursor`` back for the next page.

        ``created_from`` is inclusive, ``created_to`` exclusive.

        Raises:
            ValidationError: an unknown status, a bad phone or limit.
        """
        _check_limit(limit)
        query = select(payments)
        if status is not None:
            try:
                query = query.where(payments.c.status == PaymentStatus(status).value)
            except ValueError as err:
                allowed = ", ".join(s.value for s in PaymentStatus)
                raise ValidationError("status", f"must be one of {allowed}", status) from err
        if phone is not None:
            query = query.where(payments.c.phone == normalize_msisdn(phone))
        if account is not None:
            query = query.where(payments.c.account == _check_key(account, "account", 32))
        if created_from is not None:
            query = query.where(payments.c.created_at >= _check_time(created_from, "created_from"))
        if created_to is not None:
            query = query.where(payments.c.created_at < _check_time(created_to, "created_to"))
        if cursor is not None:
            query = query.where(payments.c.id < _check_key(cursor, "cursor", _ID_LENGTH))
        rows = await self._select(query.order_by(payments.c.id.desc()).limit(limit + 1))
        items = [_row_to_payment(row) for row in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def list_events(
        self,
        *,
        after: int | str | None = None,
        limit: int = 100,
        payment_id: str | None = None,
        subject_id: str | None = None,
    ) -> Page[Event]:
        """Events in outbox order, after the cursor ``after``.

        Pass back ``page.next_cursor`` (an opaque string); it is always where to resume, so
        polling with it later never skips nor repeats an event. A bare integer is accepted
        too, as the ``seq`` of the last event seen.

        Only events whose transactions are settled are shown: on PostgreSQL an event waits
        while an older ledger write transaction (one holding a lock on ``payments``) is
        still running, because the feed is ordered by (transaction, seq) rather than by
        insert order alone; write transactions last milliseconds, so poll.

        Raises:
            ValidationError: a malformed or unknown cursor, or a bad limit.
        """
        _check_limit(limit, 1000)
        position = await self._event_position(after)
        query = select(payment_events).where(
            tuple_(payment_events.c.txid, payment_events.c.seq) > tuple_(*position)
        )
        if self._postgres:
            query = query.where(payment_events.c.txid < _PG_FEED_HORIZON)
        if payment_id is not None:
            _check_key(payment_id, "payment_id", _ID_LENGTH)
            query = query.where(payment_events.c.payment_id == payment_id)
        if subject_id is not None:
            _check_key(subject_id, "subject_id", _ID_LENGTH)
            query = query.where(payment_events.c.subject_id == subject_id)
        order = (payment_events.c.txid, payment_events.c.seq)
        rows = await self._select(query.order_by(*order).limit(limit + 1))
        items = [_row_to_event(row) for row in rows[:limit]]
        if items:
            cursor: str | None = items[-1].cursor
        else:
            cursor = None if after is None else f"{position[0]}:{position[1]}"
        return Page(items, cursor, len(rows) > limit)

    async def _event_position(self, after: int | str | None) -> tuple[int, int]:
        if after is None:
            return (-1, 0)
        text_value = str(after).strip()
        if len(text_value) > 41 or not text_value.isascii():
            # Two BIGINTs and a colon at most; int() would also read Unicode digits.
            raise ValidationError("after", "must be a cursor from list_events", text_value[:40])
        try:
            if ":" in text_value:
                txid, seq = text_value.split(":", 1)
                return (_check_position(int(txid), "after"), _check_position(int(seq), "after"))
            seq_only = _check_position(int(text_value), "after")
        except ValueError as err:
            if isinstance(err, ValidationError):
                raise
            raise ValidationError("after", "must be a cursor from list_events", after) from err
        rows = await self._select(
            select(payment_events.c.txid).where(payment_events.c.seq == seq_only)
        )
        if not rows:
            if seq_only == 0:
                return (-1, 0)
            raise ValidationError("after", "no event has this seq", seq_only)
        return (int(rows[0][0]), seq_only)

    async def get_event(self, event_id: str) -> Event | None:
        """The event with this id (``evt_...``), or ``None``."""
        rows = await self._select(select(payment_events).where(payment_events.c.id == event_id))
        return _row_to_event(rows[0]) if rows else None

    async def stats(self) -> LedgerStats:
        """Counts for ``/metrics``: payments by status, callbacks by outcome, deliveries."""
        async with self._engine.connect() as conn:
            if not self._postgres:
                conn = await conn.execution_options(**{BEGIN_MODE: "DEFERRED"})
            by_status = {s.value: 0 for s in PaymentStatus}
            for key, count in await conn.execute(
                select(payments.c.status, func.count()).group_by(payments.c.status)
            ):
                by_status[key] = int(count)
            by_outcome: dict[str, int] = {}
            for key, count in await conn.execute(
                select(callbacks.c.outcome, func.count()).group_by(callbacks.c.outcome)
            ):
                by_outcome[key] = int(count)
            by_delivery = {"pending": 0, "delivered": 0, "failed": 0}
            for key, count in await conn.execute(
                select(webhook_deliveries.c.status, func.count()).group_by(
                    webhook_deliveries.c.status
                )
            ):
                by_delivery[key] = int(count)
            flagged = (
                await conn.execute(
                    select(func.count()).select_from(payments).where(payments.c.flagged.is_(True))
                )
            ).scalar_one()
        return LedgerStats(by_status, by_outcome, by_delivery, int(flagged))

    # -- webhook outbox -------------------------------------------------------------------

    async def claim_deliveries(
        self,
        *,
        limit: int,
        lease: timedelta,
        endpoint: str | None = None,
        exclude_endpoints: Sequence[str] = (),
    ) -> list[Delivery]:
        """Claim webhook deliveries that are due, oldest first.

        Each claimed row's ``next_attempt_at`` moves to now + ``lease`` and its ``attempts``
        grows by one: if the worker dies, the delivery is due again when the lease ends
        (at-least-once). On PostgreSQL, ``FOR UPDATE SKIP LOCKED`` keeps concurrent
        dispatchers from claiming the same row.

        Args:
            limit: at most this many.
            lease: how long the claim holds.
            endpoint: only deliveries to this endpoint (a dispatcher serves each endpoint
                on its own, so that a slow one delays only itself).
            exclude_endpoints: no deliveries to these endpoints.
        """
        _check_limit(limit)
        now = self._now()
        filters = [
            webhook_deliveries.c.status == "pending",
            webhook_deliveries.c.next_attempt_at <= now,
        ]
        if endpoint is not None:
            filters.append(webhook_deliveries.c.endpoint == endpoint)
        if exclude_endpoints:
            filters.append(webhook_deliveries.c.endpoint.not_in(list(exclude_endpoints)))

        def delivery(row: Row[Any]) -> Delivery:
            return Delivery(
                id=row._mapping["delivery_id"],
                endpoint=row._mapping["endpoint"],
                attempts=int(row._mapping["attempts"]),
                event=_row_to_event(row),
            )

        due = (
            select(webhook_deliveries.c.id)
            .where(*filters)
            .order_by(webhook_deliveries.c.next_attempt_at, webhook_deliveries.c.id)
            .limit(limit)
        )
        if self._postgres:
            # One statement (one round trip): pick, lease and read. The claim is on the
            # path of every webhook, from the commit that woke the dispatcher to the POST.
            leased = (
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id.in_(
                        due.with_for_update(skip_locked=True).scalar_subquery()
                    )
                )
                .values(
                    next_attempt_at=now + lease,
                    attempts=webhook_deliveries.c.attempts + 1,
                    updated_at=now,
                )
                .returning(
                    webhook_deliveries.c.id,
                    webhook_deliveries.c.endpoint,
                    webhook_deliveries.c.attempts,
                    webhook_deliveries.c.event_id,
                )
                .cte("pesa_claimed")
            )
            query = (
                select(
                    leased.c.id.label("delivery_id"),
                    leased.c.endpoint,
                    leased.c.attempts,
                    *payment_events.c,
                )
                .join(payment_events, payment_events.c.id == leased.c.event_id)
                .order_by(payment_events.c.seq)
            )
            async with self._engine.begin() as conn:
                return [delivery(row) for row in (await conn.execute(query)).all()]

        async def work(conn: AsyncConnection) -> list[Delivery]:
            ids = [row[0] for row in (await conn.execute(due)).all()]
            if not ids:
                return []
            await conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id.in_(ids))
                .values(
                    next_attempt_at=now + lease,
                    attempts=webhook_deliveries.c.attempts + 1,
                    updated_at=now,
                )
            )
            rows = await conn.execute(
                select(
                    webhook_deliveries.c.id.label("delivery_id"),
                    webhook_deliveries.c.endpoint,
                    webhook_deliveries.c.attempts,
                    *payment_events.c,
                )
                .join(payment_events, payment_events.c.id == webhook_deliveries.c.event_id)
                .where(webhook_deliveries.c.id.in_(ids))
                .order_by(payment_events.c.seq)
            )
            return [delivery(row) for row in rows.all()]

        found: list[Delivery] = await self._write(work)
        return found

    async def mark_delivered(self, delivery_id: str, status_code: int) -> None:
        """The endpoint acknowledged the delivery (a 2xx ``status_code``)."""
        await self.mark_delivered_many({delivery_id: status_code})

    async def mark_delivered_many(self, acknowledged: Mapping[str, int]) -> None:
        """Several deliveries acknowledged (id → 2xx status code), in one transaction.

        The dispatcher records a round's successes together: one write per round instead
        of one per webhook (on SQLite, one fsync and one turn of the write lock).
        """
        if not acknowledged:
            return
        now = self._now()
        by_status: dict[int, list[str]] = {}
        for delivery_id, status_code in acknowledged.items():
            by_status.setdefault(status_code, []).append(delivery_id)
        async with self._engine.begin() as conn:
            for status_code, ids in by_status.items():
                await conn.execute(
                    update(webhook_deliveries)
                    .where(webhook_deliveries.c.id.in_(ids))
                    .values(
                        status="delivered",
                        last_status_code=status_code,
                        last_error=None,
                        updated_at=now,
                    )
                )

    async def mark_delivery_failed(
        self,
        delivery_id: str,
        error: str,
        next_attempt_at: datetime | None,
        *,
        status_code: int | None = None,
    ) -> None:
        """A delivery attempt failed: retry at ``next_attempt_at``, or give up when ``None``."""
        now = self._now()
        async with self._engine.begin() as conn:
            await conn.execute(
                update(webhook_deliveries)
                .where(
                    webhook_deliveries.c.id == delivery_id,
                    webhook_deliveries.c.status == "pending",
                )
                .values(
                    status="pending" if next_attempt_at is not None else "failed",
                    next_attempt_at=next_attempt_at,
                    last_error=redact(error)[:_MAX_ERROR_TEXT],
                    last_status_code=status_code,
                    updated_at=now,
                )
            )


_DEFAULTS: dict[str, Any] = {
    "checkout_request_id_verified": True,
    "evidence_callback_id": None,
    "verify_at": None,
    "verify_since": None,
    "checkout_request_id": None,
    "merchant_request_id": None,
    "result_code": None,
    "result_desc": None,
    "receipt": None,
    "paid_amount": None,
    "paid_phone": None,
    "transaction_date": None,
    "failure_reason": None,
    "flag_reason": None,
    "next_check_at": None,
    "claimed_until": None,
}


_PAYMENT_FIELDS = frozenset(f.name for f in dataclasses.fields(Payment))


def _callback_bytes(body: bytes | str | Mapping[str, Any]) -> bytes:
    """A callback body as bytes: kept as received when it already is bytes."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, Mapping):
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raise InvalidCallbackError(
        f"a callback body must be bytes, str or a dict (got {type(body).__name__})"
    )
