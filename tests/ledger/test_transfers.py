"""Payouts and refunds in the ledger: intents, Results stored raw and applied once, status
queries matched by Daraja's ids, batches, and refunds that never exceed what was paid."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from pesa import ValidationError
from pesa.ledger import (
    IdempotencyConflictError,
    Ledger,
    PaymentNotFoundError,
    PayoutSpec,
    ReceiptNotFoundError,
    RefundNotAllowedError,
    TransferStatus,
)
from pesa.ledger._schema import callbacks

from .conftest import ManualClock, stk_callback

PHONE = "0708374149"
LEASE = timedelta(seconds=60)
S = TransferStatus


def spec(amount: int = 1500, **fields: Any) -> PayoutSpec:
    values: dict[str, Any] = {
        "phone": PHONE,
        "amount": amount,
        "command_id": "SalaryPayment",
        "remarks": "Salary",
        "shortcode": "600000",
    }
    values.update(fields)
    return PayoutSpec(**values)


def b2c_result(
    ocid: str,
    conversation_id: str | None,
    code: int = 0,
    *,
    amount: Any = 1500,
    receipt: str = "SG632NMUAB",
    recipient: str = "254708374149 - JOHN DOE",
) -> bytes:
    result: dict[str, Any] = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": "The service request is processed successfully." if code == 0 else "No",
        "OriginatorConversationID": ocid,
        "ConversationID": conversation_id,
        "TransactionID": receipt if code == 0 else "OAK0000000",
    }
    if code == 0:
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "TransactionAmount", "Value": amount},
                {"Key": "TransactionReceipt", "Value": receipt},
                {"Key": "ReceiverPartyPublicName", "Value": recipient},
                {"Key": "TransactionCompletedDateTime", "Value": "29.11.2026 12:01:15"},
            ]
        }
    return json.dumps({"Result": result}).encode()


def status_result(
    query_cid: str, ocid: str, *, code: int = 0, status: str = "Completed", amount: Any = 1500
) -> bytes:
    result: dict[str, Any] = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": "ok",
        "OriginatorConversationID": "TS-1",
        "ConversationID": query_cid,
        "TransactionID": "SG632NMUAB" if code == 0 else "OAK0000000",
    }
    if code == 0:
        result["ResultParameters"] = {
            "ResultParameter": [
                {"Key": "OriginatorConversationID", "Value": ocid},
                {"Key": "TransactionStatus", "Value": status},
                {"Key": "Amount", "Value": amount},
                {"Key": "ReceiptNo", "Value": "SG632NMUAB"},
                {"Key": "CreditPartyName", "Value": "254708374149 - JOHN DOE"},
            ]
        }
    return json.dumps({"Result": result}).encode()


async def _stored(ledger: Ledger, callback_id: str | None) -> tuple[str, str]:
    async with ledger.engine.connect() as conn:
        row = (
            await conn.execute(
                select(callbacks.c.kind, callbacks.c.outcome).where(callbacks.c.id == callback_id)
            )
        ).one()
    return row[0], row[1]


class TestPayoutIntents:
    async def test_create_is_idempotent_and_a_changed_body_conflicts(self, ledger: Ledger) -> None:
        payout, created = await ledger.payouts.create("salary-42", spec(), claim=LEASE)
        assert created and payout.status is S.CREATED and payout.attempts == 1
        assert payout.originator_conversation_id == payout.id
        assert payout.phone == "254708374149"
        again, created = await ledger.payouts.create("salary-42", spec(), claim=LEASE)
        assert not created and again.id == payout.id
        with pytest.raises(IdempotencyConflictError):
            await ledger.payouts.create("salary-42", spec(1600))

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"amount": 0}, "amount"),
            ({"amount": 10.5}, "amount"),
            ({"command_id": "Pay"}, "command"),
            ({"remarks": "x"}, "remarks"),
            ({"phone": "0808374149"}, "phone"),
            ({"shortcode": "6OOOOO"}, "shortcode"),
        ],
    )
    async def test_bad_fields_are_refused_naming_them(
        self, ledger: Ledger, fields: dict[str, Any], field: str
    ) -> None:
        with pytest.raises(ValidationError) as caught:
            await ledger.payouts.create(None, spec(**fields))
        assert caught.value.field == field
        assert (await ledger.payouts.page())[0] == []

    async def test_a_batch_is_stored_once_and_resumes(self, ledger: Ledger) -> None:
        rows = [spec(100 + i, phone=f"07000000{i:02d}") for i in range(5)]
        summary, created = await ledger.payouts.create_batch("nov", rows)
        assert created == 5 and summary.by_status["created"] == 5
        summary, created = await ledger.payouts.create_batch("nov", rows)
        assert created == 0 and summary.total == 5
        payouts, _ = await ledger.payouts.page(batch_id="nov")
        assert [p.batch_row for p in payouts] == [0, 1, 2, 3, 4]
        assert {p.idempotency_key for p in payouts} == {f"batch:nov:{i}" for i in range(5)}
        with pytest.raises(IdempotencyConflictError):
            await ledger.payouts.create_batch("nov", [spec(1), *rows[1:]])

    async def test_a_bad_batch_row_stores_nothing(self, ledger: Ledger) -> None:
        with pytest.raises(ValidationError) as caught:
            await ledger.payouts.create_batch("bad", [spec(), spec(remarks="")])
        assert caught.value.field == "rows[1].remarks"
        assert (await ledger.payouts.batch_summary("bad")).total == 0

    async def test_claims_count_an_attempt_and_skip_claimed_rows(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await ledger.payouts.create_batch("b", [spec(10 + i) for i in range(3)])
        first = await ledger.payouts.claim_for_sending(limit=2, lease=LEASE)
        second = await ledger.payouts.claim_for_sending(limit=5, lease=LEASE)
        assert len(first) == 2 and len(second) == 1
        assert {p.id for p in first}.isdisjoint({p.id for p in second})
        assert all(p.attempts == 1 for p in [*first, *second])
        assert await ledger.payouts.claim_for_sending(limit=5, lease=LEASE) == []
        # A sender that died: its claim runs out and the payout is sent again, counted.
        clock.advance(seconds=61)
        again = await ledger.payouts.claim_for_sending(limit=5, lease=LEASE)
        assert len(again) == 3 and all(p.attempts == 2 for p in again)

    async def test_first_sent_at_is_the_first_attempt_s_and_later_ones_keep_it(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await ledger.payouts.create_batch("b", [spec()])
        clock.advance(seconds=90)  # queued behind the pace
        (first,) = await ledger.payouts.claim_for_sending(limit=1, lease=LEASE)
        assert first.attempts == 1 and first.first_sent_at == clock.now()
        assert first.first_sent_at != first.created_at
        stored = await ledger.payouts.get(first.id)
        assert stored is not None and stored.first_sent_at == first.first_sent_at
        # The sender died holding the claim: sent again, counted, the first send's time kept.
        clock.advance(seconds=61)
        (again,) = await ledger.payouts.claim_for_sending(limit=1, lease=LEASE)
        assert again.attempts == 2 and again.first_sent_at == first.first_sent_at
        # A re-send handed back unsent gives back its attempt, not the first send's time.
        released = await ledger.payouts.release_send(again.id, clock.now())
        assert released.attempts == 1 and released.first_sent_at == first.first_sent_at
        assert released.to_dict()["first_sent_at"] == first.first_sent_at.isoformat()

    async def test_a_payout_sent_at_once_and_a_refund_count_from_their_creation(
        self, ledger: Ledger
    ) -> None:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        assert payout.attempts == 1 and payout.first_sent_at == payout.created_at
        assert await ledger.payouts.get(payout.id) == payout
        refund, _ = await ledger.refunds.create(
            None,
            await _paid_payment(ledger),
            None,
            remarks="Refund",
            receiver_party="174379",
            partial=False,
            claim=LEASE,
        )
        assert refund.attempts == 1 and refund.first_sent_at == refund.created_at
        assert await ledger.refunds.get(refund.id) == refund

    async def test_a_send_that_never_left_is_handed_back_uncounted(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await ledger.payouts.create_batch("b", [spec()])
        (payout,) = await ledger.payouts.claim_for_sending(limit=1, lease=LEASE)
        released = await ledger.payouts.release_send(payout.id, clock.now() + timedelta(seconds=5))
        assert released.attempts == 0 and released.first_sent_at is None
        assert await ledger.payouts.claim_for_sending(limit=1, lease=LEASE) == []
        clock.advance(seconds=5)
        (sent,) = await ledger.payouts.claim_for_sending(limit=1, lease=LEASE)
        # The deadline counts from the send that left, not from the one handed back.
        assert sent.first_sent_at == clock.now()

    async def test_status_checks_wait_from_the_first_send_not_the_creation(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await ledger.payouts.create_batch("b", [spec()])
        clock.advance(seconds=600)  # queued behind the pace for ten minutes
        (sent,) = await ledger.payouts.claim_for_sending(limit=1, lease=LEASE)
        await ledger.payouts.mark_accepted(sent.id, "AG_LATE", sent.id)
        wait = timedelta(seconds=30)
        # Created ten minutes ago, but Daraja was asked just now: not due for a check yet.
        assert await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE) == []
        clock.advance(seconds=30)
        (due,) = await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE)
        assert due.id == sent.id


class TestResults:
    async def _pending(self, ledger: Ledger) -> Any:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        return await ledger.payouts.mark_accepted(payout.id, "AG_1", payout.id)

    async def test_a_matching_result_settles_once_and_a_replay_is_a_duplicate(
        self, ledger: Ledger
    ) -> None:
        payout = await self._pending(ledger)
        body = b2c_result(payout.id, "AG_1")
        outcome = await ledger.payouts.ingest_result(body, source_ip="196.201.214.200")
        assert outcome.status == "applied"
        assert outcome.subject is not None and outcome.subject.status is S.SUCCEEDED
        assert outcome.subject.counterparty == "254708374149 - JOHN DOE"
        replay = await ledger.payouts.ingest_result(body, source_ip="203.0.113.9")
        assert replay.status == "duplicate"
        assert await _stored(ledger, replay.callback_id) == ("b2c_result", "duplicate")
        events = (await ledger.list_events(subject_id=payout.id)).items
        assert [e.type for e in events] == ["payout.pending", "payout.succeeded"]
        assert events[-1].to_dict()["data"]["payout"]["receipt"] == "SG632NMUAB"

    async def test_a_forged_result_with_another_conversation_id_changes_nothing(
        self, ledger: Ledger
    ) -> None:
        payout = await self._pending(ledger)
        forged = await ledger.payouts.ingest_result(
            b2c_result(payout.id, "AG_forged"), source_ip=None
        )
        assert forged.status == "invalid"
        assert (await ledger.payouts.get(payout.id)).status is S.PENDING  # type: ignore[union-attr]
        failure = await ledger.payouts.ingest_result(
            b2c_result(payout.id, "AG_forged", 1), source_ip=None
        )
        assert failure.status == "invalid"
        assert (await ledger.payouts.get(payout.id)).status is S.PENDING  # type: ignore[union-attr]

    async def test_bodies_that_are_not_results_are_kept_raw(self, ledger: Ledger) -> None:
        for body in (b"not json", b"{}", json.dumps({"Result": {"ResultCode": "\u0000"}}).encode()):
            outcome = await ledger.payouts.ingest_result(body, source_ip=None)
            assert outcome.status == "invalid"
            assert await _stored(ledger, outcome.callback_id) == ("b2c_result", "invalid")
        unknown = await ledger.payouts.ingest_result(b2c_result("po_nobody", "AG"), source_ip=None)
        assert unknown.status == "unknown_payment"

    async def test_a_result_before_the_answer_is_applied_when_the_answer_is_recorded(
        self, ledger: Ledger
    ) -> None:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        early = await ledger.payouts.ingest_result(b2c_result(payout.id, "AG_9"), source_ip=None)
        assert early.status == "unverified"
        accepted = await ledger.payouts.mark_accepted(payout.id, "AG_9", payout.id)
        assert accepted.status is S.SUCCEEDED and accepted.receipt == "SG632NMUAB"
        assert accepted.evidence_callback_id is None and accepted.verify_at is None
        assert await _stored(ledger, early.callback_id) == ("b2c_result", "applied")

    async def test_a_queue_timeout_makes_the_payout_unknown(self, ledger: Ledger) -> None:
        await self._pending(ledger)
        body = json.dumps(
            {"Result": {"ResultCode": 1, "ResultDesc": "timeout", "ConversationID": "AG_1"}}
        ).encode()
        outcome = await ledger.payouts.ingest_timeout(body, source_ip=None)
        assert outcome.status == "applied"
        assert outcome.subject is not None and outcome.subject.status is S.UNKNOWN
        assert outcome.subject.verify_at is not None


class TestStatusQueries:
    async def test_an_answer_is_matched_by_the_query_s_ids_and_applied_once(
        self, ledger: Ledger
    ) -> None:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        await ledger.payouts.mark_unknown(payout.id, "ReadTimeout")
        await ledger.status_queries.record(
            payout.id, by_originator_id=payout.id, outcome="sent", conversation_id="AG_TS"
        )
        stranger = await ledger.status_queries.ingest_result(
            status_result("AG_unknown", payout.id), source_ip=None
        )
        assert stranger.status == "unknown_payment"
        outcome = await ledger.status_queries.ingest_result(
            status_result("AG_TS", payout.id), source_ip=None
        )
        assert outcome.status == "applied"
        assert outcome.subject is not None and outcome.subject.status is S.SUCCEEDED
        again = await ledger.status_queries.ingest_result(
            status_result("AG_TS", payout.id, status="Declined"), source_ip=None
        )
        assert again.status == "duplicate"
        (query,) = await ledger.status_queries.for_subject(payout.id)
        assert query.outcome == "answered" and query.result_code == "0"

    async def test_an_answer_that_beats_the_query_s_record_is_applied_with_it(
        self, ledger: Ledger
    ) -> None:
        """Daraja answers before the query's ids are committed: kept, then applied."""
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        await ledger.payouts.mark_unknown(payout.id, "ReadTimeout")
        early = await ledger.status_queries.ingest_result(
            status_result("AG_FAST", payout.id), source_ip=None
        )
        assert early.status == "unknown_payment"
        await ledger.status_queries.record(
            payout.id, by_originator_id=payout.id, outcome="sent", conversation_id="AG_FAST"
        )
        settled = await ledger.payouts.get(payout.id)
        assert settled is not None and settled.status is S.SUCCEEDED
        assert await _stored(ledger, early.callback_id) == ("status_result", "applied")
        (query,) = await ledger.status_queries.for_subject(payout.id)
        assert query.outcome == "answered"

    async def test_not_found_asks_for_the_payout_to_be_sent_again(self, ledger: Ledger) -> None:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        await ledger.payouts.mark_unknown(payout.id, "ReadTimeout")
        await ledger.status_queries.record(
            payout.id, by_originator_id=payout.id, outcome="sent", conversation_id="AG_TS"
        )
        outcome = await ledger.status_queries.ingest_result(
            status_result("AG_TS", payout.id, code=2032), source_ip=None, resend=True
        )
        assert outcome.status == "ignored"
        (due,) = await ledger.payouts.claim_for_sending(limit=5, lease=LEASE)
        assert due.id == payout.id and due.attempts == 2
        refused = await ledger.payouts.mark_refused(
            payout.id, "500.002.1001", "Duplicate OriginatorConversationID.", duplicate=True
        )
        assert refused.status is S.UNKNOWN and refused.send_at is None

    async def test_claims_for_checks_wait_for_the_result_first(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
        await ledger.payouts.mark_accepted(payout.id, "AG_1", payout.id)
        wait = timedelta(seconds=30)
        assert await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE) == []
        clock.advance(seconds=31)
        (claimed,) = await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE)
        assert claimed.check_count == 1
        assert await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE) == []
        expired = await ledger.payouts.expire(payout.id)
        assert expired.status is S.UNKNOWN and expired.flagged and expired.expired_at
        clock.advance(seconds=600)
        assert await ledger.payouts.claim_for_checks(limit=5, min_age=wait, lease=LEASE) == []


async def _paid_payment(ledger: Ledger, amount: int = 100) -> str:
    payment, _ = await ledger.create_payment(None, PHONE, amount, "INV", "Order")
    await ledger.mark_accepted(payment.id, f"ws_CO_{payment.id}", "29115-1")
    outcome = await ledger.ingest_stk_callback(
        stk_callback(f"ws_CO_{payment.id}", merchant_request_id="29115-1", amount=amount),
        source_ip=None,
    )
    assert outcome.status == "applied"
    return payment.id


class TestRefunds:
    async def test_room_reads_what_create_would_allow(self, ledger: Ledger) -> None:
        payment_id = await _paid_payment(ledger)
        room = await ledger.refunds.room(payment_id)
        assert (room.paid, room.held, room.remaining, room.refusal) == (100, 0, 100, None)
        part, _ = await ledger.refunds.create(
            None,
            payment_id,
            40,
            remarks="Part",
            receiver_party="174379",
            partial=True,
            claim=LEASE,
        )
        room = await ledger.refunds.room(payment_id)
        assert (room.held, room.remaining) == (40, 60)
        await ledger.refunds.mark_refused(part.id, "400.002.02", "Invalid TransactionID")
        assert (await ledger.refunds.room(payment_id)).remaining == 100
        await ledger.refunds.create(
            None,
            payment_id,
            None,
            remarks="All",
            receiver_party="174379",
            partial=True,
            claim=LEASE,
        )
        full = await ledger.refunds.room(payment_id)
        assert full.remaining == 0 and "refunded in full" in (full.refusal or "")
        open_payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
        closed = await ledger.refunds.room(open_payment.id)
        assert closed.remaining == 0 and "only a succeeded payment" in (closed.refusal or "")
        with pytest.raises(PaymentNotFoundError):
            await ledger.refunds.room("pay_nobody")
        with pytest.raises(ReceiptNotFoundError):
            await ledger.refunds.room("rcp_nobody", source="receipt")

    async def test_the_whole_payment_then_nothing_more(self, ledger: Ledger) -> None:
        payment_id = await _paid_payment(ledger)
        refund, created = await ledger.refunds.create(
            "r1",
            payment_id,
            None,
            remarks="Refund",
            receiver_party="174379",
            partial=False,
            claim=LEASE,
        )
        assert created and refund.amount == 100 and refund.original_receipt == "NLJ7RT61SV"
        with pytest.raises(RefundNotAllowedError, match="refunded in full"):
            await ledger.refunds.create(
                None,
                payment_id,
                None,
                remarks="Again",
                receiver_party="174379",
                partial=False,
                claim=LEASE,
            )
        # Rejected by Daraja: the amount is free again.
        await ledger.refunds.mark_refused(refund.id, "400.002.02", "Invalid TransactionID")
        again, created = await ledger.refunds.create(
            "r2",
            payment_id,
            None,
            remarks="Refund",
            receiver_party="174379",
            partial=False,
            claim=LEASE,
        )
        assert created and again.amount == 100

    async def test_a_reversal_result_before_its_answer_is_applied_with_the_answer(
        self, ledger: Ledger
    ) -> None:
        payment_id = await _paid_payment(ledger)
        refund, _ = await ledger.refunds.create(
            None,
            payment_id,
            None,
            remarks="Refund",
            receiver_party="174379",
            partial=False,
            claim=LEASE,
        )
        body = json.dumps(
            {
                "Result": {
                    "ResultType": 0,
                    "ResultCode": 0,
                    "ResultDesc": "ok",
                    "OriginatorConversationID": "OC-REV-1",
                    "ConversationID": "AG_REV_1",
                    "TransactionID": "RVS1234567",
                    "ResultParameters": {
                        "ResultParameter": [
                            {"Key": "Amount", "Value": 100},
                            {"Key": "OriginalTransactionID", "Value": "NLJ7RT61SV"},
                        ]
                    },
                }
            }
        ).encode()
        early = await ledger.refunds.ingest_result(body, source_ip=None)
        assert early.status == "unknown_payment"
        done = await ledger.refunds.mark_accepted(refund.id, "AG_REV_1", "OC-REV-1")
        assert done.status is S.SUCCEEDED and done.receipt == "RVS1234567"
        assert await _stored(ledger, early.callback_id) == ("reversal_result", "applied")

    async def test_parts_only_when_allowed(self, ledger: Ledger) -> None:
        payment_id = await _paid_payment(ledger)
        with pytest.raises(RefundNotAllowedError, match="PESA_REFUND_PARTIAL"):
            await ledger.refunds.create(
                None,
                payment_id,
                40,
                remarks="Part",
                receiver_party="174379",
                partial=False,
                claim=LEASE,
            )
        await ledger.refunds.create(
            None,
            payment_id,
            40,
            remarks="Part",
            receiver_party="174379",
            partial=True,
            claim=LEASE,
        )
        with pytest.raises(RefundNotAllowedError, match="60 of 100") as caught:
            await ledger.refunds.create(
                None,
                payment_id,
                70,
                remarks="Part",
                receiver_party="174379",
                partial=True,
                claim=LEASE,
            )
        assert caught.value.remaining == 60

    async def test_an_unpaid_or_unknown_payment_is_not_refundable(self, ledger: Ledger) -> None:
        payment, _ = await ledger.create_payment(None, PHONE, 100, "INV", "Order")
        with pytest.raises(RefundNotAllowedError, match="only a succeeded payment"):
            await ledger.refunds.create(
                None,
                payment.id,
                None,
                remarks="Refund",
                receiver_party="174379",
                partial=False,
                claim=LEASE,
            )
        from pesa.ledger import PaymentNotFoundError

        with pytest.raises(PaymentNotFoundError):
            await ledger.refunds.create(
                None,
                "pay_nobody",
                None,
                remarks="Refund",
                receiver_party="174379",
                partial=False,
                claim=LEASE,
            )

    async def test_concurrent_refunds_never_exceed_what_was_paid(self, ledger: Ledger) -> None:
        """Twenty creates at once (several connections on PostgreSQL): at most three of 30."""
        payment_id = await _paid_payment(ledger)

        async def attempt(i: int) -> bool:
            try:
                await ledger.refunds.create(
                    f"k{i}",
                    payment_id,
                    30,
                    remarks="Part",
                    receiver_party="174379",
                    partial=True,
                    claim=LEASE,
                )
            except RefundNotAllowedError:
                return False
            return True

        made = await asyncio.gather(*(attempt(i) for i in range(20)))
        assert sum(made) == 3
        refunds, _ = await ledger.refunds.page(source_id=payment_id)
        assert sum(r.amount for r in refunds) == 90


@pytest.mark.postgres
async def test_the_event_feed_waits_for_a_payout_transaction_in_flight(
    ledger: Ledger, backend: str
) -> None:
    """A payout transition in flight (it holds the feed, then locks its row) holds the feed."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: seq order is commit order there")
    payout, _ = await ledger.payouts.create(None, spec(), claim=LEASE)
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV", "Order")
    engine = create_async_engine(ledger.engine.url)
    try:
        async with engine.connect() as running:
            await running.begin()
            # What every payout transition does first: hold the feed, then lock its row.
            await ledger._hold_feed(running)
            await running.execute(
                text("SELECT id FROM payouts WHERE id = :id FOR UPDATE"), {"id": payout.id}
            )
            await running.execute(text("SELECT pg_current_xact_id()"))
            await ledger.mark_accepted(payment.id, "ws_CO_1", None)
            assert (await ledger.list_events()).items == []
            await running.rollback()
        assert [e.type for e in (await ledger.list_events()).items] == ["payment.pending"]
    finally:
        await engine.dispose()
