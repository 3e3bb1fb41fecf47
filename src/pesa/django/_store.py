"""The ledger's rules over the Django models: one database transaction per transition.

Every transition reads the payment (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
serialises writers, best with ``transaction_mode IMMEDIATE``), asks the pure state machine
(:func:`pesa.ledger.decide`), turns the decision into columns with
:func:`pesa.ledger.row_changes`, updates the row guarded by its ``version`` (a lost race is
retried), writes its events, and queues their signals with ``transaction.on_commit``. This
module stores and calls; it decides nothing itself.

The database is the one the project's routers pick for writing ``pesa`` models.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from django.db import IntegrityError, OperationalError, router, transaction
from django.db.models import Case, F, Q, When

from pesa._clock import SYSTEM_CLOCK, Clock, require_clock
from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa._logging import get_logger, mask_phone, redact
from pesa.daraja import normalize_msisdn
from pesa.django.models import Callback, Payment, PaymentEvent, StkQuery
from pesa.django.signals import send_event
from pesa.ledger import (
    Accepted,
    Decision,
    DecisionKind,
    Expired,
    FlagResolved,
    IdempotencyConflictError,
    IdFromCallback,
    IdUnknownToDaraja,
    InvalidTransitionError,
    LedgerConflictError,
    LedgerInput,
    MismatchPolicy,
    OutcomeUnknown,
    ParsedStkCallback,
    PaymentNotFoundError,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    Rejected,
    StkResult,
    Unverifiable,
    callback_status,
    decide,
    merchant_request_mismatch,
    orphan_matches,
    parse_stk_callback_body,
    payment_state,
    request_hash,
    row_changes,
    single_orphan,
    stk_code,
    storable_key,
    storable_text,
)
from pesa.ledger._ids import new_id

__all__ = ["CallbackResult", "Store"]

log = get_logger("pesa.django")

_T = TypeVar("_T")
_MAX_RETRIES = 5
_MAX_PAGE = 500
# How many stored orphan callbacks one adoption attempt reads (a flood of forged orphans
# cannot make a scan unbounded).
_MAX_ORPHAN_SCAN = 200
_MAX_TEXT = 1000
_MAX_ID = 128
_RECONCILABLE = [PaymentStatus.PENDING.value, PaymentStatus.UNKNOWN.value]
_PARSE_ERRORS = (InvalidCallbackError, ValueError, TypeError, KeyError)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _text(value: str | None) -> str | None:
    return None if value is None else storable_text(value, _MAX_TEXT)


def _storable_id(value: str | None, max_length: int = _MAX_ID) -> str | None:
    return value if storable_key(value, max_length) else None


class _VersionConflict(Exception):
    """The payment changed between our read and our guarded update: retry the transaction."""


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What storing and applying one callback did.

    Attributes:
        callback_id: the stored row (``cb_...``).
        status: ``applied``, ``unverified``, ``duplicate``, ``ignored``, ``unknown_payment``
            or ``invalid``.
        payment: the payment it concerns, as left by the transaction (``None`` if none).
        detail: why.
    """

    callback_id: str
    status: str
    payment: Payment | None
    detail: str


@dataclass(frozen=True, slots=True)
class QueryApplied:
    """What applying an STK query's final answer did."""

    status: str
    payment: Payment | None
    detail: str


class Store:
    """The ledger of the Django app: the same transitions as :class:`pesa.ledger.Ledger`.

    Args:
        on_mismatch: ``PESA_CALLBACK_ON_MISMATCH`` (what a success contradicting the
            request is: ``refuse`` or ``flag``; either way only a query settles it).
        clock: where the time is read (:class:`pesa.daraja.Clock`; tests freeze it).
    """

    def __init__(
        self, *, on_mismatch: MismatchPolicy = "refuse", clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.on_mismatch: MismatchPolicy = on_mismatch
        self._clock = require_clock(clock)

    @property
    def clock(self) -> Clock:
        """The store's clock; the reconciler defaults to it."""
        return self._clock

    @property
    def db(self) -> str:
        """The database alias the project's routers pick for writing pesa's models."""
        return router.db_for_write(Payment)

    def now(self) -> datetime:
        """The current time (aware, UTC)."""
        return self._clock.now().astimezone(UTC)

    # -- transactions ---------------------------------------------------------------------

    def _write(self, work: Callable[[str], _T]) -> _T:
        db = self.db
        for attempt in range(_MAX_RETRIES):
            try:
                with transaction.atomic(using=db):
                    return work(db)
            except _VersionConflict:
                log.debug("version conflict, retrying (attempt %d)", attempt + 1)
            except OperationalError as err:
                # SQLite without transaction_mode IMMEDIATE: a read that turns into a write
                # while another connection writes fails at once; nothing was written, retry.
                if "database is locked" not in str(err) or attempt == _MAX_RETRIES - 1:
                    raise
                log.debug("SQLite database locked, retrying (attempt %d)", attempt + 1)
                time.sleep(0.05 * 2**attempt)
        raise LedgerConflictError("payment kept changing under a guarded update; gave up")

    @staticmethod
    def _lock(db: str, **where: object) -> Payment | None:
        return Payment.objects.using(db).select_for_update().filter(**where).first()

    def _lock_id(self, db: str, payment_id: str) -> Payment:
        current = self._lock(db, id=payment_id)
        if current is None:
            raise PaymentNotFoundError(payment_id)
        return current

    def _state(self, db: str, payment: Payment) -> PaymentState:
        """The state machine's view of ``payment``, with its unsettled evidence parsed."""
        if payment.evidence_callback_id is None:
            return payment_state(payment)
        row = (
            Callback.objects.using(db)
            .filter(id=payment.evidence_callback_id)
            .values_list("body", "outcome")
            .first()
        )
        if row is None:  # pragma: no cover - evidence rows are never deleted
            return payment_state(payment)
        try:
            evidence = parse_stk_callback_body(bytes(row[0])).result
        except _PARSE_ERRORS:  # pragma: no cover - only parsed callbacks become evidence
            return payment_state(payment)
        return payment_state(payment, evidence, evidence_refused=row[1] == "invalid")

    def _apply(
        self,
        db: str,
        current: Payment,
        event: LedgerInput,
        *,
        callback_id: str | None = None,
    ) -> tuple[Decision, Payment]:
        """Decide and, if the row changes, write it and its events (inside a transaction)."""
        decision = decide(
            self._state(db, current), event, lookup=stk_code, on_mismatch=self.on_mismatch
        )
        if not decision.writes:
            return decision, current
        now = self.now()
        changes = row_changes(
            decision, now=now, verify_since=current.verify_since, callback_id=callback_id
        )
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        updated = (
            Payment.objects.using(db)
            .filter(id=current.id, version=current.version)
            .update(**changes)
        )
        if updated != 1:
            raise _VersionConflict
        before = current.status
        for name, value in changes.items():
            setattr(current, name, value)
        self._events(db, current, decision, now)
        log.info("payment %s: %s -> %s (%s)", current.id, before, current.status, decision.detail)
        return decision, current

    def _events(self, db: str, payment: Payment, decision: Decision, now: datetime) -> None:
        if not decision.events:
            return
        data = payment.to_dict()
        for event_type in decision.events:
            event = PaymentEvent.objects.using(db).create(
                id=new_id("evt", now_ms=_ms(now)),
                payment=payment,
                type=str(event_type),
                detail=_text(decision.detail) or "",
                data=data,
                created_at=now,
            )
            # A snapshot: later transitions in this transaction must not show through.
            snapshot = copy.copy(payment)
            transaction.on_commit(
                functools.partial(send_event, snapshot, event), using=db, robust=True
            )

    def _transition(self, payment_id: str, event: LedgerInput) -> Payment:
        def work(db: str) -> Payment:
            current = self._lock_id(db, payment_id)
            decision, payment = self._apply(db, current, event)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            return payment

        return self._write(work)

    # -- intents --------------------------------------------------------------------------

    def create_intent(
        self, request: PaymentRequest, idempotency_key: str | None
    ) -> tuple[Payment, bool]:
        """Commit a payment intent (``created``), or return the one with this key.

        Raises:
            IdempotencyConflictError: the key is known with a different request.
        """
        db = self.db
        digest = request_hash(
            request.phone,
            request.amount,
            request.account_reference,
            request.description,
            request.metadata,
        )
        if idempotency_key is not None:
            existing = self._repeat(db, idempotency_key, digest)
            if existing is not None:
                return existing, False
        now = self.now()
        payment = Payment(
            id=new_id("pay", now_ms=_ms(now)),
            idempotency_key=idempotency_key,
            request_hash=digest,
            status=PaymentStatus.CREATED.value,
            phone=request.phone,
            amount=request.amount,
            account_reference=request.account_reference,
            description=request.description,
            metadata=request.metadata,
            created_at=now,
            updated_at=now,
        )
        try:
            with transaction.atomic(using=db, durable=True):
                payment.save(using=db, force_insert=True)
        except IntegrityError:
            # Lost a race with a concurrent request carrying the same key.
            if idempotency_key is None:
                raise
            existing = self._repeat(db, idempotency_key, digest)
            if existing is None:
                raise
            return existing, False
        log.info(
            "payment %s created for %s (%d KES)",
            payment.id,
            mask_phone(payment.phone),
            payment.amount,
        )
        return payment, True

    @staticmethod
    def _repeat(db: str, key: str, digest: str) -> Payment | None:
        existing = Payment.objects.using(db).filter(idempotency_key=key).first()
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise IdempotencyConflictError(key, existing.id)
        return existing

    # -- the push's answer ----------------------------------------------------------------

    def mark_accepted(
        self, payment_id: str, checkout_request_id: str, merchant: str | None
    ) -> Payment:
        """Daraja accepted the push; callbacks stored before this answer are applied now."""
        accepted = Accepted(checkout_request_id.strip(), merchant)

        def work(db: str) -> Payment:
            current = self._lock_id(db, payment_id)
            decision, payment = self._apply(db, current, accepted)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            if payment.checkout_request_id == accepted.checkout_request_id:
                payment = self._apply_early_callbacks(db, payment)
            return payment

        return self._write(work)

    def _apply_early_callbacks(self, db: str, payment: Payment) -> Payment:
        """Apply the callbacks stored as ``unknown_payment`` for the payment's id."""
        early = Callback.objects.using(db).filter(
            kind="stk",
            checkout_request_id=payment.checkout_request_id,
            outcome="unknown_payment",
        )
        for callback in early.order_by("received_at", "id"):
            try:
                parsed = parse_stk_callback_body(bytes(callback.body))
            except _PARSE_ERRORS as err:
                status, detail = "invalid", f"invalid STK callback: {err}"
            else:
                status, payment, detail = self._settle(db, payment, parsed, callback.id)
            Callback.objects.using(db).filter(id=callback.id).update(
                outcome=status,
                detail=_text(f"{detail} (arrived before the push's answer was recorded)"),
                payment_id=payment.id,
            )
            log.info(
                "callback %s arrived early for payment %s: %s", callback.id, payment.id, status
            )
        return payment

    def mark_rejected(self, payment_id: str, rejected: Rejected) -> Payment:
        """Daraja refused the push: ``created`` → ``rejected``."""
        return self._transition(payment_id, rejected)

    def mark_unknown(self, payment_id: str, unknown: OutcomeUnknown) -> Payment:
        """No answer to the push: ``created`` → ``unknown`` (a stored callback may name it)."""

        def work(db: str) -> Payment:
            current = self._lock_id(db, payment_id)
            decision, payment = self._apply(db, current, unknown)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            return self._adopt_stored_orphan(db, payment)

        return self._write(work)

    # -- callbacks ------------------------------------------------------------------------

    def ingest_stk_callback(self, body: bytes, *, source_ip: str | None) -> CallbackResult:
        """Store a raw STK callback and apply it, in one transaction.

        The raw body is always stored, even when it is malformed, names an id we never
        issued, or applying it fails (then as ``error``, and the exception is raised: no 200
        for what was not committed).
        """
        received = self.now()
        callback_id = new_id("cb", now_ms=_ms(received))
        try:
            parsed = parse_stk_callback_body(bytes(body))
        except _PARSE_ERRORS as err:
            detail = f"invalid STK callback: {err}"
            self._store_raw(callback_id, body, source_ip, received, "invalid", detail, None)
            log.warning("callback %s rejected: %s", callback_id, redact(detail))
            return CallbackResult(callback_id, "invalid", None, detail)
        cid = _storable_id(parsed.checkout_request_id)

        def work(db: str) -> CallbackResult:
            current = None if cid is None else self._lock(db, checkout_request_id=cid)
            payment: Payment | None
            if current is None:
                status, payment, detail = "unknown_payment", None, "no payment has this id"
                adopted = self._adopt_for_orphan(db, callback_id, parsed)
                if adopted is not None:
                    status, payment = "unverified", adopted
                    detail = (
                        "CheckoutRequestID learnt from this callback (unverified): "
                        "an STK query settles the payment"
                    )
            else:
                status, payment, detail = self._settle(db, current, parsed, callback_id)
            Callback.objects.using(db).create(
                id=callback_id,
                kind="stk",
                body=bytes(body),
                source_ip=_storable_id(source_ip, 64),
                received_at=received,
                outcome=status,
                detail=_text(detail),
                checkout_request_id=cid,
                payment=payment,
            )
            if status not in ("applied", "duplicate"):
                log.warning("callback %s: %s (%s)", callback_id, status, redact(detail))
            return CallbackResult(callback_id, status, payment, detail)

        try:
            return self._write(work)
        except Exception as err:
            # Never lose the raw body, even when applying it failed unexpectedly.
            self._store_raw(
                callback_id, body, source_ip, received, "error", type(err).__name__, cid
            )
            raise

    def store_refused_callback(self, body: bytes, *, source_ip: str | None, detail: str) -> str:
        """Keep raw a callback refused before it could be parsed (a body over the size cap,
        of which ``body`` is the start), as ``invalid`` evidence; nothing else changes."""
        received = self.now()
        callback_id = new_id("cb", now_ms=_ms(received))
        self._store_raw(callback_id, body, source_ip, received, "invalid", detail, None)
        return callback_id

    def _store_raw(
        self,
        callback_id: str,
        body: bytes,
        source_ip: str | None,
        received: datetime,
        outcome: str,
        detail: str,
        checkout_request_id: str | None,
    ) -> None:
        with transaction.atomic(using=self.db):
            Callback.objects.using(self.db).create(
                id=callback_id,
                kind="stk",
                body=bytes(body),
                source_ip=_storable_id(source_ip, 64),
                received_at=received,
                outcome=outcome,
                detail=_text(detail),
                checkout_request_id=checkout_request_id,
            )

    def _settle(
        self, db: str, current: Payment, parsed: ParsedStkCallback, callback_id: str
    ) -> tuple[str, Payment, str]:
        mismatch = merchant_request_mismatch(
            parsed.merchant_request_id, current.merchant_request_id
        )
        if mismatch is not None:
            return "invalid", current, mismatch
        decision, payment = self._apply(db, current, parsed.result, callback_id=callback_id)
        return callback_status(decision), payment, decision.detail

    def _adopt_for_orphan(
        self, db: str, callback_id: str, parsed: ParsedStkCallback
    ) -> Payment | None:
        """Find the one ``unknown`` payment without an id that this success fits, and adopt."""
        result = parsed.result
        amount = result.amount
        if not result.is_success or amount is None or result.phone is None:
            return None
        if Decimal(amount) != int(amount) or not 1 <= amount <= 10**12:
            return None  # no payment was ever asked for such an amount
        query = Payment.objects.using(db).select_for_update()
        query = query.filter(
            status=PaymentStatus.UNKNOWN.value,
            checkout_request_id__isnull=True,
            amount=int(amount),
        )
        with contextlib.suppress(ValidationError):
            # A full number narrows the search in the database; a masked one cannot.
            query = query.filter(phone=normalize_msisdn(result.phone))
        candidates = [
            p
            for p in query.order_by("created_at")[:_MAX_PAGE]
            if orphan_matches(payment_state(p), result)
        ]
        if len(candidates) != 1:
            if candidates:
                log.warning(
                    "callback %s fits %d unknown payments; not adopted",
                    callback_id,
                    len(candidates),
                )
            return None
        event = IdFromCallback(parsed.checkout_request_id, parsed.merchant_request_id)
        decision, adopted = self._apply(db, candidates[0], event, callback_id=callback_id)
        if not decision.writes:  # pragma: no cover - orphan_matches admits only adoptable ones
            return None
        log.warning(
            "payment %s: its push answer was lost; callback %s named its CheckoutRequestID "
            "(unverified), to be settled by query",
            adopted.id,
            callback_id,
        )
        return adopted

    def _adopt_stored_orphan(self, db: str, payment: Payment) -> Payment:
        """Adopt the id of the one stored orphan success fitting ``payment``."""
        if payment.status != PaymentStatus.UNKNOWN or payment.checkout_request_id is not None:
            return payment
        state = payment_state(payment)
        rows = (
            Callback.objects.using(db)
            .filter(
                kind="stk",
                outcome="unknown_payment",
                received_at__gte=payment.created_at,
                checkout_request_id__isnull=False,
            )
            .order_by("received_at", "id")
            .values_list("id", "body", "checkout_request_id")[:_MAX_ORPHAN_SCAN]
        )
        parsed_by_id: dict[str, tuple[str, ParsedStkCallback]] = {}
        for callback_id, body, cid in rows:
            try:
                parsed = parse_stk_callback_body(bytes(body))
            except _PARSE_ERRORS:
                continue
            if orphan_matches(state, parsed.result):
                parsed_by_id[callback_id] = (cid, parsed)
        if not parsed_by_id:
            return payment
        ids = list({cid for cid, _ in parsed_by_id.values()})
        taken = Payment.objects.using(db).filter(checkout_request_id__in=ids)
        chosen = single_orphan(
            state,
            [(key, cid, p.result) for key, (cid, p) in parsed_by_id.items()],
            taken.values_list("checkout_request_id", flat=True),
        )
        if chosen is None:
            log.warning(
                "payment %s fits stored callbacks with %d different ids; none adopted",
                payment.id,
                len(ids),
            )
            return payment
        callback_id, _ = chosen
        parsed = parsed_by_id[callback_id][1]
        event = IdFromCallback(parsed.checkout_request_id, parsed.merchant_request_id)
        decision, adopted = self._apply(db, payment, event, callback_id=callback_id)
        if not decision.writes:  # pragma: no cover - single_orphan admits only adoptable ones
            return payment
        Callback.objects.using(db).filter(id=callback_id).update(
            outcome="unverified", detail=_text(decision.detail), payment_id=payment.id
        )
        log.warning(
            "payment %s: its push answer was lost; callback %s named its CheckoutRequestID "
            "(unverified), to be settled by query",
            payment.id,
            callback_id,
        )
        return adopted

    # -- queries and reconciliation ------------------------------------------------------

    def apply_query_result(self, checkout_request_id: str, result: StkResult) -> QueryApplied:
        """Apply an STK query's final answer (Daraja's authoritative word)."""

        def work(db: str) -> QueryApplied:
            current = self._lock(db, checkout_request_id=checkout_request_id)
            if current is None:
                return QueryApplied("unknown_payment", None, "no payment has this id")
            decision, payment = self._apply(db, current, result)
            return QueryApplied(callback_status(decision), payment, decision.detail)

        return self._write(work)

    def record_stk_query(
        self,
        payment: Payment,
        outcome: str,
        *,
        asked_at: datetime,
        worker: str,
        result_code: str | None = None,
        result_desc: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Log one STK query and Daraja's answer (never costs the answer if it fails)."""
        now = self.now()
        try:
            with transaction.atomic(using=self.db):
                StkQuery.objects.using(self.db).create(
                    id=new_id("qry", now_ms=_ms(now)),
                    payment_id=payment.id,
                    checkout_request_id=payment.checkout_request_id or "",
                    asked_at=asked_at,
                    answered_at=now,
                    worker=worker[:100],
                    outcome=outcome,
                    result_code=None if result_code is None else result_code[:32],
                    result_desc=_text(None if result_desc is None else redact(result_desc)),
                    detail=_text(None if detail is None else redact(detail)),
                )
        except Exception:
            log.exception("could not log the STK query of payment %s", payment.id)

    def claim_for_reconciliation(
        self, *, limit: int, min_age: timedelta, lease: timedelta
    ) -> list[Payment]:
        """Claim payments due for an STK query (as ``Ledger.claim_for_reconciliation``).

        On PostgreSQL the rows are locked with ``FOR UPDATE SKIP LOCKED`` and leased, so
        concurrent ``pesa_reconcile`` processes never claim the same payment.
        """
        now = self.now()
        free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
        routine = Q(status__in=_RECONCILABLE, created_at__lte=now - min_age) & (
            Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)
        )
        verification = Q(verify_at__lte=now)

        def work(db: str) -> list[Payment]:
            ids: list[str] = []
            for due, order in (
                (verification, (F("verify_at").asc(),)),
                (routine, (F("next_check_at").asc(nulls_first=True), F("created_at").asc())),
            ):
                if len(ids) >= limit:
                    break
                query = (
                    Payment.objects.using(db)
                    .select_for_update(skip_locked=True)
                    .filter(due, free)
                    .exclude(id__in=ids)
                    .order_by(*order)
                    .values_list("id", flat=True)
                )
                ids.extend(query[: limit - len(ids)])
            if not ids:
                return []
            Payment.objects.using(db).filter(id__in=ids).update(
                claimed_until=now + lease, check_count=F("check_count") + 1
            )
            claimed = {p.id: p for p in Payment.objects.using(db).filter(id__in=ids)}
            return [claimed[i] for i in ids if i in claimed]

        return self._write(work)

    def record_still_pending(self, payment_id: str, next_check_at: datetime) -> None:
        """No final answer yet: release the claim and schedule the next check (no event)."""
        with transaction.atomic(using=self.db):
            Payment.objects.using(self.db).filter(
                Q(status__in=_RECONCILABLE) | Q(verify_at__isnull=False), id=payment_id
            ).update(
                next_check_at=next_check_at,
                claimed_until=None,
                verify_at=Case(When(verify_at__isnull=True, then=None), default=next_check_at),
            )

    def recover_stale_created(self, older_than: timedelta) -> list[Payment]:
        """Move intents stuck in ``created`` (the process died around the push) to ``unknown``."""
        cutoff = self.now() - older_than
        unknown = OutcomeUnknown(
            "the STK push's outcome was never recorded (process stopped during the send)"
        )

        def work(db: str) -> list[Payment]:
            stale = (
                Payment.objects.using(db)
                .select_for_update(skip_locked=True)
                .filter(status=PaymentStatus.CREATED.value, created_at__lte=cutoff)
            )
            moved = []
            for current in stale:
                decision, payment = self._apply(db, current, unknown)
                if decision.applied:
                    moved.append(self._adopt_stored_orphan(db, payment))
            return moved

        return self._write(work)

    def adopt_orphan_callbacks(self, payment_id: str) -> Payment:
        """Give an ``unknown`` payment without an id the id of the one stored success that fits."""
        return self._write(lambda db: self._adopt_stored_orphan(db, self._lock_id(db, payment_id)))

    def drop_unverified_id(self, payment_id: str, detail: str = "") -> Payment:
        """Daraja refused a query by an id learnt from a callback: forget that id."""

        def work(db: str) -> Payment:
            current = self._lock_id(db, payment_id)
            dropped = current.checkout_request_id
            decision, payment = self._apply(db, current, IdUnknownToDaraja(detail))
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payment_id, current.status, decision.detail)
            Callback.objects.using(db).filter(
                kind="stk",
                checkout_request_id=dropped,
                outcome__in=["unverified", "unknown_payment"],
            ).update(outcome="invalid", detail="Daraja does not know this CheckoutRequestID")
            return self._adopt_stored_orphan(db, payment)

        return self._write(work)

    def expire(self, payment_id: str) -> Payment:
        """No final answer before the deadline: failed (expired), flagged if maybe paid."""
        return self._transition(payment_id, Expired())

    def resolve_flag(self, payment_id: str, *, by: str, note: str) -> Payment:
        """A person looked at a flagged payment: clear the flag (``payment.flag_resolved``).

        Raises:
            InvalidTransitionError: the payment is not flagged.
        """
        return self._transition(payment_id, FlagResolved(note=note, by=by))

    def abandon_verification(self, payment_id: str) -> Payment:
        """Stop asking Daraja about a payment's evidence (its window passed): flag it."""
        return self._transition(payment_id, Unverifiable())

    def get(self, payment_id: str) -> Payment | None:
        """The payment with this id, fresh from the database."""
        return Payment.objects.using(self.db).filter(id=payment_id).first()
