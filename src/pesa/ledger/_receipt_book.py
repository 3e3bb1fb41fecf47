"""Storage of C2B receipts, expected payments and their Transaction Status queries.

:class:`ReceiptBook` is the receipts half of the ledger (``ledger.receipts``): it shares the
ledger's engine, clock, outbox and raw-callback table, and applies the pure rules of
:mod:`pesa.ledger._receipts` the way the payments half applies :mod:`pesa.ledger._states`:
each input is one transaction that reads the rows it changes (``FOR UPDATE`` on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), asks the state machine, updates the rows guarded by their
``version`` and writes the events (and their webhook deliveries) with them.

- A confirmation is stored raw first and applied in the same transaction, exactly once by
  its ``TransID`` (a unique key: two copies racing each other end as one receipt and one
  duplicate). Daraja's acknowledgement is sent after the commit.
- A Transaction Status query is committed (with the hash of its ResultURL's one-time
  secret) before it is sent; its result is applied once, to the receipt of its ``TransID``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from sqlalchemy import Row, and_, false, func, insert, literal, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import Insert

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa._logging import get_logger, redact
from pesa.daraja import normalize_msisdn, parse_result
from pesa.ledger._confirmations import parse_confirmation, payer_facts, phone_hashes
from pesa.ledger._driving import storable_key as _storable_key
from pesa.ledger._driving import storable_text as _storable_text
from pesa.ledger._errors import (
    ExpectedPaymentNotFoundError,
    IdempotencyConflictError,
    InvalidTransitionError,
    LedgerConflictError,
    LedgerError,
    ReceiptNotFoundError,
)
from pesa.ledger._ids import new_id
from pesa.ledger._ledger import _check_key, _check_time
from pesa.ledger._receipt_types import (
    ExpectedPayment,
    LookupOutcome,
    Receipt,
    ReceiptAccount,
    ReceiptOutcome,
    ReceiptOutcomeStatus,
    ReceiptQuery,
    ReceiptQueryOutcome,
)
from pesa.ledger._receipts import (
    Cancel,
    Confirmation,
    ExpectedDecision,
    ExpectedState,
    ExpectedStatus,
    MatchCandidate,
    Pulled,
    ReceiptDecision,
    ReceiptEvent,
    ReceiptInput,
    ReceiptState,
    ReceiptStatus,
    StatusAnswer,
    Tally,
    VerificationAbandoned,
    VerifyPolicy,
    choose_expected,
    counts,
    decide_expected,
    decide_receipt,
    new_receipt,
    receipt_outcome,
    reference_key,
)
from pesa.ledger._schema import callbacks, expected_payments, receipt_queries, receipts
from pesa.ledger._states import DecisionKind
from pesa.ledger._types import Page, StoredCallback

if TYPE_CHECKING:
    from pesa.ledger._ledger import Ledger

__all__ = [
    "ReceiptBook",
    "nonce_hash",
    "payer_facts",
    "phone_hashes",
    "status_answer",
]

log = get_logger("pesa.ledger.receipts")

_T = TypeVar("_T")
_MAX_RETRIES = 5
_MAX_PAGE = 500
_MAX_ERROR_TEXT = 1000
# Unlinked receipts an expected payment takes when it is created (a bounded scan).
_MAX_EARLY_RECEIPTS = 100
# A lookup asked this recently is answered with the same query (no second one to Daraja).
_LOOKUP_REUSE = timedelta(seconds=60)
_TRANS_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_ANSWERED: frozenset[str] = frozenset({"confirmed", "refuted", "not_found", "failed"})
_CLAIMABLE = (ReceiptStatus.RECEIVED.value,)


class _VersionConflict(Exception):
    """A row changed between our read and our guarded update: retry the transaction."""


def nonce_hash(nonce: str) -> str:
    """The SHA-256 (hex) under which a query's one-time ResultURL secret is stored."""
    return hashlib.sha256(nonce.encode("utf-8")).hexdigest()


def _debit_party(text: str | None) -> tuple[str | None, str | None]:
    """``"254708374149 - John Doe"`` → (``"254708374149"``, ``"John Doe"``)."""
    if not text:
        return None, None
    number, _, name = text.partition(" - ")
    try:
        phone: str | None = normalize_msisdn(number.strip())
    except ValidationError:
        return None, text.strip()[:255] or None
    return phone, name.strip()[:255] or None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def status_answer(body: bytes) -> tuple[StatusAnswer, str | None]:
    """Parse a Transaction Status ``{"Result": ...}`` body into a :class:`StatusAnswer`.

    Returns:
        The answer and the Result's ``ConversationID``.

    Raises:
        InvalidCallbackError: not a Result.
    """
    envelope = parse_result(body)
    params = envelope.parameters
    finalised = params.get("FinalisedTime")
    finalised_at: datetime | None = None
    if finalised not in (None, ""):
        from pesa.daraja import parse_daraja_timestamp

        try:
            value = int(finalised) if isinstance(finalised, float) else finalised
            finalised_at = parse_daraja_timestamp(value, field="FinalisedTime")
        except (ValidationError, ValueError, TypeError):
            finalised_at = None

    def text(key: str) -> str | None:
        value = params.get(key)
        return None if value in (None, "") else str(value)[:255]

    receipt = text("ReceiptNo") or envelope.transaction_id
    answer = StatusAnswer(
        result_code=envelope.result_code.strip(),
        result_desc=envelope.result_desc,
        amount=_decimal(params.get("Amount")),
        transaction_status=text("TransactionStatus"),
        credit_party=text("CreditPartyName"),
        debit_party=text("DebitPartyName"),
        receipt_no=receipt,
        finalised_at=finalised_at,
    )
    return answer, envelope.conversation_id


def _row_to_receipt(row: Row[Any] | Mapping[str, Any]) -> Receipt:
    m: Mapping[str, Any] = row._mapping if isinstance(row, Row) else row  # type: ignore[assignment]  # RowMapping is a Mapping at runtime
    balance = m["org_account_balance"]
    return Receipt(
        id=m["id"],
        trans_id=m["trans_id"],
        status=ReceiptStatus(m["status"]),
        source=m["source"],
        account=m["account"],
        shortcode=m["shortcode"],
        amount=Decimal(m["amount"]),
        account_reference=m["account_reference"],
        transaction_type=m["transaction_type"],
        invoice_number=m["invoice_number"],
        third_party_trans_id=m["third_party_trans_id"],
        msisdn=m["msisdn"],
        phone=m["phone"],
        payer_name=m["payer_name"],
        trans_time=m["trans_time"],
        org_account_balance=None if balance is None else Decimal(balance),
        expected_payment_id=m["expected_payment_id"],
        flagged=bool(m["flagged"]),
        flag_reason=m["flag_reason"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        verify_at=m["verify_at"],
        verify_since=m["verify_since"],
        check_count=int(m["check_count"]),
        version=int(m["version"]),
    )


def _row_to_expected(row: Row[Any] | Mapping[str, Any]) -> ExpectedPayment:
    m: Mapping[str, Any] = row._mapping if isinstance(row, Row) else row  # type: ignore[assignment]  # RowMapping is a Mapping at runtime
    return ExpectedPayment(
        id=m["id"],
        status=ExpectedStatus(m["status"]),
        account=m["account"],
        account_reference=m["account_reference"],
        amount=int(m["amount"]),
        description=m["description"],
        metadata=m["metadata"],
        idempotency_key=m["idempotency_key"],
        paid_amount=Decimal(m["paid_amount"]),
        pending_amount=Decimal(m["pending_amount"]),
        flagged=bool(m["flagged"]),
        flag_reason=m["flag_reason"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        version=int(m["version"]),
    )


def _row_to_query(row: Row[Any] | Mapping[str, Any]) -> ReceiptQuery:
    m: Mapping[str, Any] = row._mapping if isinstance(row, Row) else row  # type: ignore[assignment]  # RowMapping is a Mapping at runtime
    return ReceiptQuery(
        id=m["id"],
        purpose=m["purpose"],
        trans_id=m["trans_id"],
        account=m["account"],
        shortcode=m["shortcode"],
        receipt_id=m["receipt_id"],
        account_reference=m["account_reference"],
        outcome=m["outcome"],
        conversation_id=m["conversation_id"],
        originator_conversation_id=m["originator_conversation_id"],
        result_code=m["result_code"],
        result_desc=m["result_desc"],
        detail=m["detail"],
        asked_at=m["asked_at"],
        answered_at=m["answered_at"],
    )


def _full_phone(msisdn: str | None) -> str | None:
    """``msisdn`` as 12 digits when it is a whole Safaricom number (Pull may send one)."""
    if not msisdn:
        return None
    try:
        return normalize_msisdn(msisdn)
    except ValidationError:
        return None


def _source(value: str) -> Literal["confirmation", "lookup", "pull"]:
    if value == "lookup":
        return "lookup"
    return "pull" if value == "pull" else "confirmation"


def _receipt_state(receipt: Receipt, source: str | None = None) -> ReceiptState:
    return ReceiptState(
        status=receipt.status,
        trans_id=receipt.trans_id,
        amount=receipt.amount,
        shortcode=receipt.shortcode,
        account_reference=receipt.account_reference,
        msisdn=receipt.msisdn,
        source=_source(source or receipt.source),
        flagged=receipt.flagged,
        flag_reason=receipt.flag_reason,
        verifying=receipt.verify_at is not None,
    )


def _expected_state(expected: ExpectedPayment) -> ExpectedState:
    return ExpectedState(
        status=expected.status,
        amount=expected.amount,
        paid_amount=expected.paid_amount,
        pending_amount=expected.pending_amount,
        flagged=expected.flagged,
        flag_reason=expected.flag_reason,
    )


def _request_hash(*fields: Any) -> str:
    canonical = json.dumps(list(fields), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_limit(limit: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _MAX_PAGE:
        raise ValidationError("limit", f"must be an integer from 1 to {_MAX_PAGE}", limit)


def _check_text(value: Any, name: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(name, "must be a non-empty string")
    text = value.strip()
    if len(text) > limit:
        raise ValidationError(name, f"must be at most {limit} characters")
    if "\x00" in text or not text.isprintable():
        raise ValidationError(name, "must be printable text")
    return text


class ReceiptBook:
    """C2B receipts, expected payments and Transaction Status queries (``ledger.receipts``).

    Args:
        ledger: the ledger whose engine, clock and outbox it shares.
        policy: when confirmations count (see :data:`pesa.ledger.VerifyPolicy`); it decides
            whether an expected payment settled by an unverified receipt is flagged.
    """

    def __init__(self, ledger: Ledger, *, policy: VerifyPolicy = "auto") -> None:
        if policy not in ("auto", "always", "never"):
            raise ValidationError("policy", 'must be "auto", "always" or "never"', policy)
        self._ledger = ledger
        self.policy: VerifyPolicy = policy

    @property
    def _postgres(self) -> bool:
        return self._ledger._postgres

    def _now(self) -> datetime:
        return self._ledger._now()

    def _id(self, prefix: str, now: datetime) -> str:
        return new_id(prefix, now_ms=int(now.timestamp() * 1000))

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[_T]]) -> _T:
        """A write transaction that holds the event feed, retried when it lost a race."""
        for attempt in range(_MAX_RETRIES):
            try:
                async with self._ledger.engine.begin() as conn:
                    await self._ledger._hold_feed(conn)
                    return await work(conn)
            except _VersionConflict:
                log.debug("version conflict, retrying (attempt %d)", attempt + 1)
            except IntegrityError:
                # Two copies of one confirmation (or two creates with one key) raced: the
                # next attempt sees the winner's row.
                if attempt == _MAX_RETRIES - 1:
                    raise
                log.debug("unique key race, retrying (attempt %d)", attempt + 1)
        raise LedgerConflictError("a receipt kept changing under a guarded update; gave up")

    async def _select(self, query: Any) -> list[Row[Any]]:
        return await self._ledger._select(query)

    async def _lock(self, conn: AsyncConnection, table: Any, where: Any) -> Row[Any] | None:
        query = select(table).where(where)
        if self._postgres:
            query = query.with_for_update()
        return (await conn.execute(query)).first()

    async def _store_raw(
        self,
        record: dict[str, Any],
        outcome: str,
        detail: str,
        subject_id: str | None,
        conn: AsyncConnection | None = None,
    ) -> None:
        statement = insert(callbacks).values(
            **record, outcome=outcome, detail=_storable_text(detail), subject_id=subject_id
        )
        if conn is not None:
            await conn.execute(statement)
            return
        async with self._ledger.engine.begin() as own:
            await own.execute(statement)

    def _record(self, kind: str, body: bytes, source_ip: str | None) -> dict[str, Any]:
        received = self._now()
        return {
            "id": self._id("cb", received),
            "kind": kind,
            "body": bytes(body),
            "source_ip": source_ip,
            "received_at": received,
        }

    # -- confirmations --------------------------------------------------------------------

    async def ingest_confirmation(
        self,
        body: bytes,
        *,
        source_ip: str | None,
        account_for: Callable[[str], ReceiptAccount],
    ) -> ReceiptOutcome:
        """Store a raw C2B confirmation and apply it, in one transaction.

        The body is always stored (kind ``c2b_confirm``), even when malformed. A new
        ``TransID`` becomes a receipt (``received`` when ``account_for(shortcode)`` says its
        account can be verified, else ``unverified``) and is matched to an expected payment
        by its account number; a repeat is a duplicate, or a flag when it disagrees.
        Acknowledge Daraja only after this returns.

        Returns:
            A :class:`ReceiptOutcome` (``applied``, ``duplicate``, ``flagged``, ``invalid``).
        """
        record = self._record("c2b_confirm", body, source_ip)
        try:
            confirmation = parse_confirmation(bytes(body))
        except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
            detail = f"invalid C2B confirmation: {err}"
            await self._store_raw(record, "invalid", detail, None)
            log.warning("confirmation %s rejected: %s", record["id"], redact(detail))
            return ReceiptOutcome(record["id"], "invalid", None, None, detail)
        account = account_for(confirmation.shortcode)

        async def work(conn: AsyncConnection) -> ReceiptOutcome:
            return await self._apply_confirmation(conn, record, confirmation, account)

        try:
            outcome: ReceiptOutcome = await self._write(work)
        except Exception as err:
            # Never lose the raw body, even when applying it failed unexpectedly.
            await self._store_raw(record, "error", type(err).__name__, None)
            raise
        return outcome

    async def _apply_confirmation(
        self,
        conn: AsyncConnection,
        record: dict[str, Any],
        confirmation: Confirmation,
        account: ReceiptAccount,
    ) -> ReceiptOutcome:
        row = await self._lock(conn, receipts, receipts.c.trans_id == confirmation.trans_id)
        now = self._now()
        inserts: list[Insert] = []
        expected: ExpectedPayment | None = None
        if row is None:
            decision = new_receipt(confirmation, verifiable=account.verifiable, policy=self.policy)
            receipt, expected, inserts = await self._create(
                conn, decision, confirmation.trans_id, confirmation.shortcode, account.name, now
            )
            if account.name is None:
                receipt, more = await self._flag_receipt(
                    conn,
                    receipt,
                    f"no configured account has shortcode {confirmation.shortcode}",
                    now,
                )
                inserts += more
            status: ReceiptOutcomeStatus = "applied"
            detail = decision.detail
        else:
            current = _row_to_receipt(row)
            decision = decide_receipt(_receipt_state(current), confirmation)
            receipt, expected, inserts = await self._update(conn, current, decision, now)
            status = _outcome_status(decision)
            detail = decision.detail
        inserts.append(
            insert(callbacks).values(
                **record, outcome=status, detail=detail[:_MAX_ERROR_TEXT], subject_id=receipt.id
            )
        )
        await self._ledger._flush(conn, inserts)
        if status not in ("applied", "duplicate"):
            log.warning("confirmation %s for %s: %s (%s)", record["id"], receipt.id, status, detail)
        return ReceiptOutcome(record["id"], status, receipt, expected, detail)

    async def _create(
        self,
        conn: AsyncConnection,
        decision: ReceiptDecision,
        trans_id: str,
        shortcode: str,
        account: str | None,
        now: datetime,
        *,
        phone: str | None = None,
        payer_name: str | None = None,
        account_reference: str | None = None,
    ) -> tuple[Receipt, ExpectedPayment | None, list[Insert]]:
        """Insert a new receipt, match it, tally its expected payment (inserts to run)."""
        changes = dict(decision.changes)
        reference = changes.get("account_reference") or account_reference
        values: dict[str, Any] = {
            "id": self._id("rcp", now),
            "trans_id": trans_id,
            "status": ReceiptStatus(changes["status"]).value,
            "source": changes.get("source", "confirmation"),
            "account": account,
            "shortcode": shortcode,
            "amount": changes.get("amount"),
            "account_reference": reference,
            "reference_key": reference_key(reference) if reference else None,
            "transaction_type": changes.get("transaction_type"),
            "invoice_number": changes.get("invoice_number"),
            "third_party_trans_id": changes.get("third_party_trans_id"),
            "msisdn": changes.get("msisdn"),
            "payer_name": changes.get("payer_name") or payer_name,
            "trans_time": _utc(changes.get("trans_time")),
            "org_account_balance": changes.get("org_account_balance"),
            "expected_payment_id": None,
            "flagged": False,
            "flag_reason": None,
            "verify_at": now if decision.verify else None,
            "verify_since": now if decision.verify else None,
            "claimed_until": None,
            "check_count": 0,
            "version": 1,
            "created_at": now,
            "updated_at": now,
            **payer_facts(changes.get("msisdn")),
        }
        if phone is not None:
            values["phone"] = phone
            values["phone_hash"] = phone_hashes(phone)[0]
        if values["amount"] is None:
            raise LedgerError("a receipt needs an amount")  # pragma: no cover - decided above
        expected_id, match_detail = await self._match(conn, account, values["reference_key"])
        values["expected_payment_id"] = expected_id
        await conn.execute(insert(receipts).values(values))
        receipt = _row_to_receipt(values)
        events: list[str] = [str(e) for e in decision.events]
        if expected_id is None:
            events.append(str(ReceiptEvent.UNMATCHED))
        detail = f"{decision.detail}; {match_detail}"
        inserts = self._receipt_events(receipt, events, detail, now)
        expected = None
        if expected_id is not None:
            expected, more = await self._retally(conn, expected_id, receipt, now)
            inserts += more
        log.info(
            "receipt %s (%s, %s KES) recorded: %s", receipt.id, trans_id, receipt.amount, detail
        )
        return receipt, expected, inserts

    async def _match(
        self, conn: AsyncConnection, account: str | None, key: str | None
    ) -> tuple[str | None, str]:
        """The expected payment a receipt of ``account`` with account number ``key`` settles."""
        if account is None:
            return None, "unmatched: its shortcode is not a configured account's"
        if not key:
            return None, "unmatched: it names no account number"
        query = (
            select(
                expected_payments.c.id, expected_payments.c.status, expected_payments.c.created_at
            )
            .where(expected_payments.c.account == account, expected_payments.c.reference_key == key)
            .order_by(expected_payments.c.created_at, expected_payments.c.id)
            .limit(_MAX_PAGE)
        )
        if self._postgres:
            query = query.with_for_update()
        rows = (await conn.execute(query)).all()
        chosen, why = choose_expected(
            [MatchCandidate(r.id, ExpectedStatus(r.status), r.created_at) for r in rows]
        )
        if chosen is None:
            return None, f"unmatched: {why}"
        return chosen, f"matched to {chosen} ({why})"

    async def _update(
        self,
        conn: AsyncConnection,
        current: Receipt,
        decision: ReceiptDecision,
        now: datetime,
        *,
        extra: Mapping[str, Any] | None = None,
    ) -> tuple[Receipt, ExpectedPayment | None, list[Insert]]:
        """Write a decision about an existing receipt; re-tally what it counts towards."""
        if not decision.applied and not (decision.verify and current.verify_at is None):
            return current, None, []
        changes = {**decision.changes, **(extra or {})}
        if "status" in changes:
            changes["status"] = ReceiptStatus(changes["status"]).value
        if "account_reference" in changes:
            reference = changes["account_reference"]
            changes["reference_key"] = reference_key(reference) if reference else None
        if "msisdn" in changes:
            changes.update({k: v for k, v in payer_facts(changes["msisdn"]).items() if v})
        if "trans_time" in changes:
            changes["trans_time"] = _utc(changes["trans_time"])
        if decision.verify and current.verify_at is None:
            changes["verify_at"] = now
            changes["verify_since"] = current.verify_since or now
        if changes.get("verify_at", "") is None:
            changes["claimed_until"] = None
        if decision.rematch and current.expected_payment_id is None:
            reference = changes.get("reference_key")
            expected_id, _ = await self._match(conn, current.account, reference)
            if expected_id is not None:
                changes["expected_payment_id"] = expected_id
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        result = await conn.execute(
            update(receipts)
            .where(receipts.c.id == current.id, receipts.c.version == current.version)
            .values(changes)
        )
        if result.rowcount != 1:
            raise _VersionConflict
        fields = {f.name for f in dataclasses.fields(Receipt)}
        snapshot = {k: v for k, v in changes.items() if k in fields}
        if "status" in snapshot:
            snapshot["status"] = ReceiptStatus(snapshot["status"])
        receipt = dataclasses.replace(current, **snapshot)
        events = [str(e) for e in decision.events]
        linked_now = receipt.expected_payment_id is not None and current.expected_payment_id is None
        if linked_now:
            events.append(str(ReceiptEvent.MATCHED))
        inserts = self._receipt_events(receipt, events, decision.detail, now)
        expected = None
        if receipt.expected_payment_id is not None:
            expected, more = await self._retally(conn, receipt.expected_payment_id, receipt, now)
            inserts += more
        if decision.applied:
            log.info(
                "receipt %s: %s -> %s (%s)",
                receipt.id,
                current.status,
                receipt.status,
                decision.detail,
            )
        return receipt, expected, inserts

    async def _flag_receipt(
        self, conn: AsyncConnection, receipt: Receipt, reason: str, now: datetime
    ) -> tuple[Receipt, list[Insert]]:
        flag_reason = reason if not receipt.flag_reason else f"{receipt.flag_reason}; {reason}"
        await conn.execute(
            update(receipts)
            .where(receipts.c.id == receipt.id)
            .values(
                flagged=True, flag_reason=flag_reason, version=receipt.version + 1, updated_at=now
            )
        )
        flagged = dataclasses.replace(
            receipt,
            flagged=True,
            flag_reason=flag_reason,
            version=receipt.version + 1,
            updated_at=now,
        )
        return flagged, self._receipt_events(flagged, [str(ReceiptEvent.FLAGGED)], reason, now)

    def _receipt_events(
        self, receipt: Receipt, events: Sequence[str], detail: str, now: datetime
    ) -> list[Insert]:
        data = {"receipt": receipt.to_dict(), "detail": detail}
        return self._ledger._outbox_inserts(receipt.id, [(e, data) for e in events], now)

    async def _retally(
        self, conn: AsyncConnection, expected_id: str, receipt: Receipt, now: datetime
    ) -> tuple[ExpectedPayment, list[Insert]]:
        """Add up an expected payment's receipts and apply the new tally."""
        row = await self._lock(conn, expected_payments, expected_payments.c.id == expected_id)
        if row is None:  # pragma: no cover - expected payments are never deleted
            raise LedgerError(f"expected payment {expected_id} vanished")
        current = _row_to_expected(row)
        linked = (
            await conn.execute(
                select(receipts.c.id, receipts.c.status, receipts.c.amount).where(
                    receipts.c.expected_payment_id == expected_id
                )
            )
        ).all()
        paid = pending = Decimal(0)
        unverified: list[str] = []
        refuted: list[str] = []
        for rid, status, amount in linked:
            how = counts(status)
            if how == "paid":
                paid += Decimal(amount)
            elif how == "pending":
                pending += Decimal(amount)
            if status == ReceiptStatus.UNVERIFIED.value:
                unverified.append(rid)
            elif status == ReceiptStatus.REFUTED.value:
                refuted.append(rid)
        tally = Tally(paid, pending, tuple(unverified), tuple(refuted), receipt.id)
        decision = decide_expected(_expected_state(current), tally, policy=self.policy)
        return await self._write_expected(conn, current, decision, now, receipt)

    async def _write_expected(
        self,
        conn: AsyncConnection,
        current: ExpectedPayment,
        decision: ExpectedDecision,
        now: datetime,
        receipt: Receipt | None,
    ) -> tuple[ExpectedPayment, list[Insert]]:
        if decision.kind is not DecisionKind.APPLIED:
            return current, []
        changes = dict(decision.changes)
        if "status" in changes:
            changes["status"] = ExpectedStatus(changes["status"]).value
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        result = await conn.execute(
            update(expected_payments)
            .where(
                expected_payments.c.id == current.id,
                expected_payments.c.version == current.version,
            )
            .values(changes)
        )
        if result.rowcount != 1:
            raise _VersionConflict
        fields = {f.name for f in dataclasses.fields(ExpectedPayment)}
        snapshot = {k: v for k, v in changes.items() if k in fields}
        if "status" in snapshot:
            snapshot["status"] = ExpectedStatus(snapshot["status"])
        expected = dataclasses.replace(current, **snapshot)
        data = {
            "expected_payment": expected.to_dict(),
            "receipt": None if receipt is None else receipt.to_dict(),
            "detail": decision.detail,
        }
        inserts = self._ledger._outbox_inserts(
            expected.id, [(str(e), data) for e in decision.events], now
        )
        log.info(
            "expected payment %s: %s -> %s (%s)",
            expected.id,
            current.status,
            expected.status,
            decision.detail,
        )
        return expected, inserts

    # -- validation requests -------------------------------------------------------------

    async def record_refused(
        self, kind: str, body: bytes, *, source_ip: str | None, detail: str
    ) -> str:
        """Store a C2B callback the gateway refused before reading it all (too large): its
        first bytes, outcome ``invalid``.

        Returns:
            The stored callback's id.
        """
        record = self._record(kind, body, source_ip)
        await self._store_raw(record, "invalid", detail, None)
        return str(record["id"])

    async def find_open_expected(
        self, account: str, account_reference: str
    ) -> ExpectedPayment | None:
        """The oldest open (or partly paid) expected payment for this account number."""
        key = reference_key(account_reference)
        if not key or not _storable_key(account, 32):
            return None
        rows = await self._select(
            select(expected_payments)
            .where(
                expected_payments.c.account == account,
                expected_payments.c.reference_key == key[:64],
                expected_payments.c.status.in_(
                    [ExpectedStatus.OPEN.value, ExpectedStatus.PARTIALLY_PAID.value]
                ),
            )
            .order_by(expected_payments.c.created_at, expected_payments.c.id)
            .limit(1)
        )
        return _row_to_expected(rows[0]) if rows else None

    async def record_validation(
        self, body: bytes, *, source_ip: str | None, outcome: str, detail: str
    ) -> str:
        """Store a raw C2B validation request and the answer given (kind ``c2b_validate``).

        Returns:
            The stored callback's id.
        """
        record = self._record("c2b_validate", body, source_ip)
        await self._store_raw(record, outcome[:16], detail, None)
        return str(record["id"])

    # -- Transaction Status queries ------------------------------------------------------

    async def start_query(
        self,
        *,
        purpose: str,
        trans_id: str,
        account: str,
        shortcode: str,
        receipt_id: str | None = None,
        account_reference: str | None = None,
    ) -> tuple[ReceiptQuery, str]:
        """Commit a Transaction Status query before it is sent.

        Returns:
            The query and the one-time secret of its ResultURL (stored only as a hash:
            put it in the URL, never in a log).
        """
        nonce = secrets.token_urlsafe(24)
        now = self._now()
        values: dict[str, Any] = {
            "id": self._id("rqy", now),
            "nonce_hash": nonce_hash(nonce),
            "purpose": purpose,
            "trans_id": trans_id,
            "account": account,
            "shortcode": shortcode,
            "receipt_id": receipt_id,
            "account_reference": account_reference,
            "outcome": "sent",
            "conversation_id": None,
            "originator_conversation_id": None,
            "result_code": None,
            "result_desc": None,
            "detail": None,
            "asked_at": now,
            "answered_at": None,
        }
        async with self._ledger.engine.begin() as conn:
            await conn.execute(insert(receipt_queries).values(values))
        return _row_to_query(values), nonce

    async def start_lookup(
        self,
        trans_id: str,
        *,
        account: str,
        shortcode: str,
        account_reference: str | None = None,
    ) -> tuple[LookupOutcome, str | None]:
        """Begin ``POST /v1/receipts/lookup``: the receipt if Daraja already confirmed it,
        the lookup asked within the last minute, or a new query to send.

        Returns:
            ``(outcome, nonce)``: ``nonce`` is set only for a new query (send it).

        Raises:
            ValidationError: a malformed receipt number or account number.
        """
        trans_id = _check_text(trans_id, "trans_id", 32) or ""
        if _TRANS_ID.fullmatch(trans_id) is None:
            raise ValidationError(
                "trans_id", "must be an M-Pesa receipt number (letters and digits)"
            )
        trans_id = trans_id.upper()
        reference = _check_text(account_reference, "account_reference", 64, required=False)
        existing = await self.get_receipt_by_trans_id(trans_id)
        if existing is not None and existing.status is ReceiptStatus.CONFIRMED:
            return LookupOutcome(None, existing), None
        since = self._now() - _LOOKUP_REUSE
        rows = await self._select(
            select(receipt_queries)
            .where(
                receipt_queries.c.trans_id == trans_id,
                receipt_queries.c.purpose == "lookup",
                receipt_queries.c.outcome == "sent",
                receipt_queries.c.asked_at >= since,
            )
            .order_by(receipt_queries.c.seq.desc())
            .limit(1)
        )
        if rows:
            return LookupOutcome(_row_to_query(rows[0]), existing), None
        query, nonce = await self.start_query(
            purpose="lookup",
            trans_id=trans_id,
            account=account,
            shortcode=shortcode,
            receipt_id=None if existing is None else existing.id,
            account_reference=reference,
        )
        return LookupOutcome(query, existing), nonce

    async def record_query_sent(
        self,
        query_id: str,
        *,
        conversation_id: str | None,
        originator_conversation_id: str | None,
    ) -> None:
        """Daraja acknowledged the query; its answer comes to the ResultURL."""
        async with self._ledger.engine.begin() as conn:
            await conn.execute(
                update(receipt_queries)
                .where(receipt_queries.c.id == query_id)
                .values(
                    conversation_id=None if conversation_id is None else conversation_id[:128],
                    originator_conversation_id=(
                        None
                        if originator_conversation_id is None
                        else originator_conversation_id[:128]
                    ),
                )
            )

    async def record_query_error(
        self,
        query_id: str,
        outcome: ReceiptQueryOutcome,
        detail: str,
        *,
        result_code: str | None = None,
    ) -> ReceiptQuery | None:
        """The query was not acknowledged (an error answer, no answer, rate limiting)."""
        async with self._ledger.engine.begin() as conn:
            await conn.execute(
                update(receipt_queries)
                .where(receipt_queries.c.id == query_id, receipt_queries.c.outcome == "sent")
                .values(
                    outcome=outcome,
                    result_code=None if result_code is None else result_code[:32],
                    detail=_storable_text(redact(detail)),
                    answered_at=self._now(),
                )
            )
        return await self.get_query(query_id)

    async def ingest_status_result(
        self, nonce: str, body: bytes, *, source_ip: str | None, timeout: bool = False
    ) -> ReceiptOutcome:
        """Store a Transaction Status Result (or a queue timeout) and apply it, once.

        ``nonce`` is the secret segment of the query's ResultURL: a result for no query is
        stored as ``unknown_query`` and changes nothing. A second answer to one query is a
        duplicate. A found receipt confirms (or refutes) the receipt of its ``TransID``; a
        lookup that finds a receipt no confirmation announced records it, ``confirmed``.
        """
        record = self._record("c2b_status", body, source_ip)
        digest = nonce_hash(nonce)
        parsed: tuple[StatusAnswer, str | None] | None = None
        problem: str | None = None
        if not timeout:
            try:
                parsed = status_answer(bytes(body))
            except (InvalidCallbackError, ValueError, TypeError, KeyError) as err:
                problem = f"invalid Transaction Status result: {err}"

        async def work(conn: AsyncConnection) -> ReceiptOutcome:
            return await self._apply_status(conn, record, digest, parsed, problem, timeout)

        try:
            outcome: ReceiptOutcome = await self._write(work)
        except Exception as err:
            await self._store_raw(record, "error", type(err).__name__, None)
            raise
        return outcome

    async def _apply_status(
        self,
        conn: AsyncConnection,
        record: dict[str, Any],
        digest: str,
        parsed: tuple[StatusAnswer, str | None] | None,
        problem: str | None,
        timeout: bool,
    ) -> ReceiptOutcome:
        row = await self._lock(conn, receipt_queries, receipt_queries.c.nonce_hash == digest)
        if row is None:
            detail = "no query has this ResultURL"
            await self._store_raw(record, "unknown_query", detail, None, conn)
            return ReceiptOutcome(record["id"], "unknown_query", None, None, detail)
        query = _row_to_query(row)
        now = self._now()
        if problem is not None or (parsed is None and not timeout):
            detail = problem or "invalid Transaction Status result"
            await self._store_raw(record, "invalid", detail, query.receipt_id, conn)
            return ReceiptOutcome(record["id"], "invalid", None, None, detail)
        if query.outcome in _ANSWERED:
            detail = f"query {query.id} was already answered ({query.outcome})"
            await self._store_raw(record, "duplicate", detail, query.receipt_id, conn)
            return ReceiptOutcome(record["id"], "duplicate", None, None, detail)
        if timeout or parsed is None:
            await conn.execute(
                update(receipt_queries)
                .where(receipt_queries.c.id == query.id)
                .values(outcome="timeout", answered_at=now, detail="Daraja's queue timed out")
            )
            detail = "the query timed out in Daraja's queue; asked again later"
            await self._store_raw(record, "applied", detail, query.receipt_id, conn)
            return ReceiptOutcome(record["id"], "applied", None, None, detail)
        answer, conversation_id = parsed
        if (
            conversation_id is not None
            and query.conversation_id is not None
            and conversation_id != query.conversation_id
        ):
            detail = "the Result's ConversationID is not the one Daraja gave this query"
            await self._store_raw(record, "invalid", detail, query.receipt_id, conn)
            return ReceiptOutcome(record["id"], "invalid", None, None, detail)
        receipt_row = await self._lock(conn, receipts, receipts.c.trans_id == query.trans_id)
        inserts: list[Insert] = []
        expected: ExpectedPayment | None = None
        receipt: Receipt | None = None
        if receipt_row is None:
            decision = new_receipt(answer, verifiable=True, policy=self.policy)
            if decision.applied:
                phone, name = _debit_party(answer.debit_party)
                shortcode = query.shortcode
                receipt, expected, inserts = await self._create(
                    conn,
                    decision,
                    query.trans_id,
                    shortcode,
                    query.account,
                    now,
                    phone=phone,
                    payer_name=name,
                    account_reference=query.account_reference,
                )
        else:
            current = _row_to_receipt(receipt_row)
            decision = decide_receipt(_receipt_state(current), answer)
            extra: dict[str, Any] = {}
            if decision.applied and current.phone is None and answer.debit_party:
                phone, name = _debit_party(answer.debit_party)
                if phone is not None:
                    extra.update(phone=phone, phone_hash=phone_hashes(phone)[0])
                if name is not None and current.payer_name is None:
                    extra["payer_name"] = name
            receipt, expected, inserts = await self._update(
                conn, current, decision, now, extra=extra
            )
        query_outcome = _query_outcome(answer, decision)
        await conn.execute(
            update(receipt_queries)
            .where(receipt_queries.c.id == query.id)
            .values(
                outcome=query_outcome,
                result_code=_storable_text(answer.result_code)[:32],
                result_desc=_storable_text(redact(answer.result_desc)),
                detail=_storable_text(decision.detail),
                answered_at=now,
                receipt_id=None if receipt is None else receipt.id,
                conversation_id=query.conversation_id or conversation_id,
            )
        )
        status = _outcome_status(decision)
        subject = None if receipt is None else receipt.id
        inserts.append(
            insert(callbacks).values(
                **record,
                outcome=status,
                detail=decision.detail[:_MAX_ERROR_TEXT],
                subject_id=subject,
            )
        )
        await self._ledger._flush(conn, inserts)
        return ReceiptOutcome(record["id"], status, receipt, expected, decision.detail)

    # -- Pull Transactions ------------------------------------------------------------------

    async def ingest_pulled(self, pulled: Pulled, *, account: ReceiptAccount) -> ReceiptOutcome:
        """Apply one transaction of Daraja's Pull Transactions answer, once per ``TransID``.

        A ``TransID`` the ledger never heard of becomes a ``confirmed`` receipt with source
        ``pull`` (recovered: its confirmation never came) and is matched like any other; a
        known one is a duplicate, confirms a receipt still waiting for Transaction Status,
        or is flagged when Daraja's record disagrees. What Pull said is stored (kind
        ``c2b_pull``) as the evidence.
        """
        body = json.dumps(
            {
                "transactionId": pulled.trans_id,
                "amount": str(pulled.amount),
                "shortcode": pulled.shortcode,
                "billreference": pulled.account_reference,
                "msisdn": pulled.msisdn,
                "trxDate": None if pulled.trans_time is None else pulled.trans_time.isoformat(),
                "sender": pulled.payer_name,
                "transactiontype": pulled.transaction_type,
            },
            separators=(",", ":"),
        ).encode()
        record = self._record("c2b_pull", body, None)

        async def work(conn: AsyncConnection) -> ReceiptOutcome:
            row = await self._lock(conn, receipts, receipts.c.trans_id == pulled.trans_id)
            now = self._now()
            expected: ExpectedPayment | None = None
            if row is None:
                decision = new_receipt(pulled, verifiable=account.verifiable, policy=self.policy)
                receipt, expected, inserts = await self._create(
                    conn,
                    decision,
                    pulled.trans_id,
                    pulled.shortcode,
                    account.name,
                    now,
                    phone=_full_phone(pulled.msisdn),
                )
                if account.name is None:
                    receipt, more = await self._flag_receipt(
                        conn,
                        receipt,
                        f"no configured account has shortcode {pulled.shortcode}",
                        now,
                    )
                    inserts += more
                status: ReceiptOutcomeStatus = "applied"
            else:
                current = _row_to_receipt(row)
                decision = decide_receipt(_receipt_state(current), pulled)
                receipt, expected, inserts = await self._update(conn, current, decision, now)
                status = _outcome_status(decision)
            inserts.append(
                insert(callbacks).values(
                    **record,
                    outcome=status,
                    detail=decision.detail[:_MAX_ERROR_TEXT],
                    subject_id=receipt.id,
                )
            )
            await self._ledger._flush(conn, inserts)
            return ReceiptOutcome(record["id"], status, receipt, expected, decision.detail)

        outcome: ReceiptOutcome = await self._write(work)
        if outcome.status not in ("applied", "duplicate"):
            log.warning("pulled %s: %s (%s)", pulled.trans_id, outcome.status, outcome.detail)
        return outcome

    # -- verification --------------------------------------------------------------------

    async def claim_for_verification(self, *, limit: int, lease: timedelta) -> list[Receipt]:
        """Claim receipts whose Transaction Status query is due (``verify_at`` reached).

        Each is leased until now + ``lease`` (a crashed worker's claims come back after it);
        on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, so several workers never claim one.
        """
        _check_limit(limit)
        now = self._now()

        async def work(conn: AsyncConnection) -> list[Receipt]:
            query = (
                select(receipts.c.id)
                .where(
                    receipts.c.verify_at <= now,
                    or_(receipts.c.claimed_until.is_(None), receipts.c.claimed_until <= now),
                )
                .order_by(receipts.c.verify_at)
                .limit(limit)
            )
            if self._postgres:
                query = query.with_for_update(skip_locked=True)
            ids = [r[0] for r in (await conn.execute(query)).all()]
            if not ids:
                return []
            rows = await conn.execute(
                update(receipts)
                .where(receipts.c.id.in_(ids))
                .values(claimed_until=now + lease, check_count=receipts.c.check_count + 1)
                .returning(*receipts.c)
            )
            claimed = [_row_to_receipt(r) for r in rows.all()]
            claimed.sort(key=lambda r: ids.index(r.id))
            return claimed

        async with self._ledger.engine.begin() as conn:
            return await work(conn)

    async def schedule_verification(self, receipt_id: str, at: datetime) -> None:
        """Release the claim and ask again at ``at`` (if the receipt still awaits it)."""
        async with self._ledger.engine.begin() as conn:
            await conn.execute(
                update(receipts)
                .where(receipts.c.id == receipt_id, receipts.c.verify_at.is_not(None))
                .values(verify_at=at, claimed_until=None)
            )

    async def abandon_verification(self, receipt_id: str, reason: str = "") -> Receipt:
        """Stop asking Daraja about a receipt (its window passed): flagged, still pending."""

        async def work(conn: AsyncConnection) -> Receipt:
            row = await self._lock(conn, receipts, receipts.c.id == receipt_id)
            if row is None:
                raise ReceiptNotFoundError(receipt_id)
            current = _row_to_receipt(row)
            decision = decide_receipt(_receipt_state(current), VerificationAbandoned(reason))
            receipt, _, inserts = await self._update(conn, current, decision, self._now())
            await self._ledger._flush(conn, inserts)
            return receipt

        receipt: Receipt = await self._write(work)
        return receipt

    async def apply(self, receipt_id: str, event: ReceiptInput) -> Receipt:
        """Apply one input to a receipt (for drivers and tests; callbacks have their own)."""

        async def work(conn: AsyncConnection) -> Receipt:
            row = await self._lock(conn, receipts, receipts.c.id == receipt_id)
            if row is None:
                raise ReceiptNotFoundError(receipt_id)
            current = _row_to_receipt(row)
            decision = decide_receipt(_receipt_state(current), event)
            receipt, _, inserts = await self._update(conn, current, decision, self._now())
            await self._ledger._flush(conn, inserts)
            return receipt

        receipt: Receipt = await self._write(work)
        return receipt

    # -- expected payments ---------------------------------------------------------------

    async def create_expected_payment(
        self,
        idempotency_key: str | None,
        account: str,
        account_reference: str,
        amount: int,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[ExpectedPayment, bool]:
        """Say "I expect KES ``amount`` for ``account_reference`` on ``account``".

        Receipts already recorded with that account number and not yet matched (the
        customer paid before the order was entered) are matched at once, oldest first.

        Returns:
            ``(expected_payment, created)``; ``created`` is ``False`` for a repeat of the
            idempotency key with the same parameters.

        Raises:
            ValidationError: a bad parameter (names the field and the rule).
            IdempotencyConflictError: the key was used with other parameters.
        """
        if idempotency_key is not None:
            idempotency_key = _check_text(idempotency_key, "idempotency_key", 255)
        account = _check_text(account, "account", 32) or ""
        reference = _check_text(account_reference, "account_reference", 64) or ""
        key = reference_key(reference)
        if not key:
            raise ValidationError("account_reference", "must have letters or digits")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ValidationError("amount", "must be a whole number of shillings, at least 1")
        desc = _check_text(description, "description", 255, required=False)
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise ValidationError("metadata", "must be a JSON object")
            try:
                json.dumps(metadata, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise ValidationError("metadata", "must be JSON-serialisable") from err
        digest = _request_hash(account, key, amount, desc, metadata)
        if idempotency_key is not None:
            existing = await self._expected_by_key(idempotency_key)
            if existing is not None:
                return self._repeat(existing, idempotency_key, digest), False

        async def work(conn: AsyncConnection) -> ExpectedPayment:
            now = self._now()
            values: dict[str, Any] = {
                "id": self._id("exp", now),
                "idempotency_key": idempotency_key,
                "request_hash": digest,
                "account": account,
                "account_reference": reference,
                "reference_key": key,
                "amount": amount,
                "description": desc,
                "metadata": metadata,
                "status": ExpectedStatus.OPEN.value,
                "paid_amount": Decimal(0),
                "pending_amount": Decimal(0),
                "flagged": False,
                "flag_reason": None,
                "version": 1,
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(insert(expected_payments).values(values))
            expected = _row_to_expected(values)
            return await self._take_early_receipts(conn, expected, now)

        try:
            expected: ExpectedPayment = await self._write(work)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = await self._expected_by_key(idempotency_key)
            if existing is None:
                raise
            return self._repeat(existing, idempotency_key, digest), False
        log.info(
            "expected payment %s: %d KES for %s on %s", expected.id, amount, reference, account
        )
        return expected, True

    async def _take_early_receipts(
        self, conn: AsyncConnection, expected: ExpectedPayment, now: datetime
    ) -> ExpectedPayment:
        query = (
            select(receipts)
            .where(
                receipts.c.account == expected.account,
                receipts.c.reference_key == reference_key(expected.account_reference),
                receipts.c.expected_payment_id.is_(None),
                receipts.c.status != ReceiptStatus.REFUTED.value,
            )
            .order_by(receipts.c.created_at, receipts.c.id)
            .limit(_MAX_EARLY_RECEIPTS)
        )
        if self._postgres:
            query = query.with_for_update()
        rows = (await conn.execute(query)).all()
        if not rows:
            return expected
        inserts: list[Insert] = []
        for row in rows:
            receipt = _row_to_receipt(row)
            await conn.execute(
                update(receipts)
                .where(receipts.c.id == receipt.id)
                .values(
                    expected_payment_id=expected.id, version=receipt.version + 1, updated_at=now
                )
            )
            linked = dataclasses.replace(
                receipt,
                expected_payment_id=expected.id,
                version=receipt.version + 1,
                updated_at=now,
            )
            inserts += self._receipt_events(
                linked,
                [str(ReceiptEvent.MATCHED)],
                f"matched to {expected.id} when it was created (paid before it was expected)",
                now,
            )
            expected, more = await self._retally(conn, expected.id, linked, now)
            inserts += more
        await self._ledger._flush(conn, inserts)
        return expected

    def _repeat(
        self, existing: tuple[ExpectedPayment, str], key: str, digest: str
    ) -> ExpectedPayment:
        expected, stored = existing
        if stored != digest:
            raise IdempotencyConflictError(key, expected.id)
        return expected

    async def _expected_by_key(self, key: str) -> tuple[ExpectedPayment, str] | None:
        rows = await self._select(
            select(expected_payments).where(expected_payments.c.idempotency_key == key)
        )
        if not rows:
            return None
        return _row_to_expected(rows[0]), rows[0]._mapping["request_hash"]

    async def cancel_expected_payment(self, expected_id: str, reason: str = "") -> ExpectedPayment:
        """The merchant no longer expects this payment: ``open``/``partially_paid`` →
        ``cancelled`` (money arriving later is flagged, never lost).

        Raises:
            LedgerError: no such expected payment.
            InvalidTransitionError: it is already paid.
        """

        async def work(conn: AsyncConnection) -> ExpectedPayment:
            row = await self._lock(conn, expected_payments, expected_payments.c.id == expected_id)
            if row is None:
                raise ExpectedPaymentNotFoundError(expected_id)
            current = _row_to_expected(row)
            decision = decide_expected(_expected_state(current), Cancel(reason))
            if decision.kind is DecisionKind.IGNORED:
                raise InvalidTransitionError(expected_id, current.status, decision.detail)
            expected, inserts = await self._write_expected(
                conn, current, decision, self._now(), None
            )
            await self._ledger._flush(conn, inserts)
            return expected

        expected: ExpectedPayment = await self._write(work)
        return expected

    # -- reads ---------------------------------------------------------------------------

    async def get_receipt(self, receipt_id: str) -> Receipt | None:
        """The receipt with this id (``rcp_...``), or ``None``."""
        if not _storable_key(receipt_id, 40):
            return None
        rows = await self._select(select(receipts).where(receipts.c.id == receipt_id))
        return _row_to_receipt(rows[0]) if rows else None

    async def get_receipt_by_trans_id(self, trans_id: str) -> Receipt | None:
        """The receipt with this M-Pesa receipt number, or ``None``."""
        if not _storable_key(trans_id, 32):
            return None
        rows = await self._select(select(receipts).where(receipts.c.trans_id == trans_id))
        return _row_to_receipt(rows[0]) if rows else None

    async def list_receipts(
        self,
        *,
        account: str | None = None,
        account_reference: str | None = None,
        phone: str | None = None,
        status: ReceiptStatus | str | None = None,
        expected_payment_id: str | None = None,
        paid_from: datetime | None = None,
        paid_to: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
        q: str | None = None,
        source: str | None = None,
        flagged: bool | None = None,
    ) -> Page[Receipt]:
        """Receipts, newest first; pass ``page.next_cursor`` back for the next page.

        ``phone`` (any Safaricom format) matches a full number learnt by a lookup, a C2B v1
        hash of the number, and a v2 masked number whose visible digits agree (a masked
        number cannot be told apart from others with the same visible digits: such
        receipts are included). ``account_reference`` matches as customers type it (case and
        spaces ignored). ``paid_from`` (inclusive) and ``paid_to`` (exclusive) bound the
        time of payment (``TransTime``). ``q`` is a free-text search (the operator
        dashboard's): a phone number as ``phone`` matches it, the receipt's id, its M-Pesa
        receipt number, or an account reference as ``account_reference`` matches it.
        ``source``: ``confirmation``, ``lookup`` or ``pull`` (recovered by Pull
        Transactions); ``flagged``: only flagged (or unflagged) receipts.

        Raises:
            ValidationError: a bad phone, status, source, date or limit.
        """
        _check_limit(limit)
        query = select(receipts)
        if account is not None:
            query = query.where(receipts.c.account == _check_key(account, "account", 32))
        if account_reference is not None:
            reference = _check_text(account_reference, "account_reference", 64) or ""
            query = query.where(receipts.c.reference_key == reference_key(reference))
        if status is not None:
            try:
                query = query.where(receipts.c.status == ReceiptStatus(status).value)
            except ValueError as err:
                allowed = ", ".join(s.value for s in ReceiptStatus)
                raise ValidationError("status", f"must be one of {allowed}", status) from err
        if expected_payment_id is not None:
            _check_key(expected_payment_id, "expected_payment_id", 40)
            query = query.where(receipts.c.expected_payment_id == expected_payment_id)
        if phone is not None:
            query = query.where(_phone_matches(normalize_msisdn(phone, field="phone")))
        if q is not None and q.strip():
            text = _check_text(q.strip(), "q", 128) or ""
            found: list[Any] = [receipts.c.id == text, receipts.c.trans_id == text.upper()]
            if reference_key(text):
                found.append(receipts.c.reference_key == reference_key(text))
            with contextlib.suppress(ValidationError):  # not a phone number: the other keys
                found.append(_phone_matches(normalize_msisdn(text, field="q")))
            query = query.where(or_(*found))
        if source is not None:
            if source not in ("confirmation", "lookup", "pull"):
                raise ValidationError("source", "must be one of confirmation, lookup, pull", source)
            query = query.where(receipts.c.source == source)
        if flagged is not None:
            query = query.where(receipts.c.flagged.is_(true() if flagged else false()))
        if paid_from is not None:
            query = query.where(receipts.c.trans_time >= _check_time(paid_from, "paid_from"))
        if paid_to is not None:
            query = query.where(receipts.c.trans_time < _check_time(paid_to, "paid_to"))
        if cursor is not None:
            query = query.where(receipts.c.id < _check_key(cursor, "cursor", 40))
        rows = await self._select(query.order_by(receipts.c.id.desc()).limit(limit + 1))
        items = [_row_to_receipt(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def get_expected_payment(self, expected_id: str) -> ExpectedPayment | None:
        """The expected payment with this id (``exp_...``), or ``None``."""
        if not _storable_key(expected_id, 40):
            return None
        rows = await self._select(
            select(expected_payments).where(expected_payments.c.id == expected_id)
        )
        return _row_to_expected(rows[0]) if rows else None

    async def list_expected_payments(
        self,
        *,
        account: str | None = None,
        account_reference: str | None = None,
        status: ExpectedStatus | str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[ExpectedPayment]:
        """Expected payments, newest first, filtered; cursor pagination.

        Raises:
            ValidationError: a bad status or limit.
        """
        _check_limit(limit)
        query = select(expected_payments)
        if account is not None:
            query = query.where(expected_payments.c.account == _check_key(account, "account", 32))
        if account_reference is not None:
            reference = _check_text(account_reference, "account_reference", 64) or ""
            query = query.where(expected_payments.c.reference_key == reference_key(reference))
        if status is not None:
            try:
                query = query.where(expected_payments.c.status == ExpectedStatus(status).value)
            except ValueError as err:
                allowed = ", ".join(s.value for s in ExpectedStatus)
                raise ValidationError("status", f"must be one of {allowed}", status) from err
        if cursor is not None:
            query = query.where(expected_payments.c.id < _check_key(cursor, "cursor", 40))
        rows = await self._select(query.order_by(expected_payments.c.id.desc()).limit(limit + 1))
        items = [_row_to_expected(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items, items[-1].id if more else None, more)

    async def get_query(self, query_id: str) -> ReceiptQuery | None:
        """The Transaction Status query with this id (``rqy_...``), or ``None``."""
        if not _storable_key(query_id, 40):
            return None
        rows = await self._select(select(receipt_queries).where(receipt_queries.c.id == query_id))
        return _row_to_query(rows[0]) if rows else None

    async def list_queries(
        self, *, receipt_id: str | None = None, trans_id: str | None = None
    ) -> list[ReceiptQuery]:
        """The Transaction Status queries about a receipt, oldest first."""
        query = select(receipt_queries)
        if receipt_id is not None:
            query = query.where(receipt_queries.c.receipt_id == receipt_id)
        if trans_id is not None:
            query = query.where(receipt_queries.c.trans_id == trans_id)
        rows = await self._select(query.order_by(receipt_queries.c.seq))
        return [_row_to_query(r) for r in rows]

    async def list_callbacks(self, receipt_id: str) -> list[StoredCallback]:
        """The raw confirmations and status results about a receipt, oldest first."""
        rows = await self._select(
            select(callbacks)
            .where(callbacks.c.subject_id == receipt_id)
            .order_by(callbacks.c.received_at, callbacks.c.id)
        )
        return [
            StoredCallback(
                id=r.id,
                kind=r.kind,
                body=bytes(r.body),
                source_ip=r.source_ip,
                received_at=r.received_at,
                outcome=r.outcome,
                detail=r.detail,
                checkout_request_id=r.checkout_request_id,
                payment_id=r.payment_id,
            )
            for r in rows
        ]


def _phone_matches(number: str) -> Any:
    """A normalised number matches a full number learnt by a lookup, a C2B v1 hash, and a v2
    masked number whose visible digits agree."""
    masked = and_(
        receipts.c.msisdn_suffix.is_not(None),
        literal(number).like(func.coalesce(receipts.c.msisdn_prefix, "") + "%"),
        literal(number).like("%" + receipts.c.msisdn_suffix),
    )
    return or_(
        receipts.c.phone == number,
        receipts.c.phone_hash.in_(phone_hashes(number)),
        masked,
    )


def _utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return None


def _outcome_status(decision: ReceiptDecision) -> ReceiptOutcomeStatus:
    return receipt_outcome(decision)


def _query_outcome(answer: StatusAnswer, decision: ReceiptDecision) -> ReceiptQueryOutcome:
    if answer.not_found:
        return "not_found"
    if not answer.found or decision.kind is DecisionKind.NOOP:
        return "failed"
    if decision.status is ReceiptStatus.REFUTED or ReceiptEvent.FLAGGED in decision.events:
        return "refuted"
    return "confirmed"
