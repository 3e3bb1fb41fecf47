"""Receipts recovered by Pull Transactions: the pure decisions and the storage (once per
TransID, recovered as source ``pull``, never a second copy of a confirmed payment)."""

from __future__ import annotations

import json
from decimal import Decimal

from sqlalchemy import func, select

from pesa.ledger import (
    DecisionKind,
    Ledger,
    Pulled,
    ReceiptAccount,
    ReceiptEvent,
    ReceiptState,
    ReceiptStatus,
    decide_receipt,
    new_receipt,
)
from pesa.ledger._schema import callbacks, receipts
from pesa.testing import c2b_payment_payload

PAYBILL = ReceiptAccount("paybill", verifiable=True)


def _pulled(trans_id: str = "SG632NMUAB", amount: str = "1500.00", **more: object) -> Pulled:
    values: dict[str, object] = {
        "trans_id": trans_id,
        "amount": Decimal(amount),
        "shortcode": "600997",
        "account_reference": "INV-1042",
        "msisdn": "254708374149",
    }
    values.update(more)
    return Pulled(**values)  # type: ignore[arg-type]


def _state(status: ReceiptStatus, amount: str = "1500.00") -> ReceiptState:
    return ReceiptState(status, "SG632NMUAB", Decimal(amount), "600997", "INV-1042")


def test_an_unknown_trans_id_is_recovered_confirmed() -> None:
    decision = new_receipt(_pulled(), verifiable=False)
    assert decision.status is ReceiptStatus.CONFIRMED
    assert decision.changes["source"] == "pull"
    assert decision.events == (ReceiptEvent.RECEIVED, ReceiptEvent.CONFIRMED)


def test_a_receipt_waiting_for_transaction_status_is_confirmed_by_the_list() -> None:
    for status in (ReceiptStatus.RECEIVED, ReceiptStatus.UNVERIFIED):
        decision = decide_receipt(_state(status), _pulled())
        assert decision.status is ReceiptStatus.CONFIRMED and decision.applied


def test_a_confirmed_receipt_is_a_duplicate_and_a_disagreement_a_flag() -> None:
    assert decide_receipt(_state(ReceiptStatus.CONFIRMED), _pulled()).kind is (
        DecisionKind.DUPLICATE
    )
    other = decide_receipt(_state(ReceiptStatus.CONFIRMED), _pulled(amount="15.00"))
    assert other.events == (ReceiptEvent.FLAGGED,) and other.status is ReceiptStatus.CONFIRMED
    refuted = decide_receipt(_state(ReceiptStatus.REFUTED), _pulled())
    assert refuted.events == (ReceiptEvent.FLAGGED,) and refuted.status is ReceiptStatus.REFUTED


async def test_pulled_twice_is_one_receipt_and_a_confirmation_after_it_adds_none(
    ledger: Ledger,
) -> None:
    first = await ledger.receipts.ingest_pulled(_pulled(), account=PAYBILL)
    again = await ledger.receipts.ingest_pulled(_pulled(), account=PAYBILL)
    assert first.status == "applied" and again.status == "duplicate"
    assert first.receipt is not None and first.receipt.source == "pull"
    assert first.receipt.status is ReceiptStatus.CONFIRMED
    assert first.receipt.phone == "254708374149"
    late = c2b_payment_payload(trans_id="SG632NMUAB", amount="1500.00", shortcode="600997")
    late["BillRefNumber"] = "INV-1042"
    outcome = await ledger.receipts.ingest_confirmation(
        json.dumps(late).encode(), source_ip=None, account_for=lambda _: PAYBILL
    )
    assert outcome.status in ("applied", "duplicate")  # completes the record, never a copy
    async with ledger.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(receipts))).scalar_one()
        kinds = (await conn.execute(select(callbacks.c.kind, callbacks.c.outcome))).all()
    assert count == 1
    assert sorted(k for k, _ in kinds) == ["c2b_confirm", "c2b_pull", "c2b_pull"]
