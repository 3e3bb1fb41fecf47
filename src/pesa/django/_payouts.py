"""B2C payouts over the Django models: the ledger's transfer rules, one transaction each.

The same discipline as payments (:mod:`pesa.django._store`): every transition reads the
payout (``SELECT ... FOR UPDATE`` on PostgreSQL), asks the pure state machine
(:func:`pesa.ledger.decide_transfer`), updates the row guarded by its ``version`` and
writes its events, whose signals are sent after the commit. Every Result is stored raw in
:class:`~pesa.django.models.Callback` in the transaction that applies it.

What a Result may do is the ledger's rule: it is evidence, matched by the ids Daraja gave
our request; a success settles the payout only when it names the ConversationID of
Daraja's answer, carries a receipt and the amount sent. Transaction Status (asked by
``pesa_reconcile``) settles what a Result cannot prove, and a lost Result. Its answer is
matched by the ConversationID Daraja gave *the query*, which nobody else has seen.

This app never re-sends a payout on its own: a payout whose outcome stays unknown until
``PESA_PAYOUT_DEADLINE`` is flagged for a person, never failed (paying twice is the failure
that costs money).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, OperationalError, router, transaction
from django.db.models import Case, F, Q, When

from pesa._exceptions import InvalidCallbackError
from pesa._logging import get_logger, mask_phone, redact
from pesa.django.models import Callback, Payout, PayoutEvent, TransactionStatusQuery
from pesa.django.signals import send_payout_event
from pesa.ledger import (
    DecisionKind,
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerConflictError,
    PayoutRequest,
    PayoutSpec,
    TransferAccepted,
    TransferDecision,
    TransferExpired,
    TransferInput,
    TransferNotFound,
    TransferNotFoundError,
    TransferOutcomeUnknown,
    TransferRefused,
    TransferResult,
    TransferState,
    TransferStatus,
    TransferTimedOut,
    decide_transfer,
    initiator_code,
    parse_payout_result,
    parse_status_result,
    storable_key,
    storable_text,
    transfer_outcome,
)
from pesa.ledger._ids import new_id
from pesa.ledger._results import ParsedResult, parse_timeout
from pesa.ledger._transfer_types import payout_hash

__all__ = ["PayoutResult", "PayoutStore"]

log = get_logger("pesa.django.payouts")

_T = TypeVar("_T")
_MAX_RETRIES = 5
_MAX_TEXT = 1000
_PARSE_ERRORS = (InvalidCallbackError, ValueError, TypeError, KeyError)
_OPEN = [TransferStatus.PENDING.value, TransferStatus.UNKNOWN.value]
_ACCOUNT = "default"


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _text(value: str | None) -> str | None:
    return None if value is None else storable_text(value, _MAX_TEXT)


class _VersionConflict(Exception):
    """The payout changed between our read and our guarded update: retry."""


@dataclass(frozen=True, slots=True)
class PayoutResult:
    """What storing and applying one Result (or status answer) did.

    Attributes:
        callback_id: the stored raw body (``cb_...``).
        status: ``applied``, ``unverified`` (kept as evidence, settled by Transaction
            Status), ``duplicate``, ``ignored``, ``unknown_payment`` (names nothing we sent)
            or ``invalid``.
        payout: the payout it concerns, as left by the transaction (``None`` if none).
        detail: why.
    """

    callback_id: str
    status: str
    payout: Payout | None
    detail: str


def spec_of(request: PayoutRequest, shortcode: str) -> PayoutSpec:
    """The ledger's view of a validated payout (the app has one account: ``default``)."""
    return PayoutSpec(
        phone=request.phone,
        amount=request.amount,
        command_id=request.command,
        remarks=request.remarks,
        occasion=request.occasion,
        account=_ACCOUNT,
        shortcode=shortcode,
        metadata=request.metadata,
    )


class PayoutStore:
    """Payouts in the project's database: the transitions of ``ledger.payouts``."""

    @property
    def db(self) -> str:
        """The database alias the project's routers pick for writing pesa's models."""
        return router.db_for_write(Payout)

    # -- transactions -----------------------------------------------------------------------

    def _write(self, work: Callable[[str], _T]) -> _T:
        db = self.db
        for attempt in range(_MAX_RETRIES):
            try:
                with transaction.atomic(using=db):
                    return work(db)
            except _VersionConflict:
                log.debug("version conflict, retrying (attempt %d)", attempt + 1)
            except OperationalError as err:
                if "database is locked" not in str(err) or attempt == _MAX_RETRIES - 1:
                    raise
        raise LedgerConflictError("payout kept changing under a guarded update; gave up")

    @staticmethod
    def _lock(db: str, **where: object) -> Payout | None:
        return Payout.objects.using(db).select_for_update().filter(**where).first()

    def _state(self, db: str, payout: Payout) -> TransferState:
        evidence: TransferResult | None = None
        if payout.evidence_callback_id is not None:
            body = (
                Callback.objects.using(db)
                .filter(id=payout.evidence_callback_id)
                .values_list("body", flat=True)
                .first()
            )
            if body is not None:
                try:
                    evidence = parse_payout_result(bytes(body)).result
                except _PARSE_ERRORS:  # pragma: no cover - only parsed Results become evidence
                    evidence = None
        return TransferState(
            status=TransferStatus(payout.status),
            amount=payout.amount,
            attempts=payout.attempts,
            originator_conversation_id=payout.originator_conversation_id,
            conversation_id=payout.conversation_id,
            ids_verified=payout.ids_verified,
            receipt=payout.receipt,
            result_code=payout.result_code,
            flagged=payout.flagged,
            flag_reason=payout.flag_reason,
            evidence=evidence,
            evidence_id=payout.evidence_callback_id if evidence is not None else None,
            verifying=payout.verify_at is not None,
            expired=payout.expired_at is not None,
            phone=payout.phone,
        )

    def _apply(
        self,
        db: str,
        current: Payout,
        event: TransferInput,
        *,
        callback_id: str | None = None,
    ) -> tuple[TransferDecision, Payout]:
        """Decide and, if the row changes, write it and its events (inside a transaction)."""
        # A payout is never re-sent by this app: see the module docstring.
        decision = decide_transfer(
            self._state(db, current), event, kind="payout", lookup=initiator_code, resend=False
        )
        if not decision.writes:
            return decision, current
        now = _now()
        changes: dict[str, Any] = dict(decision.changes)
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
        if isinstance(event, TransferExpired) and decision.kind is DecisionKind.APPLIED:
            changes["expired_at"] = now
        if isinstance(changes.get("completed_at"), datetime):
            changes["completed_at"] = changes["completed_at"].astimezone(UTC)
        for name in ("failure_reason", "flag_reason", "result_desc"):
            if isinstance(changes.get(name), str):
                changes[name] = _text(changes[name])
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        updated = (
            Payout.objects.using(db)
            .filter(id=current.id, version=current.version)
            .update(**changes)
        )
        if updated != 1:
            raise _VersionConflict
        before = current.status
        for name, value in changes.items():
            setattr(current, name, value)
        self._events(db, current, decision, now)
        log.info("payout %s: %s -> %s (%s)", current.id, before, current.status, decision.detail)
        return decision, current

    def _events(self, db: str, payout: Payout, decision: TransferDecision, now: datetime) -> None:
        if not decision.events:
            return
        data = payout.to_dict()
        for event_type in decision.events:
            event = PayoutEvent.objects.using(db).create(
                id=new_id("evt", now_ms=_ms(now)),
                payout=payout,
                type=f"payout.{event_type}",
                detail=_text(decision.detail) or "",
                data=data,
                created_at=now,
            )
            snapshot = copy.copy(payout)
            transaction.on_commit(
                functools.partial(send_payout_event, snapshot, event), using=db, robust=True
            )

    def _transition(
        self,
        payout_id: str,
        event: TransferInput,
        after: Callable[[str, Payout], Payout] | None = None,
    ) -> Payout:
        def work(db: str) -> Payout:
            current = self._lock(db, id=payout_id)
            if current is None:
                raise TransferNotFoundError(payout_id)
            decision, payout = self._apply(db, current, event)
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(payout_id, current.status, decision.detail)
            return payout if after is None else after(db, payout)

        return self._write(work)

    # -- intents ----------------------------------------------------------------------------

    def create(self, spec: PayoutSpec, idempotency_key: str | None) -> tuple[Payout, bool]:
        """Commit a payout intent (``created``, its one attempt counted) before any send,
        or return the payout with this key.

        Raises:
            IdempotencyConflictError: the key is known with other parameters.
        """
        db = self.db
        digest = payout_hash(spec)
        if idempotency_key is not None:
            existing = self._repeat(db, idempotency_key, digest)
            if existing is not None:
                return existing, False
        now = _now()
        payout_id = new_id("po", now_ms=_ms(now))
        payout = Payout(
            id=payout_id,
            idempotency_key=idempotency_key,
            request_hash=digest,
            status=TransferStatus.CREATED.value,
            phone=spec.phone,
            amount=spec.amount,
            command_id=spec.command_id,
            remarks=spec.remarks,
            occasion=spec.occasion,
            shortcode=spec.shortcode,
            metadata=spec.metadata,
            # Ours and stable: Daraja refuses a copy of this request as a duplicate.
            originator_conversation_id=payout_id,
            attempts=1,
            # Its one send is counted here, in the transaction that commits it.
            first_sent_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            with transaction.atomic(using=db, durable=True):
                payout.save(using=db, force_insert=True)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self._repeat(db, idempotency_key, digest)
            if existing is None:
                raise
            return existing, False
        log.info(
            "payout %s created for %s (%d KES)", payout.id, mask_phone(spec.phone), spec.amount
        )
        return payout, True

    @staticmethod
    def _repeat(db: str, key: str, digest: str) -> Payout | None:
        existing = Payout.objects.using(db).filter(idempotency_key=key).first()
        if existing is None:
            return None
        if existing.request_hash != digest:
            raise IdempotencyConflictError(key, existing.id)
        return existing

    # -- the request's answer ---------------------------------------------------------------

    def mark_accepted(
        self, payout_id: str, conversation_id: str, originator_conversation_id: str | None
    ) -> Payout:
        """Daraja accepted the request; a Result kept before this answer is judged now."""
        event = TransferAccepted(conversation_id.strip(), originator_conversation_id)
        return self._transition(payout_id, event, after=self._apply_evidence)

    def _apply_evidence(self, db: str, payout: Payout) -> Payout:
        evidence_id = payout.evidence_callback_id
        if evidence_id is None or payout.status != TransferStatus.PENDING:
            return payout
        body = Callback.objects.using(db).filter(id=evidence_id).values_list("body", flat=True)
        row = body.first()
        if row is None:  # pragma: no cover - evidence rows are never deleted
            return payout
        parsed = parse_payout_result(bytes(row))
        if parsed.result.conversation_id != payout.conversation_id:
            return payout
        # Clear the evidence so the Result is judged afresh, now that its id can be checked.
        now = _now()
        cleared = Payout.objects.using(db).filter(id=payout.id, version=payout.version)
        if cleared.update(evidence_callback_id=None, version=payout.version + 1, updated_at=now):
            payout.evidence_callback_id = None
            payout.version += 1
        else:  # pragma: no cover - the row is locked
            raise _VersionConflict
        decision, applied = self._apply(db, payout, parsed.result, callback_id=evidence_id)
        Callback.objects.using(db).filter(id=evidence_id).update(
            outcome=transfer_outcome(decision),
            detail=_text(f"{decision.detail} (arrived before Daraja's answer was recorded)"),
        )
        return applied

    def mark_refused(
        self, payout_id: str, code: str | None, message: str, *, duplicate: bool = False
    ) -> Payout:
        """Daraja refused the request (``duplicate``: it names an earlier send)."""
        event = TransferRefused(code, redact(message)[:_MAX_TEXT], duplicate)
        return self._transition(payout_id, event)

    def mark_unknown(self, payout_id: str, reason: str) -> Payout:
        """The request may have left, but no usable answer came: Transaction Status settles."""
        return self._transition(payout_id, TransferOutcomeUnknown(redact(reason)[:_MAX_TEXT]))

    def expire(self, payout_id: str) -> Payout:
        """No final answer by the deadline: flagged for a person, no longer checked."""
        return self._transition(payout_id, TransferExpired())

    # -- Results ----------------------------------------------------------------------------

    def _ingest(
        self,
        body: bytes,
        source_ip: str | None,
        kind: str,
        apply: Callable[[str, bytes, str], tuple[str, Payout | None, str, str | None]],
    ) -> PayoutResult:
        received = _now()
        callback_id = new_id("cb", now_ms=_ms(received))

        def work(db: str) -> PayoutResult:
            try:
                status, payout, detail, named = apply(db, bytes(body), callback_id)
            except _PARSE_ERRORS as err:
                status, payout, detail, named = "invalid", None, f"invalid {kind}: {err}", None
            Callback.objects.using(db).create(
                id=callback_id,
                kind=kind,
                body=bytes(body),
                source_ip=source_ip if storable_key(source_ip, 64) else None,
                received_at=received,
                outcome=status,
                detail=_text(detail),
                checkout_request_id=named if storable_key(named, 128) else None,
                payout=payout,
            )
            return PayoutResult(callback_id, status, payout, detail)

        try:
            result = self._write(work)
        except Exception as err:
            # Never lose the raw body, even when applying it failed unexpectedly.
            with transaction.atomic(using=self.db):
                Callback.objects.using(self.db).create(
                    id=callback_id,
                    kind=kind,
                    body=bytes(body),
                    source_ip=source_ip if storable_key(source_ip, 64) else None,
                    received_at=received,
                    outcome="error",
                    detail=type(err).__name__,
                )
            raise
        if result.status not in ("applied", "duplicate", "ignored"):
            log.warning("%s %s: %s (%s)", kind, callback_id, result.status, redact(result.detail))
        return result

    def ingest_result(self, body: bytes, *, source_ip: str | None) -> PayoutResult:
        """Store a raw B2C ``Result`` and apply it to the payout it names, in one transaction.

        Found by its OriginatorConversationID (ours: it finds the payout even when Daraja's
        answer, and so the ConversationID, was lost), else by its ConversationID.
        """

        def apply(
            db: str, raw: bytes, callback_id: str
        ) -> tuple[str, Payout | None, str, str | None]:
            parsed = parse_payout_result(raw)
            named = parsed.originator_conversation_id or parsed.conversation_id
            current = self._find(db, parsed)
            if current is None:
                return "unknown_payment", None, "no payout has these ids", named
            decision, payout = self._apply(db, current, parsed.result, callback_id=callback_id)
            return transfer_outcome(decision), payout, decision.detail, named

        return self._ingest(body, source_ip, "b2c_result", apply)

    def _find(self, db: str, parsed: ParsedResult) -> Payout | None:
        if parsed.originator_conversation_id is not None:
            found = self._lock(db, originator_conversation_id=parsed.originator_conversation_id)
            if found is not None:
                return found
        if parsed.conversation_id is not None:
            return self._lock(db, conversation_id=parsed.conversation_id)
        return None

    def ingest_timeout(self, body: bytes, *, source_ip: str | None) -> PayoutResult:
        """Store a QueueTimeOutURL call: the payout becomes ``unknown`` (settled by status)."""

        def apply(
            db: str, raw: bytes, callback_id: str
        ) -> tuple[str, Payout | None, str, str | None]:
            del callback_id
            conversation, originator = parse_timeout(raw)
            current = None
            if conversation is not None:
                current = self._lock(db, conversation_id=conversation)
            if current is None and originator is not None:
                current = self._lock(db, originator_conversation_id=originator)
            named = originator or conversation
            if current is None:
                return "unknown_payment", None, "no payout has these ids", named
            decision, payout = self._apply(db, current, TransferTimedOut())
            return transfer_outcome(decision), payout, decision.detail, named

        return self._ingest(body, source_ip, "b2c_timeout", apply)

    # -- Transaction Status -----------------------------------------------------------------

    def record_query(
        self,
        payout: Payout,
        outcome: str,
        *,
        asked_at: datetime,
        worker: str,
        conversation_id: str | None = None,
        originator_conversation_id: str | None = None,
        result_code: str | None = None,
        detail: str | None = None,
    ) -> TransactionStatusQuery:
        """Log one Transaction Status query (``sent`` with the ids Daraja gave it, or why
        not). An answer that already arrived for these ids is applied in the same
        transaction."""

        def work(db: str) -> TransactionStatusQuery:
            query = TransactionStatusQuery.objects.using(db).create(
                id=new_id("tsq", now_ms=_ms(asked_at)),
                payout_id=payout.id,
                by_originator_id=payout.originator_conversation_id,
                conversation_id=conversation_id,
                originator_conversation_id=originator_conversation_id,
                asked_at=asked_at,
                worker=worker[:100],
                outcome=outcome,
                result_code=None if result_code is None else result_code[:32],
                detail=_text(None if detail is None else redact(detail)),
            )
            if conversation_id is not None and outcome == "sent":
                self._apply_early_answers(db, conversation_id)
            return query

        return self._write(work)

    def _apply_early_answers(self, db: str, conversation_id: str) -> None:
        early = Callback.objects.using(db).filter(
            kind__in=["status_result", "status_timeout"],
            outcome="unknown_payment",
            checkout_request_id=conversation_id,
        )
        for callback in early.order_by("received_at", "id"):
            status, payout, detail = self._apply_answer(
                db, bytes(callback.body), callback.kind == "status_timeout", callback.received_at
            )
            Callback.objects.using(db).filter(id=callback.id).update(
                outcome=status,
                detail=_text(f"{detail} (arrived before the query's answer was recorded)"),
                payout=payout,
            )

    def ingest_status_result(self, body: bytes, *, source_ip: str | None) -> PayoutResult:
        """Store a Transaction Status Result and apply it to the payout its query was about.

        Matched by the query's ConversationID; a repeat of an answered query changes nothing.
        """
        return self._ingest_status(body, source_ip, timeout=False)

    def ingest_status_timeout(self, body: bytes, *, source_ip: str | None) -> PayoutResult:
        """A status query timed out in Daraja's queue: the next check asks again."""
        return self._ingest_status(body, source_ip, timeout=True)

    def _ingest_status(self, body: bytes, source_ip: str | None, *, timeout: bool) -> PayoutResult:
        kind = "status_timeout" if timeout else "status_result"
        received = _now()

        def apply(
            db: str, raw: bytes, callback_id: str
        ) -> tuple[str, Payout | None, str, str | None]:
            del callback_id
            if timeout:
                conversation, _ = parse_timeout(raw)
            else:
                conversation = parse_status_result(raw).conversation_id
            status, payout, detail = self._apply_answer(db, raw, timeout, received)
            return status, payout, detail, conversation

        return self._ingest(body, source_ip, kind, apply)

    def _apply_answer(
        self, db: str, raw: bytes, timeout: bool, received: datetime
    ) -> tuple[str, Payout | None, str]:
        parsed: ParsedResult | None
        if timeout:
            conversation, originator = parse_timeout(raw)
            parsed = None
        else:
            parsed = parse_status_result(raw)
            conversation, originator = parsed.conversation_id, parsed.originator_conversation_id
        query = None
        if conversation is not None:
            query = (
                TransactionStatusQuery.objects.using(db)
                .select_for_update()
                .filter(conversation_id=conversation)
                .first()
            )
        if query is None:
            return "unknown_payment", None, "no status query has this ConversationID"
        if (
            originator is not None
            and query.originator_conversation_id is not None
            and originator != query.originator_conversation_id
        ):
            return "invalid", None, "its OriginatorConversationID is not the query's"
        payout = self._lock(db, id=query.payout_id)
        if payout is None:  # pragma: no cover - payouts are never deleted
            return "unknown_payment", None, "the status query's payout is gone"
        if query.outcome != "sent":
            return "duplicate", payout, f"status query {query.id} was already {query.outcome}"
        query.answered_at = received
        if parsed is None:
            query.outcome = "timed_out"
            query.detail = "the status query timed out in the queue"
            query.save(using=db, update_fields=["answered_at", "outcome", "detail"])
            return "ignored", payout, "status query timed out: the next check asks again"
        code = parsed.envelope.result_code
        query.outcome = "answered"
        query.result_code = code[:32]
        query.result_desc = _text(redact(parsed.envelope.result_desc or ""))
        event: TransferInput | None
        if code == "2032":
            event = TransferNotFound()
        elif code == "0":
            event = parsed.result
        else:
            event = None
        if event is None:
            query.detail = f"no answer about the transaction (result code {code})"
            status, detail = "ignored", query.detail
        else:
            decision, payout = self._apply(db, payout, event)
            status, detail = transfer_outcome(decision), decision.detail
            query.detail = _text(detail)
        query.save(
            using=db,
            update_fields=["answered_at", "outcome", "result_code", "result_desc", "detail"],
        )
        return status, payout, detail

    # -- checks (pesa_reconcile) ------------------------------------------------------------

    def claim_for_checks(self, *, limit: int, min_age: timedelta, lease: timedelta) -> list[Payout]:
        """Claim payouts due for a Transaction Status query (``FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, plus a lease): pending or unknown ones ``min_age`` old whose next check
        is due and that have not expired, and those whose evidence awaits verification."""
        now = _now()
        free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
        routine = Q(status__in=_OPEN, created_at__lte=now - min_age, expired_at__isnull=True) & (
            Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)
        )
        verification = Q(verify_at__lte=now)

        def work(db: str) -> list[Payout]:
            ids: list[str] = []
            for due, order in (
                (verification, (F("verify_at").asc(),)),
                (routine, (F("next_check_at").asc(nulls_first=True), F("created_at").asc())),
            ):
                if len(ids) >= limit:
                    break
                query = (
                    Payout.objects.using(db)
                    .select_for_update(skip_locked=True)
                    .filter(due, free)
                    .exclude(id__in=ids)
                    .order_by(*order)
                    .values_list("id", flat=True)
                )
                ids.extend(query[: limit - len(ids)])
            if not ids:
                return []
            Payout.objects.using(db).filter(id__in=ids).update(
                claimed_until=now + lease, check_count=F("check_count") + 1
            )
            claimed = {p.id: p for p in Payout.objects.using(db).filter(id__in=ids)}
            return [claimed[i] for i in ids if i in claimed]

        return self._write(work)

    def record_check(self, payout_id: str, next_check_at: datetime) -> None:
        """Release the claim and schedule the next check (and verification, if asked)."""
        with transaction.atomic(using=self.db):
            Payout.objects.using(self.db).filter(id=payout_id).update(
                next_check_at=next_check_at,
                claimed_until=None,
                verify_at=Case(When(verify_at__isnull=True, then=None), default=next_check_at),
            )

    def recover_stale_created(self, older_than: timedelta) -> list[Payout]:
        """Payouts stuck in ``created`` (the process died around the send): ``unknown``."""
        cutoff = _now() - older_than
        unknown = TransferOutcomeUnknown(
            "the B2C request's outcome was never recorded (process stopped during the send)"
        )

        def work(db: str) -> list[Payout]:
            stale = (
                Payout.objects.using(db)
                .select_for_update(skip_locked=True)
                .filter(status=TransferStatus.CREATED.value, created_at__lte=cutoff)
            )
            moved = []
            for current in stale:
                decision, payout = self._apply(db, current, unknown)
                if decision.kind is DecisionKind.APPLIED:
                    moved.append(payout)
            return moved

        return self._write(work)

    def latest_query(self, payout_id: str) -> TransactionStatusQuery | None:
        """The last Transaction Status query about a payout."""
        return (
            TransactionStatusQuery.objects.using(self.db)
            .filter(payout_id=payout_id)
            .order_by("-seq")
            .first()
        )

    def get(self, payout_id: str) -> Payout | None:
        """The payout with this id, fresh from the database."""
        return Payout.objects.using(self.db).filter(id=payout_id).first()
