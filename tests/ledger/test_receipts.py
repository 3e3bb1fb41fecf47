"""Receipts in storage: confirmations applied once, Daraja's answers, expected payments settled,
phone filters that cope with masked and hashed MSISDNs, hostile bodies stored and refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from pesa import ValidationError
from pesa.ledger import (
    ExpectedStatus,
    IdempotencyConflictError,
    InvalidTransitionError,
    Ledger,
    ReceiptAccount,
    ReceiptBook,
    ReceiptStatus,
)
from pesa.ledger._schema import callbacks, receipts
from pesa.testing import c2b_payment_payload, transaction_status_payload

from .conftest import ManualClock

VERIFIABLE = ReceiptAccount("paybill", verifiable=True)
UNVERIFIABLE = ReceiptAccount("paybill", verifiable=False)


def confirmation(
    trans_id: str = "RKL51ZDR4F",
    amount: str = "1500.00",
    reference: str = "INV-1042",
    *,
    msisdn: str = "2547 ***** 126",
    shortcode: str = "600997",
    **overrides: Any,
) -> bytes:
    body = c2b_payment_payload(
        trans_id=trans_id,
        amount=amount,
        shortcode=shortcode,
        bill_ref_number=reference,
        msisdn=msisdn,
    )
    body.update(overrides)
    return json.dumps(body).encode()


def account_for(account: ReceiptAccount) -> Any:
    return lambda shortcode: account if shortcode == "600997" else ReceiptAccount(None, False)


async def event_types(ledger: Ledger, subject_id: str) -> list[str]:
    page = await ledger.list_events(subject_id=subject_id, limit=100)
    return [e.type for e in page.items]


async def answer(
    book: ReceiptBook, trans_id: str, body: dict[str, Any], purpose: str = "verify"
) -> Any:
    query, nonce = await book.start_query(
        purpose=purpose, trans_id=trans_id, account="paybill", shortcode="600997"
    )
    outcome = await book.ingest_status_result(nonce, json.dumps(body).encode(), source_ip=None)
    return query, outcome


async def test_a_confirmation_is_stored_raw_and_applied_once(
    ledger: Ledger, clock: ManualClock
) -> None:
    book = ledger.receipts
    body = confirmation()
    first = await book.ingest_confirmation(
        body, source_ip="196.201.214.200", account_for=account_for(VERIFIABLE)
    )
    assert first.status == "applied" and first.receipt is not None
    receipt = first.receipt
    assert (receipt.status, receipt.amount, receipt.account) == (
        ReceiptStatus.RECEIVED,
        Decimal("1500.00"),
        "paybill",
    )
    assert receipt.verify_at is not None  # Transaction Status is asked at once
    clock.advance(seconds=1)
    again = await book.ingest_confirmation(
        body, source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert again.status == "duplicate" and again.receipt is not None
    assert again.receipt.id == receipt.id
    stored = await book.list_callbacks(receipt.id)
    assert [(c.kind, c.outcome) for c in stored] == [
        ("c2b_confirm", "applied"),
        ("c2b_confirm", "duplicate"),
    ]
    assert stored[0].body == body and stored[0].source_ip == "196.201.214.200"
    assert await event_types(ledger, receipt.id) == ["receipt.received", "receipt.unmatched"]
    event = (await ledger.list_events(subject_id=receipt.id)).items[0]
    assert event.payment_id is None
    data = event.to_dict()["data"]
    assert data["receipt"]["trans_id"] == "RKL51ZDR4F" and data["receipt"]["verified"] is False


async def test_a_repeat_that_disagrees_is_flagged_not_counted(ledger: Ledger) -> None:
    book = ledger.receipts
    first = await book.ingest_confirmation(
        confirmation(), source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert first.receipt is not None
    forged = await book.ingest_confirmation(
        confirmation(amount="150000.00"), source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert forged.status == "flagged" and forged.receipt is not None
    assert forged.receipt.amount == Decimal("1500.00") and forged.receipt.flagged
    assert "amount 150000.00" in (forged.receipt.flag_reason or "")
    assert await event_types(ledger, first.receipt.id) == [
        "receipt.received",
        "receipt.unmatched",
        "receipt.flagged",
    ]


async def test_concurrent_copies_of_one_confirmation_make_one_receipt(ledger: Ledger) -> None:
    book = ledger.receipts
    body = confirmation()
    outcomes = await asyncio.gather(
        *(
            book.ingest_confirmation(body, source_ip=None, account_for=account_for(VERIFIABLE))
            for _ in range(12)
        )
    )
    assert sorted(o.status for o in outcomes) == ["applied"] + ["duplicate"] * 11
    async with ledger.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(receipts))).scalar_one()
        stored = (await conn.execute(select(func.count()).select_from(callbacks))).scalar_one()
    assert (count, stored) == (1, 12)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"TransID": "A" * 40}, "TransID"),
        ({"TransID": "RKL5 ZDR4F"}, "TransID"),
        ({"TransAmount": "1e20"}, "TransAmount"),
        ({"TransAmount": "-5.00"}, "TransAmount"),
        ({"TransAmount": "5.001"}, "TransAmount"),
        ({"BusinessShortCode": "60099x"}, "BusinessShortCode"),
        ({"BillRefNumber": "INV\u00001042"}, "NUL"),
        ({"BillRefNumber": "R" * 65}, "longer than 64"),
        ({"FirstName": "\ud800"}, "invalid Unicode"),
        ({"TransTime": "yesterday"}, "TransTime"),
    ],
)
async def test_a_body_daraja_never_sends_is_stored_and_refused(
    ledger: Ledger, overrides: dict[str, Any], why: str
) -> None:
    body = json.dumps({**c2b_payment_payload(shortcode="600997"), **overrides}).encode()
    outcome = await ledger.receipts.ingest_confirmation(
        body, source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert outcome.status == "invalid" and outcome.receipt is None
    assert why in outcome.detail
    async with ledger.engine.connect() as conn:
        rows = (await conn.execute(select(callbacks.c.body, callbacks.c.outcome))).all()
    assert [(bytes(r.body), r.outcome) for r in rows] == [(body, "invalid")]


async def test_not_json_is_stored_and_refused(ledger: Ledger) -> None:
    outcome = await ledger.receipts.ingest_confirmation(
        b"\xff<xml/>", source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert outcome.status == "invalid"


async def test_a_confirmation_for_an_unknown_shortcode_is_kept_and_flagged(ledger: Ledger) -> None:
    outcome = await ledger.receipts.ingest_confirmation(
        confirmation(shortcode="123456"), source_ip=None, account_for=account_for(VERIFIABLE)
    )
    assert outcome.status == "applied" and outcome.receipt is not None
    assert outcome.receipt.account is None and outcome.receipt.flagged
    assert "no configured account has shortcode 123456" in (outcome.receipt.flag_reason or "")


class TestExpectedPayments:
    async def test_settled_only_once_daraja_confirms_the_receipt(self, ledger: Ledger) -> None:
        book = ledger.receipts
        expected, created = await book.create_expected_payment(
            "inv-1042", "paybill", "INV-1042", 1500
        )
        assert created and expected.status is ExpectedStatus.OPEN
        received = await book.ingest_confirmation(
            confirmation(reference="inv 1042"), source_ip=None, account_for=account_for(VERIFIABLE)
        )
        assert received.receipt is not None and received.expected_payment is not None
        assert received.receipt.expected_payment_id == expected.id
        pending = received.expected_payment
        assert (pending.status, pending.pending_amount, pending.paid_amount) == (
            ExpectedStatus.OPEN,
            Decimal(1500),
            Decimal(0),
        )
        query, outcome = await answer(
            book,
            "RKL51ZDR4F",
            transaction_status_payload(
                trans_id="RKL51ZDR4F", amount=1500.0, credit_party="600997 - Shop"
            ),
        )
        assert outcome.status == "applied"
        assert outcome.receipt is not None and outcome.receipt.status is ReceiptStatus.CONFIRMED
        paid = await book.get_expected_payment(expected.id)
        assert paid is not None
        assert (paid.status, paid.paid_amount, paid.pending_amount) == (
            ExpectedStatus.PAID,
            Decimal(1500),
            Decimal(0),
        )
        assert not paid.flagged
        assert await event_types(ledger, expected.id) == ["expected_payment.paid"]
        assert await event_types(ledger, outcome.receipt.id) == [
            "receipt.received",
            "receipt.confirmed",
        ]
        stored = await book.get_query(query.id)
        assert stored is not None and stored.outcome == "confirmed"
        # The full phone came with Daraja's answer: a phone filter finds the receipt.
        assert outcome.receipt.phone == "254708374149"

    async def test_under_and_over_payments_are_visible_states(self, ledger: Ledger) -> None:
        book = ledger.receipts
        expected, _ = await book.create_expected_payment(None, "paybill", "ORDER-7", 1000)
        steps = [("RCPT000001", "400.00"), ("RCPT000002", "600.00"), ("RCPT000003", "50.00")]
        for trans_id, amount in steps:
            await book.ingest_confirmation(
                confirmation(trans_id, amount, "order-7"),
                source_ip=None,
                account_for=account_for(UNVERIFIABLE),
            )
        settled = await book.get_expected_payment(expected.id)
        assert settled is not None
        assert (settled.status, settled.paid_amount) == (ExpectedStatus.OVERPAID, Decimal(1050))
        assert settled.to_dict()["overpaid_amount"] == 50
        assert await event_types(ledger, expected.id) == [
            "expected_payment.partially_paid",
            "expected_payment.flagged",
            "expected_payment.paid",
            "expected_payment.overpaid",
        ]
        # No initiator: counted, but flagged as not confirmed by Daraja.
        assert settled.flagged and "without Daraja's confirmation" in (settled.flag_reason or "")

    async def test_verification_off_counts_without_a_flag(
        self, database_url: str, clock: ManualClock
    ) -> None:
        ledger = await Ledger.open(database_url, clock=clock, c2b_verify="never")
        try:
            await ledger.migrate()
            expected, _ = await ledger.receipts.create_expected_payment(None, "paybill", "A1", 10)
            outcome = await ledger.receipts.ingest_confirmation(
                confirmation(amount="10.00", reference="A1"),
                source_ip=None,
                account_for=account_for(VERIFIABLE),
            )
            assert outcome.receipt is not None
            assert outcome.receipt.status is ReceiptStatus.UNVERIFIED
            paid = await ledger.receipts.get_expected_payment(expected.id)
            assert paid is not None and paid.status is ExpectedStatus.PAID and not paid.flagged
        finally:
            await ledger.close()

    async def test_a_refuted_confirmation_never_pays_and_flags(self, ledger: Ledger) -> None:
        book = ledger.receipts
        expected, _ = await book.create_expected_payment(None, "paybill", "INV-9", 1500)
        forged = await book.ingest_confirmation(
            confirmation("FAKE000001", reference="INV-9"),
            source_ip=None,
            account_for=account_for(VERIFIABLE),
        )
        assert forged.receipt is not None
        _, outcome = await answer(book, "FAKE000001", transaction_status_payload(result_code=2032))
        assert outcome.receipt is not None and outcome.receipt.status is ReceiptStatus.REFUTED
        after = await book.get_expected_payment(expected.id)
        assert after is not None
        assert (after.status, after.paid_amount, after.pending_amount) == (
            ExpectedStatus.OPEN,
            Decimal(0),
            Decimal(0),
        )
        assert after.flagged and "possibly forged" in (after.flag_reason or "")
        assert "receipt.refuted" in await event_types(ledger, forged.receipt.id)

    async def test_money_that_came_first_is_matched_when_the_order_is_entered(
        self, ledger: Ledger
    ) -> None:
        book = ledger.receipts
        early = await book.ingest_confirmation(
            confirmation(reference="LATE-1", amount="20.00"),
            source_ip=None,
            account_for=account_for(UNVERIFIABLE),
        )
        assert early.receipt is not None and early.receipt.expected_payment_id is None
        expected, _ = await book.create_expected_payment(None, "paybill", "late-1", 20)
        assert expected.status is ExpectedStatus.PAID
        receipt = await book.get_receipt(early.receipt.id)
        assert receipt is not None and receipt.expected_payment_id == expected.id
        assert await event_types(ledger, receipt.id) == [
            "receipt.received",
            "receipt.unmatched",
            "receipt.matched",
        ]

    async def test_cancelled_payments_take_no_new_money(self, ledger: Ledger) -> None:
        book = ledger.receipts
        expected, _ = await book.create_expected_payment(None, "paybill", "GONE", 100)
        cancelled = await book.cancel_expected_payment(expected.id, "order withdrawn")
        assert cancelled.status is ExpectedStatus.CANCELLED
        assert (await book.cancel_expected_payment(expected.id)).status is ExpectedStatus.CANCELLED
        late = await book.ingest_confirmation(
            confirmation(reference="GONE", amount="100.00"),
            source_ip=None,
            account_for=account_for(UNVERIFIABLE),
        )
        assert late.receipt is not None and late.receipt.expected_payment_id is None
        assert "receipt.unmatched" in await event_types(ledger, late.receipt.id)
        paid, _ = await book.create_expected_payment(None, "paybill", "KEEP", 5)
        await book.ingest_confirmation(
            confirmation("KEEP000001", "5.00", "KEEP"),
            source_ip=None,
            account_for=account_for(UNVERIFIABLE),
        )
        with pytest.raises(InvalidTransitionError):
            await book.cancel_expected_payment(paid.id)

    async def test_idempotent_creation(self, ledger: Ledger) -> None:
        book = ledger.receipts
        first, _ = await book.create_expected_payment("k", "paybill", "R1", 10, metadata={"a": 1})
        again, created = await book.create_expected_payment(
            "k", "paybill", "r1", 10, metadata={"a": 1}
        )
        assert again.id == first.id and not created
        with pytest.raises(IdempotencyConflictError):
            await book.create_expected_payment("k", "paybill", "R1", 11)
        for bad in (
            {"amount": 0},
            {"amount": 1.5},
            {"account_reference": " "},
            {"account_reference": "x" * 65},
        ):
            values: dict[str, Any] = {"account_reference": "R", "amount": 10, **bad}
            with pytest.raises(ValidationError):
                await book.create_expected_payment(
                    None, "paybill", values["account_reference"], values["amount"]
                )


async def test_a_forged_first_copy_with_an_inflated_amount_cannot_hide_the_real_money(
    ledger: Ledger,
) -> None:
    book = ledger.receipts
    expected, _ = await book.create_expected_payment(None, "paybill", "INV-5", 1500)
    await book.ingest_confirmation(
        confirmation("REAL000001", "150000.00", "INV-5"),
        source_ip=None,
        account_for=account_for(VERIFIABLE),
    )
    _, outcome = await answer(
        book,
        "REAL000001",
        transaction_status_payload(
            trans_id="REAL000001", amount=1500, credit_party="600997 - Shop"
        ),
    )
    receipt = outcome.receipt
    assert receipt is not None and receipt.status is ReceiptStatus.CONFIRMED
    assert receipt.amount == Decimal(1500) and receipt.flagged
    paid = await book.get_expected_payment(expected.id)
    assert paid is not None and (paid.status, paid.paid_amount) == (ExpectedStatus.PAID, 1500)
    genuine = await book.ingest_confirmation(
        confirmation("REAL000001", "1500.00", "INV-5"),
        source_ip=None,
        account_for=account_for(VERIFIABLE),
    )
    assert genuine.status == "duplicate"


class TestStatusResults:
    async def test_a_result_for_no_query_changes_nothing(self, ledger: Ledger) -> None:
        outcome = await ledger.receipts.ingest_status_result(
            "guessed-nonce", json.dumps(transaction_status_payload()).encode(), source_ip=None
        )
        assert outcome.status == "unknown_query" and outcome.receipt is None

    async def test_each_query_is_answered_once(self, ledger: Ledger) -> None:
        book = ledger.receipts
        await book.ingest_confirmation(
            confirmation(), source_ip=None, account_for=account_for(VERIFIABLE)
        )
        query, nonce = await book.start_query(
            purpose="verify", trans_id="RKL51ZDR4F", account="paybill", shortcode="600997"
        )
        body = json.dumps(transaction_status_payload(amount=1500)).encode()
        first = await book.ingest_status_result(nonce, body, source_ip=None)
        second = await book.ingest_status_result(nonce, body, source_ip=None)
        assert (first.status, second.status) == ("applied", "duplicate")
        bad = await book.ingest_status_result(nonce, b"{}", source_ip=None)
        assert bad.status == "invalid"

    async def test_a_lookup_records_a_receipt_no_confirmation_announced(
        self, ledger: Ledger
    ) -> None:
        book = ledger.receipts
        expected, _ = await book.create_expected_payment(None, "paybill", "INV-77", 250)
        started, nonce = await book.start_lookup(
            "sg67qk2m1z", account="paybill", shortcode="600997", account_reference="INV-77"
        )
        assert started.query is not None and nonce is not None and started.receipt is None
        assert started.query.trans_id == "SG67QK2M1Z"
        again, no_nonce = await book.start_lookup(
            "SG67QK2M1Z", account="paybill", shortcode="600997"
        )
        assert again.query is not None and again.query.id == started.query.id and no_nonce is None
        body = transaction_status_payload(trans_id="SG67QK2M1Z", amount=250.0)
        outcome = await book.ingest_status_result(nonce, json.dumps(body).encode(), source_ip=None)
        receipt = outcome.receipt
        assert receipt is not None and receipt.status is ReceiptStatus.CONFIRMED
        assert (receipt.source, receipt.account_reference, receipt.phone) == (
            "lookup",
            "INV-77",
            "254708374149",
        )
        assert receipt.payer_name == "John Doe"
        paid = await book.get_expected_payment(expected.id)
        assert paid is not None and paid.status is ExpectedStatus.PAID
        known, _ = await book.start_lookup("SG67QK2M1Z", account="paybill", shortcode="600997")
        assert known.query is None and known.receipt is not None
        # The confirmation that was lost arrives at last: it completes the record.
        late = await book.ingest_confirmation(
            confirmation("SG67QK2M1Z", "250.00", "INV-77"),
            source_ip=None,
            account_for=account_for(VERIFIABLE),
        )
        assert late.status == "applied" and late.receipt is not None
        assert late.receipt.msisdn == "2547 ***** 126"
        assert late.receipt.status is ReceiptStatus.CONFIRMED
        with pytest.raises(ValidationError, match="trans_id"):
            await book.start_lookup("NOT A CODE", account="paybill", shortcode="600997")

    async def test_a_lookup_of_a_receipt_daraja_does_not_know_records_nothing(
        self, ledger: Ledger
    ) -> None:
        book = ledger.receipts
        started, nonce = await book.start_lookup(
            "NOSUCH0001", account="paybill", shortcode="600997"
        )
        assert nonce is not None and started.query is not None
        body = transaction_status_payload(result_code=2032)
        outcome = await book.ingest_status_result(nonce, json.dumps(body).encode(), source_ip=None)
        assert outcome.receipt is None and outcome.status == "ignored"
        query = await book.get_query(started.query.id)
        assert query is not None and query.outcome == "not_found"
        assert await book.get_receipt_by_trans_id("NOSUCH0001") is None


class TestVerification:
    async def test_claimed_rescheduled_and_abandoned_with_a_flag(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        book = ledger.receipts
        outcome = await book.ingest_confirmation(
            confirmation(), source_ip=None, account_for=account_for(VERIFIABLE)
        )
        assert outcome.receipt is not None
        claimed = await book.claim_for_verification(limit=10, lease=timedelta(seconds=60))
        assert [r.id for r in claimed] == [outcome.receipt.id]
        assert await book.claim_for_verification(limit=10, lease=timedelta(seconds=60)) == []
        await book.schedule_verification(outcome.receipt.id, clock.now() + timedelta(seconds=30))
        assert await book.claim_for_verification(limit=10, lease=timedelta(seconds=60)) == []
        clock.advance(seconds=31)
        assert len(await book.claim_for_verification(limit=10, lease=timedelta(seconds=60))) == 1
        abandoned = await book.abandon_verification(outcome.receipt.id, "no Result in 900 s")
        assert abandoned.status is ReceiptStatus.RECEIVED and abandoned.flagged
        assert abandoned.verify_at is None
        clock.advance(seconds=120)
        assert await book.claim_for_verification(limit=10, lease=timedelta(seconds=60)) == []


class TestPhoneFilters:
    async def test_masked_hashed_and_full_numbers_are_found_by_phone(self, ledger: Ledger) -> None:
        book = ledger.receipts
        number = "254708374149"
        hashed = hashlib.sha256(number.encode()).hexdigest()
        other = hashlib.sha256(b"254711000001").hexdigest()
        for trans_id, msisdn in (
            ("MASKED0001", "25470****149"),
            ("MASKED0002", "2547 ***** 149"),
            ("HASHED0001", hashed),
            ("HASHED0002", other),
            ("MASKED0003", "25471****001"),
            ("FULLNR0001", "254708374149"),
        ):
            await book.ingest_confirmation(
                confirmation(trans_id, msisdn=msisdn),
                source_ip=None,
                account_for=account_for(UNVERIFIABLE),
            )
        for given in ("0708374149", "+254 708 374 149", "254708374149"):
            found = await book.list_receipts(phone=given)
            assert sorted(r.trans_id for r in found.items) == [
                "FULLNR0001",
                "HASHED0001",
                "MASKED0001",
                "MASKED0002",
            ]
        with pytest.raises(ValidationError, match="phone"):
            await book.list_receipts(phone="12345")

    async def test_filters_and_pages(self, ledger: Ledger, clock: ManualClock) -> None:
        book = ledger.receipts
        for n in range(5):
            clock.advance(seconds=1)
            await book.ingest_confirmation(
                confirmation(f"PAGE00000{n}", reference="A" if n % 2 else "B"),
                source_ip=None,
                account_for=account_for(UNVERIFIABLE),
            )
        first = await book.list_receipts(limit=2)
        second = await book.list_receipts(limit=2, cursor=first.next_cursor)
        third = await book.list_receipts(limit=2, cursor=second.next_cursor)
        seen = [r.trans_id for r in first.items + second.items + third.items]
        assert seen == [f"PAGE00000{n}" for n in range(4, -1, -1)]
        assert third.next_cursor is None
        only_a = await book.list_receipts(account_reference=" a ")
        assert {r.trans_id for r in only_a.items} == {"PAGE000001", "PAGE000003"}
        assert (await book.list_receipts(account="shop")).items == []
        for bad in ({"cursor": "x\x00"}, {"status": "paid"}, {"limit": 0}):
            with pytest.raises(ValidationError):
                await book.list_receipts(**bad)  # type: ignore[arg-type]
