"""C2B receipts over the Django models: the ledger's receipt rules, one transaction each.

A confirmation is stored raw and applied in the same transaction, exactly once by its
``TransID`` (a unique key: two copies racing each other end as one receipt and one
duplicate). What a confirmation creates, and what a repeat does, is
:mod:`pesa.ledger._receipts`' decision (:func:`~pesa.ledger.new_receipt`,
:func:`~pesa.ledger.decide_receipt`); this module stores and calls.

This app does not ask Transaction Status about receipts: under ``PESA_C2B_VERIFY=auto``
(the default) and ``never`` a confirmation makes an ``unverified`` receipt (it counts; Daraja
signs nothing, so the path token is what keeps forgers out); under ``always`` it waits as
``received`` and does not count (verify it against the M-Pesa statement, or use the gateway).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, router, transaction

from pesa._exceptions import InvalidCallbackError
from pesa._logging import get_logger, redact
from pesa.django.models import Callback, Receipt, ReceiptEvent
from pesa.django.signals import send_receipt_event
from pesa.ledger import (
    Confirmation,
    LedgerConflictError,
    ReceiptDecision,
    ReceiptState,
    ReceiptStatus,
    VerifyPolicy,
    decide_receipt,
    new_receipt,
    parse_confirmation,
    payer_facts,
    receipt_outcome,
    storable_key,
    storable_text,
)
from pesa.ledger._ids import new_id

__all__ = ["ReceiptResult", "ReceiptStore"]

log = get_logger("pesa.django.receipts")

_MAX_RETRIES = 5
_MAX_TEXT = 1000
_PARSE_ERRORS = (InvalidCallbackError, ValueError, TypeError, KeyError)
_SOURCES = ("confirmation", "lookup", "pull")


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class _VersionConflict(Exception):
    """The receipt changed between our read and our guarded update: retry."""


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """What storing and applying one confirmation did.

    Attributes:
        callback_id: the stored raw body (``cb_...``).
        status: ``applied`` (a new receipt, or one completed), ``duplicate``, ``flagged``
            (a repeat that disagrees), ``ignored`` or ``invalid`` (not a confirmation).
        receipt: the receipt, as the transaction left it (``None`` when invalid).
        detail: why.
    """

    callback_id: str
    status: str
    receipt: Receipt | None
    detail: str


def receipt_state(receipt: Receipt) -> ReceiptState:
    """The state machine's view of a stored receipt."""
    source = receipt.source if receipt.source in _SOURCES else "confirmation"
    return ReceiptState(
        status=ReceiptStatus(receipt.status),
        trans_id=receipt.trans_id,
        amount=receipt.amount,
        shortcode=receipt.shortcode,
        account_reference=receipt.account_reference,
        msisdn=receipt.msisdn,
        source=source,  # type: ignore[arg-type]  # checked against _SOURCES above
        flagged=receipt.flagged,
        flag_reason=receipt.flag_reason,
    )


class ReceiptStore:
    """Receipts in the project's database.

    Args:
        policy: ``PESA_C2B_VERIFY`` (see the module docstring).
    """

    def __init__(self, *, policy: VerifyPolicy = "auto") -> None:
        self.policy: VerifyPolicy = policy

    @property
    def db(self) -> str:
        """The database alias the project's routers pick for writing pesa's models."""
        return router.db_for_write(Receipt)

    # -- confirmations ----------------------------------------------------------------------

    def ingest_confirmation(self, body: bytes, *, source_ip: str | None) -> ReceiptResult:
        """Store a raw C2B confirmation and apply it, in one transaction.

        The body is always stored (kind ``c2b_confirm``), even when it is not a confirmation
        or applying it fails (then as ``error``, and the exception is raised: no
        acknowledgement for what was not committed).
        """
        received = _now()
        callback_id = new_id("cb", now_ms=_ms(received))
        try:
            confirmation = parse_confirmation(bytes(body))
        except _PARSE_ERRORS as err:
            detail = f"invalid C2B confirmation: {err}"
            self.store_raw("c2b_confirm", body, source_ip, "invalid", detail, callback_id)
            log.warning("confirmation %s rejected: %s", callback_id, redact(detail))
            return ReceiptResult(callback_id, "invalid", None, detail)
        db = self.db
        for attempt in range(_MAX_RETRIES):
            try:
                with transaction.atomic(using=db):
                    return self._apply(db, callback_id, body, source_ip, received, confirmation)
            except (_VersionConflict, IntegrityError):
                # Two copies of one confirmation raced: the next attempt sees the winner's row.
                log.debug("receipt race, retrying (attempt %d)", attempt + 1)
            except Exception as err:
                self.store_raw("c2b_confirm", body, source_ip, "error", type(err).__name__)
                raise
        self.store_raw("c2b_confirm", body, source_ip, "error", "LedgerConflictError")
        raise LedgerConflictError("a receipt kept changing under a guarded update; gave up")

    def _apply(
        self,
        db: str,
        callback_id: str,
        body: bytes,
        source_ip: str | None,
        received: datetime,
        confirmation: Confirmation,
    ) -> ReceiptResult:
        current = (
            Receipt.objects.using(db)
            .select_for_update()
            .filter(trans_id=confirmation.trans_id)
            .first()
        )
        if current is None:
            decision = new_receipt(confirmation, verifiable=False, policy=self.policy)
            receipt = self._create(db, decision, confirmation, received)
            status = "applied"
        else:
            decision = decide_receipt(receipt_state(current), confirmation)
            receipt = self._update(db, current, decision, received)
            status = receipt_outcome(decision)
        Callback.objects.using(db).create(
            id=callback_id,
            kind="c2b_confirm",
            body=bytes(body),
            source_ip=source_ip if storable_key(source_ip, 64) else None,
            received_at=received,
            outcome=status,
            detail=storable_text(decision.detail, _MAX_TEXT),
            checkout_request_id=confirmation.trans_id,
            receipt=receipt,
        )
        if status not in ("applied", "duplicate"):
            log.warning("confirmation %s for %s: %s", callback_id, receipt.id, status)
        return ReceiptResult(callback_id, status, receipt, decision.detail)

    def _create(
        self, db: str, decision: ReceiptDecision, confirmation: Confirmation, now: datetime
    ) -> Receipt:
        changes = dict(decision.changes)
        trans_time = changes.get("trans_time")
        receipt = Receipt(
            id=new_id("rcp", now_ms=_ms(now)),
            trans_id=confirmation.trans_id,
            status=ReceiptStatus(changes["status"]).value,
            source=changes.get("source", "confirmation"),
            shortcode=confirmation.shortcode,
            amount=changes["amount"],
            account_reference=changes.get("account_reference"),
            transaction_type=changes.get("transaction_type"),
            invoice_number=changes.get("invoice_number"),
            third_party_trans_id=changes.get("third_party_trans_id"),
            msisdn=changes.get("msisdn"),
            payer_name=changes.get("payer_name"),
            trans_time=trans_time.astimezone(UTC) if isinstance(trans_time, datetime) else None,
            org_account_balance=changes.get("org_account_balance"),
            created_at=now,
            updated_at=now,
            **payer_facts(changes.get("msisdn")),
        )
        receipt.save(using=db, force_insert=True)
        self._events(db, receipt, decision, now)
        log.info(
            "receipt %s (%s, %s KES): %s",
            receipt.id,
            receipt.trans_id,
            receipt.amount,
            decision.detail,
        )
        return receipt

    def _update(
        self, db: str, current: Receipt, decision: ReceiptDecision, now: datetime
    ) -> Receipt:
        if not decision.applied:
            return current
        changes: dict[str, Any] = {
            k: v for k, v in decision.changes.items() if k not in ("verify_at", "verify_since")
        }
        if "status" in changes:
            changes["status"] = ReceiptStatus(changes["status"]).value
        if "msisdn" in changes:
            changes.update({k: v for k, v in payer_facts(changes["msisdn"]).items() if v})
        if isinstance(changes.get("trans_time"), datetime):
            changes["trans_time"] = changes["trans_time"].astimezone(UTC)
        fields = {f.name for f in Receipt._meta.concrete_fields}
        changes = {k: v for k, v in changes.items() if k in fields}
        changes["version"] = current.version + 1
        changes["updated_at"] = now
        updated = (
            Receipt.objects.using(db)
            .filter(id=current.id, version=current.version)
            .update(**changes)
        )
        if updated != 1:
            raise _VersionConflict
        for name, value in changes.items():
            setattr(current, name, value)
        self._events(db, current, decision, now)
        return current

    def _events(self, db: str, receipt: Receipt, decision: ReceiptDecision, now: datetime) -> None:
        if not decision.events:
            return
        data = receipt.to_dict()
        for event_type in decision.events:
            event = ReceiptEvent.objects.using(db).create(
                id=new_id("evt", now_ms=_ms(now)),
                receipt=receipt,
                type=str(event_type),
                detail=storable_text(decision.detail, _MAX_TEXT),
                data=data,
                created_at=now,
            )
            snapshot = copy.copy(receipt)
            transaction.on_commit(
                functools.partial(send_receipt_event, snapshot, event), using=db, robust=True
            )

    # -- raw bodies -------------------------------------------------------------------------

    def store_raw(
        self,
        kind: str,
        body: bytes,
        source_ip: str | None,
        outcome: str,
        detail: str,
        callback_id: str | None = None,
    ) -> str:
        """Keep a body raw with its outcome (a refused, invalid or validation request)."""
        received = _now()
        callback_id = callback_id or new_id("cb", now_ms=_ms(received))
        with transaction.atomic(using=self.db):
            Callback.objects.using(self.db).create(
                id=callback_id,
                kind=kind,
                body=bytes(body),
                source_ip=source_ip if storable_key(source_ip, 64) else None,
                received_at=received,
                outcome=outcome,
                detail=storable_text(detail, _MAX_TEXT),
            )
        return callback_id
