"""Accounts in the ledger (a payment remembers its account) and one outbox for every kind."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text, update

from pesa import ValidationError
from pesa.ledger import IdempotencyConflictError, Ledger
from pesa.ledger._migrate import upgrade
from pesa.ledger._schema import payment_events, payments

from .conftest import ManualClock


async def test_a_payment_remembers_the_account_it_was_asked_on(ledger: Ledger) -> None:
    payment, created = await ledger.create_payment(
        "k1", "0708374149", 10, "INV", "Order", account="shop"
    )
    assert created and payment.account == "shop"
    assert (await ledger.get_payment(payment.id)) == payment
    assert payment.to_dict()["account"] == "shop"
    other, _ = await ledger.create_payment(None, "0708374149", 10, "INV", "Order", account="hq")
    page = await ledger.list_payments(account="shop")
    assert [p.id for p in page.items] == [payment.id]
    assert other.id not in {p.id for p in page.items}


async def test_the_account_is_part_of_what_an_idempotent_repeat_must_match(
    ledger: Ledger,
) -> None:
    first, _ = await ledger.create_payment("k", "0708374149", 10, "INV", "Order", account="a")
    again, created = await ledger.create_payment("k", "0708374149", 10, "INV", "Order", account="a")
    assert again.id == first.id and not created
    with pytest.raises(IdempotencyConflictError):
        await ledger.create_payment("k", "0708374149", 10, "INV", "Order", account="b")
    with pytest.raises(ValidationError, match="account"):
        await ledger.create_payment(None, "0708374149", 10, "INV", "Order", account="x" * 33)


async def test_a_key_stored_before_accounts_existed_still_finds_its_payment(
    ledger: Ledger,
) -> None:
    # A row written by a version without accounts: no account, hashed without one.
    old, _ = await ledger.create_payment("old-key", "0708374149", 10, "INV", "Order")
    assert old.account is None
    again, created = await ledger.create_payment(
        "old-key", "0708374149", 10, "INV", "Order", account="default"
    )
    assert again.id == old.id and not created


async def test_payment_events_carry_their_subject(ledger: Ledger) -> None:
    payment, _ = await ledger.create_payment(None, "0708374149", 10, "INV", "Order")
    await ledger.mark_accepted(payment.id, "ws_CO_1", "m-1")
    page = await ledger.list_events(subject_id=payment.id)
    assert [e.type for e in page.items] == ["payment.pending"]
    event = page.items[0]
    assert (event.payment_id, event.subject_id) == (payment.id, payment.id)
    assert (await ledger.list_events(subject_id="rcp_nothing")).items == []


async def test_upgrading_from_settlement_keeps_every_event_with_its_subject(
    empty_database_url: str, clock: ManualClock
) -> None:
    ledger = await Ledger.open(empty_database_url, clock=clock)
    try:
        await upgrade(ledger.engine, "0003")
        async with ledger.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO payments (id, request_hash, status, phone, amount, "
                    "account_reference, description, flagged, version, created_at, updated_at, "
                    "check_count, checkout_request_id_verified) VALUES ('pay_1', 'h', "
                    "'pending', '254708374149', 10, 'INV', 'Order', false, 1, :now, :now, 0, "
                    "true)"
                ),
                {"now": clock.now().replace(tzinfo=None)},
            )
            await conn.execute(
                text(
                    "INSERT INTO payment_events (id, payment_id, type, payload, created_at) "
                    "VALUES ('evt_1', 'pay_1', 'payment.pending', :payload, :now)"
                ),
                {"payload": json.dumps({"id": "evt_1"}), "now": clock.now().replace(tzinfo=None)},
            )
        await ledger.migrate()
        async with ledger.engine.connect() as conn:
            row = (await conn.execute(select(payment_events.c.subject_id))).one()
            assert row.subject_id == "pay_1"
            account = (await conn.execute(select(payments.c.account))).scalar_one()
            assert account is None
        # Events of other kinds have no payment.
        async with ledger.engine.begin() as conn:
            await conn.execute(update(payment_events).values(payment_id=None))
    finally:
        await ledger.close()
