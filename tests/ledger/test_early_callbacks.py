"""A callback that arrives before the push's CheckoutRequestID is recorded is applied then."""

from __future__ import annotations

from sqlalchemy import select

from pesa.ledger import Ledger, PaymentStatus
from pesa.ledger._schema import callbacks

from .conftest import stk_callback
from .test_storage import PHONE, count, event_types

MERCHANT = "29115-34620561-1"


async def _callback_rows(ledger: Ledger) -> list[tuple[str, str | None]]:
    async with ledger.engine.connect() as conn:
        rows = await conn.execute(
            select(callbacks.c.outcome, callbacks.c.payment_id).order_by(callbacks.c.id)
        )
        return [(row[0], row[1]) for row in rows]


async def test_a_stored_early_success_is_applied_when_the_push_is_accepted(
    ledger: Ledger,
) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    early = await ledger.ingest_stk_callback(stk_callback("ws_CO_early"), source_ip="1.2.3.4")
    assert early.status == "unknown_payment"

    accepted = await ledger.mark_accepted(payment.id, "ws_CO_early", MERCHANT)

    assert accepted.status is PaymentStatus.SUCCEEDED
    assert accepted.receipt == "NLJ7RT61SV"
    assert await ledger.get_payment(payment.id) == accepted
    assert await event_types(ledger, payment.id) == ["payment.pending", "payment.succeeded"]
    assert await _callback_rows(ledger) == [("applied", payment.id)]


async def test_an_early_callback_is_applied_once(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.ingest_stk_callback(stk_callback("ws_CO_early"), source_ip=None)
    await ledger.ingest_stk_callback(stk_callback("ws_CO_early"), source_ip=None)  # resent
    await ledger.mark_accepted(payment.id, "ws_CO_early", MERCHANT)
    again = await ledger.mark_accepted(payment.id, "ws_CO_early", MERCHANT)  # repeated answer
    late = await ledger.ingest_stk_callback(stk_callback("ws_CO_early"), source_ip=None)

    assert again.status is PaymentStatus.SUCCEEDED
    assert late.status == "duplicate"
    assert await event_types(ledger, payment.id) == ["payment.pending", "payment.succeeded"]
    # The two early copies share a received time (a manual clock): either may be the one
    # applied, and exactly one is.
    assert sorted(outcome for outcome, _ in await _callback_rows(ledger)) == [
        "applied",
        "duplicate",
        "duplicate",
    ]


async def test_an_early_failure_follows_the_state_machine(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.ingest_stk_callback(stk_callback("ws_CO_early", 1032), source_ip=None)
    accepted = await ledger.mark_accepted(payment.id, "ws_CO_early", MERCHANT)
    assert accepted.status is PaymentStatus.FAILED
    assert accepted.result_code == "1032"


async def test_an_early_callback_with_another_merchant_id_is_refused(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.ingest_stk_callback(
        stk_callback("ws_CO_early", merchant_request_id="forged"), source_ip=None
    )
    accepted = await ledger.mark_accepted(payment.id, "ws_CO_early", MERCHANT)
    assert accepted.status is PaymentStatus.PENDING
    assert await _callback_rows(ledger) == [("invalid", payment.id)]


async def test_callbacks_for_other_ids_are_left_alone(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.ingest_stk_callback(stk_callback("ws_CO_other"), source_ip=None)
    accepted = await ledger.mark_accepted(payment.id, "ws_CO_mine", MERCHANT)
    assert accepted.status is PaymentStatus.PENDING
    assert await _callback_rows(ledger) == [("unknown_payment", None)]


async def test_an_id_learnt_from_the_callback_itself_does_not_apply_it(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, PHONE, 10, "INV42", "Order 42")
    await ledger.ingest_stk_callback(stk_callback("ws_CO_orphan"), source_ip=None)
    adopted = await ledger.mark_accepted(
        payment.id, "ws_CO_orphan", MERCHANT, apply_stored_callbacks=False
    )
    assert adopted.status is PaymentStatus.PENDING
    assert await count(ledger, callbacks, callbacks.c.outcome == "unknown_payment") == 1
    # Daraja's own push answer later names the same id: now the stored callback applies.
    confirmed = await ledger.mark_accepted(payment.id, "ws_CO_orphan", MERCHANT)
    assert confirmed.status is PaymentStatus.SUCCEEDED
