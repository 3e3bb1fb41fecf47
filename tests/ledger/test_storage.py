"""The ledger's storage on SQLite and PostgreSQL: transitions, callbacks, outbox, reads."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, text

from pesa import ValidationError
from pesa.daraja import lookup_code
from pesa.ledger import (
    IdempotencyConflictError,
    InvalidTransitionError,
    Ledger,
    Payment,
    PaymentNotFoundError,
    PaymentStatus,
    StkResult,
)
from pesa.ledger._schema import callbacks, payment_events, payments, webhook_deliveries

from .conftest import ManualClock, stk_callback

PHONE = "254708374149"


async def pending(ledger: Ledger, cid: str = "ws_CO_1", *, amount: int = 10) -> Payment:
    payment, _ = await ledger.create_payment(None, PHONE, amount, "INV42", "Order 42")
    return await ledger.mark_accepted(payment.id, cid, "29115-34620561-1")


async def count(ledger: Ledger, table: object, *where: object) -> int:
    async with ledger.engine.connect() as conn:
        query = select(func.count()).select_from(table)  # type: ignore[arg-type]
        for clause in where:
            query = query.where(clause)  # type: ignore[arg-type]
        return int((await conn.execute(query)).scalar_one())


async def event_types(ledger: Ledger, payment_id: str) -> list[str]:
    """The events written for a payment, read from the table (not through the feed)."""
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            select(payment_events.c.type)
            .where(payment_events.c.payment_id == payment_id)
            .order_by(payment_events.c.seq)
        )
        return [row[0] for row in rows]


class TestCreate:
    async def test_create_commits_an_intent_in_created(self, ledger: Ledger) -> None:
        payment, created = await ledger.create_payment(
            "key-1", "0708 374 149", 10, "INV42", "Order 42", {"order": 42}
        )
        assert created
        assert payment.status is PaymentStatus.CREATED
        assert payment.phone == PHONE
        assert payment.id.startswith("pay_")
        assert await ledger.get_payment(payment.id) == payment

    async def test_same_key_same_parameters_returns_the_same_payment(self, ledger: Ledger) -> None:
        first, created = await ledger.create_payment("key-1", PHONE, 10, "INV42", "Order")
        again, created_again = await ledger.create_payment(
            "key-1", "0708374149", 10, "INV42", "Order"
        )
        assert created and not created_again
        assert again.id == first.id
        assert await count(ledger, payments) == 1

    @pytest.mark.parametrize(
        "change",
        [
            {"amount": 11},
            {"phone": "254711000000"},
            {"account_reference": "INV43"},
            {"description": "Other"},
            {"metadata": {"a": 1}},
        ],
    )
    async def test_same_key_different_parameters_is_a_conflict(
        self, ledger: Ledger, change: dict[str, object]
    ) -> None:
        params: dict[str, object] = {
            "phone": PHONE,
            "amount": 10,
            "account_reference": "INV42",
            "description": "Order",
        }
        first, _ = await ledger.create_payment("key-1", **params)  # type: ignore[arg-type]
        with pytest.raises(IdempotencyConflictError) as info:
            await ledger.create_payment("key-1", **(params | change))  # type: ignore[arg-type]
        assert info.value.payment_id == first.id
        assert await count(ledger, payments) == 1

    async def test_no_key_creates_a_new_payment_each_time(self, ledger: Ledger) -> None:
        a, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        b, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        assert a.id != b.id

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"amount": 10.0}, "amount"),
            ({"amount": Decimal(10)}, "amount"),
            ({"amount": 0}, "amount"),
            ({"amount": True}, "amount"),
            ({"phone": "12345"}, "phone"),
            ({"phone": "254808374149"}, "phone"),
            ({"account_reference": " "}, "account_reference"),
            ({"description": ""}, "description"),
            ({"metadata": {"x": object()}}, "metadata"),
            ({"metadata": [1]}, "metadata"),
            ({"idempotency_key": ""}, "idempotency_key"),
        ],
    )
    async def test_bad_input_names_the_field(
        self, ledger: Ledger, kwargs: dict[str, object], field: str
    ) -> None:
        params: dict[str, object] = {
            "idempotency_key": None,
            "phone": PHONE,
            "amount": 10,
            "account_reference": "INV42",
            "description": "Order",
        }
        with pytest.raises(ValidationError) as info:
            await ledger.create_payment(**(params | kwargs))  # type: ignore[arg-type]
        assert info.value.field == field
        assert await count(ledger, payments) == 0


class TestTransitions:
    async def test_accepted_moves_to_pending_and_writes_an_event_and_delivery(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger)
        assert payment.status is PaymentStatus.PENDING
        assert payment.checkout_request_id == "ws_CO_1"
        assert await event_types(ledger, payment.id) == ["payment.pending"]
        assert await count(ledger, webhook_deliveries) == 1
        stored = await ledger.get_payment_by_checkout_id("ws_CO_1")
        assert stored == payment

    async def test_accepting_twice_is_idempotent(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        again = await ledger.mark_accepted(payment.id, "ws_CO_1", "29115-34620561-1")
        assert again == payment
        assert await event_types(ledger, payment.id) == ["payment.pending"]

    async def test_rejected_keeps_darajas_code(self, ledger: Ledger) -> None:
        payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        rejected = await ledger.mark_rejected(
            payment.id, "400.002.02", "Bad Request - Invalid PhoneNumber"
        )
        assert rejected.status is PaymentStatus.REJECTED
        assert rejected.result_code == "400.002.02"
        assert await event_types(ledger, payment.id) == ["payment.rejected"]

    async def test_unknown_then_accepted_becomes_pending(self, ledger: Ledger) -> None:
        payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        unknown = await ledger.mark_unknown(payment.id, "read timeout")
        assert unknown.status is PaymentStatus.UNKNOWN
        accepted = await ledger.mark_accepted(payment.id, "ws_CO_9", None)
        assert accepted.status is PaymentStatus.PENDING
        assert await event_types(ledger, payment.id) == ["payment.unknown", "payment.pending"]

    async def test_an_invalid_transition_raises_and_changes_nothing(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        with pytest.raises(InvalidTransitionError):
            await ledger.mark_rejected(payment.id, "400.002.02", "late")
        assert (await ledger.get_payment(payment.id)) == payment

    async def test_unknown_payment_id_raises(self, ledger: Ledger) -> None:
        with pytest.raises(PaymentNotFoundError):
            await ledger.mark_accepted("pay_nope", "ws_CO_1", None)
        assert await ledger.get_payment("pay_nope") is None

    async def test_expire_fails_with_reason_expired(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        expired = await ledger.expire(payment.id)
        assert expired.status is PaymentStatus.FAILED
        assert expired.failure_reason == "expired"
        assert await event_types(ledger, payment.id) == ["payment.pending", "payment.failed"]

    async def test_version_and_updated_at_move_with_each_transition(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        clock.advance(seconds=5)
        accepted = await ledger.mark_accepted(payment.id, "ws_CO_1", None)
        assert accepted.version == payment.version + 1
        assert accepted.updated_at == clock.now()
        assert accepted.created_at == payment.created_at


class TestCallbacks:
    async def test_success_callback_settles_the_payment(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        outcome = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1"), source_ip="196.201.214.200"
        )
        assert outcome.status == "applied"
        assert outcome.callback_id is not None and outcome.callback_id.startswith("cb_")
        assert outcome.payment is not None
        assert outcome.payment.status is PaymentStatus.SUCCEEDED
        assert outcome.payment.receipt == "NLJ7RT61SV"
        assert outcome.payment.paid_amount == Decimal(10)
        assert not outcome.payment.flagged
        stored = await ledger.get_payment(payment.id)
        assert stored == outcome.payment
        assert stored is not None and stored.to_dict() == outcome.payment.to_dict()
        assert outcome.payment.to_dict()["transaction_date"] == "2026-11-29T09:01:15+00:00"
        assert await event_types(ledger, payment.id) == ["payment.pending", "payment.succeeded"]

    async def test_failure_callback_records_the_code_and_reason(self, ledger: Ledger) -> None:
        await pending(ledger)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1", 1032), source_ip=None)
        assert outcome.payment is not None
        assert outcome.payment.status is PaymentStatus.FAILED
        assert outcome.payment.result_code == "1032"
        assert outcome.payment.failure_reason == lookup_code("1032").meaning
        assert outcome.payment.result_desc == "Request cancelled by user"

    async def test_failure_reason_is_the_catalogue_meaning(self, ledger: Ledger) -> None:
        await pending(ledger)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1", 1037), source_ip=None)
        assert outcome.payment is not None
        assert outcome.payment.failure_reason == lookup_code("1037").meaning

    async def test_an_unknown_result_code_is_stored_but_left_for_the_reconciler(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1", 4999), source_ip=None)
        assert outcome.status == "ignored"
        assert "verify" in outcome.detail
        assert await ledger.get_payment(payment.id) == payment
        assert await count(ledger, callbacks, callbacks.c.outcome == "ignored") == 1

    @pytest.mark.parametrize(
        "changes",
        [{"receipt": None}, {"amount": None}, {"phone": None}, {"phone": "2547****149"}],
        ids=["no-receipt", "no-amount", "no-phone", "masked-phone"],
    )
    async def test_a_success_that_cannot_be_cross_checked_is_evidence_for_a_query(
        self, ledger: Ledger, clock: ManualClock, changes: dict[str, Any]
    ) -> None:
        """Issue 8, finding 3: stored, linked, a query asked for; the payment stays pending."""
        payment = await pending(ledger)
        outcome = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1", **changes), source_ip=None
        )
        assert outcome.status == "unverified"
        held = await ledger.get_payment(payment.id)
        assert held is not None
        assert held.status is PaymentStatus.PENDING and held.receipt is None
        assert held.evidence_callback_id == outcome.callback_id
        assert held.verify_at == clock.now()
        assert await event_types(ledger, payment.id) == ["payment.pending"]
        # The reconciler claims it at once (no min_age wait for evidence).
        claimed = await ledger.claim_for_reconciliation(
            limit=10, min_age=timedelta(hours=1), lease=timedelta(minutes=1)
        )
        assert [p.id for p in claimed] == [payment.id]
        settled = await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
        assert settled.payment is not None
        assert settled.payment.status is PaymentStatus.SUCCEEDED
        assert not settled.payment.flagged
        assert settled.payment.evidence_callback_id is None
        assert settled.payment.verify_at is None
        if changes != {"receipt": None}:
            assert settled.payment.receipt == "NLJ7RT61SV", "the evidence completes the record"

    async def test_duplicate_callback_is_stored_but_applied_once(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        body = stk_callback("ws_CO_1")
        first = await ledger.ingest_stk_callback(body, source_ip="196.201.214.200")
        second = await ledger.ingest_stk_callback(body, source_ip="196.201.214.200")
        assert (first.status, second.status) == ("applied", "duplicate")
        assert second.payment == first.payment
        assert await event_types(ledger, payment.id) == ["payment.pending", "payment.succeeded"]
        assert await count(ledger, callbacks) == 2

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b"[]",
            b'{"Body": {}}',
            b'{"Body": {"stkCallback": {"ResultCode": 0}}}',
            b'{"Body": {"stkCallback": {"CheckoutRequestID": "ws_CO_1", "ResultCode": 0}}}',
            b"\xff\xfe",
        ],
    )
    async def test_malformed_body_is_stored_raw_and_changes_nothing(
        self, ledger: Ledger, body: bytes
    ) -> None:
        payment = await pending(ledger)
        outcome = await ledger.ingest_stk_callback(body, source_ip="10.0.0.1")
        assert outcome.status == "invalid"
        assert outcome.payment is None
        assert await ledger.get_payment(payment.id) == payment
        async with ledger.engine.connect() as conn:
            row = (await conn.execute(select(callbacks))).one()._mapping
        assert row["body"] == body
        assert row["outcome"] == "invalid"
        assert row["source_ip"] == "10.0.0.1"
        assert row["received_at"] is not None

    async def test_unknown_checkout_id_is_stored_and_changes_nothing(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_forged"), source_ip=None)
        assert (outcome.status, outcome.payment) == ("unknown_payment", None)
        assert await ledger.get_payment(payment.id) == payment
        assert await count(ledger, callbacks, callbacks.c.outcome == "unknown_payment") == 1
        assert await count(ledger, payment_events) == 1

    async def test_mismatched_merchant_request_id_is_refused(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        body = stk_callback("ws_CO_1", merchant_request_id="other")
        outcome = await ledger.ingest_stk_callback(body, source_ip=None)
        assert outcome.status == "invalid"
        assert await ledger.get_payment(payment.id) == payment

    async def test_amount_mismatch_waits_for_the_query_and_is_flagged_when_confirmed(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger, amount=100)
        outcome = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1", amount=1), source_ip=None
        )
        assert outcome.status == "unverified"
        assert outcome.payment is not None
        assert outcome.payment.status is PaymentStatus.PENDING
        assert not outcome.payment.flagged
        settled = await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
        assert settled.payment is not None
        assert settled.payment.status is PaymentStatus.SUCCEEDED
        assert settled.payment.flagged
        assert "amount 1 differs from requested 100" in (settled.payment.flag_reason or "")
        assert outcome.callback_id in (settled.payment.flag_reason or "")
        assert settled.payment.paid_amount == Decimal(1)
        assert await event_types(ledger, payment.id) == [
            "payment.pending",
            "payment.succeeded",
            "payment.flagged",
        ]
        assert (await ledger.stats()).flagged_payments == 1

    async def test_refuse_policy_stores_a_mismatched_success_as_invalid(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger, amount=100)
        outcome = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1", amount=1), source_ip=None, on_mismatch="refuse"
        )
        assert outcome.status == "invalid"
        assert "amount 1 differs from requested 100" in outcome.detail
        held = await ledger.get_payment(payment.id)
        assert held is not None and held.status is PaymentStatus.PENDING
        assert held.evidence_callback_id == outcome.callback_id, "linked as evidence"
        assert await count(ledger, callbacks, callbacks.c.outcome == "invalid") == 1
        # Daraja confirms the payment: succeeded, flagged with the refused callback linked.
        settled = await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
        assert settled.payment is not None
        assert settled.payment.status is PaymentStatus.SUCCEEDED
        assert settled.payment.flagged
        assert "refused" in (settled.payment.flag_reason or "")
        assert outcome.callback_id in (settled.payment.flag_reason or "")
        assert settled.payment.paid_amount is None, "a refused callback's values are not kept"

    async def test_refuse_policy_still_applies_a_matching_success(self, ledger: Ledger) -> None:
        await pending(ledger, amount=100)
        fine = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1", amount=100), source_ip=None, on_mismatch="refuse"
        )
        assert fine.status == "applied"

    async def test_refuse_policy_can_be_the_ledgers_default(
        self, database_url: str, clock: ManualClock
    ) -> None:
        ledger = await Ledger.open(database_url, clock=clock, on_mismatch="refuse")
        try:
            await ledger.migrate()
            await pending(ledger)
            outcome = await ledger.ingest_stk_callback(
                stk_callback("ws_CO_1", phone=254711222333), source_ip=None
            )
            assert outcome.status == "invalid"
        finally:
            await ledger.close()
        with pytest.raises(ValidationError):
            await Ledger.open(database_url, on_mismatch="ignore")  # type: ignore[arg-type]

    async def test_phone_mismatch_is_never_applied_by_the_callback(self, ledger: Ledger) -> None:
        await pending(ledger)
        outcome = await ledger.ingest_stk_callback(
            stk_callback("ws_CO_1", phone=254711222333), source_ip=None
        )
        assert outcome.status == "unverified"
        assert outcome.payment is not None
        assert outcome.payment.status is PaymentStatus.PENDING

    async def test_float_amount_in_callback_is_exact(self, ledger: Ledger) -> None:
        await pending(ledger)
        body = stk_callback("ws_CO_1").replace(b'"Value": 10}', b'"Value": 10.00}')
        outcome = await ledger.ingest_stk_callback(body, source_ip=None)
        assert outcome.payment is not None
        assert outcome.payment.paid_amount == Decimal("10.00")
        assert not outcome.payment.flagged

    async def test_late_success_after_failure_is_corrected_only_by_a_query(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        """Whoever holds the callback token cannot flip a failed payment to paid."""
        payment = await pending(ledger)
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1", 1037), source_ip=None)
        clock.advance(seconds=30)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        assert outcome.status == "unverified"
        held = await ledger.get_payment(payment.id)
        assert held is not None and held.status is PaymentStatus.FAILED
        assert held.verify_at == clock.now() and held.verify_since == clock.now()
        claimed = await ledger.claim_for_reconciliation(
            limit=10, min_age=timedelta(0), lease=timedelta(minutes=1)
        )
        assert [p.id for p in claimed] == [payment.id], "a failed payment is verified too"
        settled = await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
        assert settled.payment is not None
        assert settled.payment.status is PaymentStatus.SUCCEEDED
        assert settled.payment.receipt == "NLJ7RT61SV"
        assert settled.payment.failure_reason is None
        assert await event_types(ledger, payment.id) == [
            "payment.pending",
            "payment.failed",
            "payment.succeeded",
            "payment.corrected",
        ]

    async def test_a_late_success_that_daraja_denies_is_flagged_not_applied(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger)
        await ledger.expire(payment.id)
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        assert outcome.status == "unverified"
        denied = await ledger.apply_stk_result("ws_CO_1", StkResult("1032", "cancelled"))
        assert denied.payment is not None
        assert denied.payment.status is PaymentStatus.FAILED
        assert denied.payment.flagged and outcome.callback_id in (denied.payment.flag_reason or "")
        assert denied.payment.verify_at is None

    async def test_a_late_success_daraja_never_confirms_is_flagged_when_abandoned(
        self, ledger: Ledger
    ) -> None:
        payment = await pending(ledger)
        await ledger.expire(payment.id)
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        flagged = await ledger.abandon_verification(payment.id)
        assert flagged.status is PaymentStatus.FAILED
        assert flagged.flagged and "could not be confirmed" in (flagged.flag_reason or "")
        assert flagged.verify_at is None and flagged.evidence_callback_id is None

    async def test_a_late_genuine_callback_fills_in_what_the_query_settled(
        self, ledger: Ledger
    ) -> None:
        """Issue 8, finding 1: query first, callback second: receipt recorded, no flag."""
        payment = await pending(ledger)
        await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
        outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        assert outcome.status == "applied"
        assert outcome.payment is not None
        assert outcome.payment.receipt == "NLJ7RT61SV"
        assert outcome.payment.paid_amount == Decimal(10)
        assert outcome.payment.paid_phone == "254708374149"
        assert outcome.payment.transaction_date is not None
        assert not outcome.payment.flagged
        again = await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        assert again.status == "duplicate"
        assert await event_types(ledger, payment.id) == [
            "payment.pending",
            "payment.succeeded",
            "payment.updated",
        ]

    async def test_query_result_applies_without_a_callback_row(self, ledger: Ledger) -> None:
        await pending(ledger)
        outcome = await ledger.apply_stk_result("ws_CO_1", StkResult("1032", "cancelled"))
        assert (outcome.status, outcome.callback_id) == ("applied", None)
        assert outcome.payment is not None and outcome.payment.status is PaymentStatus.FAILED
        assert await count(ledger, callbacks) == 0
        missing = await ledger.apply_stk_result("ws_CO_x", StkResult("0"))
        assert missing.status == "unknown_payment"

    async def test_a_parser_error_of_any_kind_is_stored_as_invalid(self, ledger: Ledger) -> None:
        def broken(body: bytes) -> object:
            raise KeyError(body[:1])

        outcome = await ledger.ingest_stk_callback(b"{}", source_ip=None, parse=broken)  # type: ignore[arg-type]
        assert outcome.status == "invalid"
        assert await count(ledger, callbacks) == 1


class TestEventsAndDeliveries:
    async def test_event_payload_is_the_payment_snapshot(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        page = await ledger.list_events()
        (event,) = page.items
        body = json.loads(event.payload)
        assert body["id"] == event.id and event.id.startswith("evt_")
        assert body["type"] == "payment.pending"
        assert body["data"]["payment"] == payment.to_dict()
        assert page.next_cursor == event.cursor
        assert (await ledger.list_events(after=event.seq)).items == []
        assert (await ledger.list_events(after=0)).items == [event]

    async def test_events_page_with_a_cursor(self, ledger: Ledger) -> None:
        for n in range(3):
            await pending(ledger, f"ws_CO_{n}")
        first = await ledger.list_events(limit=2)
        assert len(first.items) == 2 and first.has_more
        second = await ledger.list_events(after=first.next_cursor, limit=2)
        assert len(second.items) == 1 and not second.has_more
        empty = await ledger.list_events(after=second.next_cursor)
        assert empty.items == [] and empty.next_cursor == second.next_cursor
        seqs = [e.seq for e in first.items + second.items]
        assert seqs == sorted(seqs)
        for bad in ("abc", "1:x", 999):
            with pytest.raises(ValidationError):
                await ledger.list_events(after=bad)

    async def test_one_delivery_per_event_per_endpoint(
        self, database_url: str, clock: ManualClock
    ) -> None:
        ledger = await Ledger.open(
            database_url, clock=clock, webhook_endpoints=["https://a/h", "https://b/h"]
        )
        try:
            await ledger.migrate()
            await pending(ledger)
            await ledger.ingest_stk_callback(stk_callback("ws_CO_1", amount=1), source_ip=None)
            await ledger.apply_stk_result("ws_CO_1", StkResult("0", "ok"))
            # pending + succeeded + flagged, each to two endpoints
            assert await count(ledger, webhook_deliveries) == 6
        finally:
            await ledger.close()

    async def test_no_endpoints_means_no_deliveries(
        self, database_url: str, clock: ManualClock
    ) -> None:
        ledger = await Ledger.open(database_url, clock=clock)
        try:
            await ledger.migrate()
            await pending(ledger)
            assert await count(ledger, webhook_deliveries) == 0
            assert await count(ledger, payment_events) == 1
        finally:
            await ledger.close()

    async def test_claim_deliver_and_retry(self, ledger: Ledger, clock: ManualClock) -> None:
        await pending(ledger)
        (delivery,) = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
        assert delivery.attempts == 1
        assert delivery.endpoint == "https://merchant.example/hooks"
        assert delivery.event.type == "payment.pending"
        # Leased: not claimable again until the lease ends.
        assert await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30)) == []
        await ledger.mark_delivery_failed(
            delivery.id, "HTTP 500", clock.now() + timedelta(seconds=10), status_code=500
        )
        assert await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30)) == []
        clock.advance(seconds=10)
        (again,) = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
        assert again.id == delivery.id and again.attempts == 2
        assert again.event.payload == delivery.event.payload
        await ledger.mark_delivered(again.id, 200)
        clock.advance(hours=1)
        assert await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30)) == []
        assert (await ledger.stats()).deliveries["delivered"] == 1

    async def test_a_crashed_dispatchers_claim_returns_after_the_lease(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await pending(ledger)
        (delivery,) = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
        clock.advance(seconds=31)
        (again,) = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
        assert again.id == delivery.id

    async def test_giving_up_marks_the_delivery_failed(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await pending(ledger)
        (delivery,) = await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30))
        await ledger.mark_delivery_failed(delivery.id, "token=abc123 refused", None)
        clock.advance(days=1)
        assert await ledger.claim_deliveries(limit=10, lease=timedelta(seconds=30)) == []
        async with ledger.engine.connect() as conn:
            row = (await conn.execute(select(webhook_deliveries))).one()._mapping
        assert row["status"] == "failed"
        assert "abc123" not in row["last_error"]


class TestReconciliation:
    async def test_claims_only_payments_older_than_min_age(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        payment = await pending(ledger)
        lease = timedelta(seconds=60)
        assert (
            await ledger.claim_for_reconciliation(
                limit=10, min_age=timedelta(seconds=30), lease=lease
            )
            == []
        )
        clock.advance(seconds=30)
        (claimed,) = await ledger.claim_for_reconciliation(
            limit=10, min_age=timedelta(seconds=30), lease=lease
        )
        assert claimed.id == payment.id and claimed.check_count == 1

    async def test_a_claim_is_leased_and_returns_after_the_lease(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        await pending(ledger)
        args = {"limit": 10, "min_age": timedelta(0), "lease": timedelta(seconds=60)}
        assert len(await ledger.claim_for_reconciliation(**args)) == 1  # type: ignore[arg-type]
        assert await ledger.claim_for_reconciliation(**args) == []  # type: ignore[arg-type]
        clock.advance(seconds=61)
        (again,) = await ledger.claim_for_reconciliation(**args)  # type: ignore[arg-type]
        assert again.check_count == 2

    async def test_still_pending_schedules_the_next_check(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        payment = await pending(ledger)
        args = {"limit": 10, "min_age": timedelta(0), "lease": timedelta(seconds=60)}
        await ledger.claim_for_reconciliation(**args)  # type: ignore[arg-type]
        later = clock.now() + timedelta(seconds=20)
        kept = await ledger.record_still_pending(payment.id, later)
        assert kept.status is PaymentStatus.PENDING and kept.next_check_at == later
        assert await ledger.claim_for_reconciliation(**args) == []  # type: ignore[arg-type]
        clock.advance(seconds=20)
        assert len(await ledger.claim_for_reconciliation(**args)) == 1  # type: ignore[arg-type]
        assert await event_types(ledger, payment.id) == ["payment.pending"]

    async def test_settled_payments_are_never_claimed(self, ledger: Ledger) -> None:
        await pending(ledger)
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        args = {"limit": 10, "min_age": timedelta(0), "lease": timedelta(seconds=60)}
        assert await ledger.claim_for_reconciliation(**args) == []  # type: ignore[arg-type]

    async def test_unknown_payments_are_claimed_too(self, ledger: Ledger) -> None:
        payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        await ledger.mark_unknown(payment.id, "timeout")
        args = {"limit": 10, "min_age": timedelta(0), "lease": timedelta(seconds=60)}
        (claimed,) = await ledger.claim_for_reconciliation(**args)  # type: ignore[arg-type]
        assert claimed.status is PaymentStatus.UNKNOWN

    async def test_stale_created_intents_become_unknown(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        stale, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        clock.advance(minutes=5)
        fresh, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order")
        moved = await ledger.recover_stale_created(timedelta(minutes=2))
        assert [p.id for p in moved] == [stale.id]
        assert moved[0].status is PaymentStatus.UNKNOWN
        assert (await ledger.get_payment(fresh.id)).status is PaymentStatus.CREATED  # type: ignore[union-attr]
        assert await ledger.recover_stale_created(timedelta(minutes=2)) == []


class TestReads:
    async def test_list_filters_and_paginates_newest_first(
        self, ledger: Ledger, clock: ManualClock
    ) -> None:
        created = []
        for n in range(5):
            clock.advance(seconds=1)
            payment, _ = await ledger.create_payment(
                None, PHONE if n % 2 else "254711000000", 10 + n, "INV", "Order"
            )
            created.append(payment)
        await ledger.mark_accepted(created[4].id, "ws_CO_4", None)
        page1 = await ledger.list_payments(limit=2)
        page2 = await ledger.list_payments(limit=2, cursor=page1.next_cursor)
        page3 = await ledger.list_payments(limit=2, cursor=page2.next_cursor)
        ids = [p.id for p in page1.items + page2.items + page3.items]
        assert ids == [p.id for p in reversed(created)]
        assert page3.next_cursor is None
        assert [p.id for p in (await ledger.list_payments(status="pending")).items] == [
            created[4].id
        ]
        assert len((await ledger.list_payments(phone="0708374149")).items) == 2
        window = await ledger.list_payments(
            created_from=created[1].created_at, created_to=created[3].created_at
        )
        assert [p.id for p in window.items] == [created[2].id, created[1].id]

    async def test_bad_filters_raise_validation_errors(self, ledger: Ledger) -> None:
        with pytest.raises(ValidationError) as info:
            await ledger.list_payments(status="paid")
        assert info.value.field == "status"
        with pytest.raises(ValidationError):
            await ledger.list_payments(limit=0)

    async def test_stats_count_payments_callbacks_and_deliveries(self, ledger: Ledger) -> None:
        await pending(ledger)
        await ledger.ingest_stk_callback(b"junk", source_ip=None)
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        stats = await ledger.stats()
        assert stats.payments["succeeded"] == 1 and stats.payments["created"] == 0
        assert stats.callbacks == {"invalid": 1, "applied": 1}
        assert stats.deliveries["pending"] == 2

    async def test_amounts_are_integers_in_storage_and_dicts(self, ledger: Ledger) -> None:
        payment = await pending(ledger)
        await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        data = (await ledger.get_payment(payment.id)).to_dict()  # type: ignore[union-attr]
        assert type(data["amount"]) is int and type(data["paid_amount"]) is int
        async with ledger.engine.connect() as conn:
            raw = (await conn.execute(text("SELECT amount FROM payments"))).scalar_one()
        assert type(raw) is int


class TestHotPath:
    async def test_a_callback_costs_few_statements(self, ledger: Ledger, backend: str) -> None:
        """PostgreSQL: a read, then one statement that is its own transaction (the guarded
        UPDATE and every insert; no BEGIN or COMMIT round trip). SQLite: BEGIN IMMEDIATE,
        read, update, three inserts, commit."""
        from sqlalchemy import event

        await pending(ledger)
        statements: list[str] = []

        def record(*args: object) -> None:
            statements.append(str(args[2]).split(None, 1)[0].upper())

        event.listen(ledger.engine.sync_engine, "before_cursor_execute", record)
        try:
            outcome = await ledger.ingest_stk_callback(stk_callback("ws_CO_1"), source_ip=None)
        finally:
            event.remove(ledger.engine.sync_engine, "before_cursor_execute", record)
        assert outcome.status == "applied"
        if backend == "postgresql":
            assert statements == ["SELECT", "WITH"]
        else:
            assert statements == ["BEGIN", "SELECT", "UPDATE", "INSERT", "INSERT", "INSERT"]
