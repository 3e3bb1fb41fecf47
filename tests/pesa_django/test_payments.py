"""pesa.django against the emulator over real HTTP, on SQLite and PostgreSQL.

A shop's view calls ``request_payment``; the emulator plays Daraja and delivers its callbacks
to the live site; ``pesa_reconcile`` settles what callbacks do not. Every scenario phone of
the emulator's table ends in the state the customer's money is in, each transition sends its
signal exactly once, duplicates apply once and forged callbacks change nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db import transaction

from conftest import CALLBACK_TOKEN, fresh_phone, wait_for
from pesa.django import OpenTransactionError, conf, request_payment, resolve_flag
from pesa.django.models import Callback, Payment, PaymentEvent, StkQuery
from pesa.django.signals import SIGNALS
from pesa.ledger import IdempotencyConflictError
from pesa.testing import stk_callback_payload

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def received() -> Iterator[Counter[tuple[str, str]]]:
    """Every signal sent, counted by (payment id, event type)."""
    counts: Counter[tuple[str, str]] = Counter()
    handlers = []
    for event_type, signal in SIGNALS.items():

        def handler(sender: Any, payment: Payment, event: PaymentEvent, **kw: Any) -> None:
            assert sender is Payment and event.payment_id == payment.id and "detail" in kw
            counts[(payment.id, event.type)] += 1

        signal.connect(handler, weak=False, dispatch_uid=f"test-{event_type}")
        handlers.append((signal, event_type))
    yield counts
    for signal, event_type in handlers:
        signal.disconnect(dispatch_uid=f"test-{event_type}")


def pay(site: Any, phone: str, amount: int = 10, *, path: str = "/pay/", **extra: Any) -> str:
    body = {"phone": phone, "amount": amount, "reference": "ORDER1", **extra}
    response = httpx.post(f"{site.url}{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    payment_id: str = response.json()["id"]
    return payment_id


def final(payment_id: str, *, timeout: float = 20.0) -> Payment:
    def done() -> Payment | None:
        payment = Payment.objects.get(id=payment_id)
        return payment if payment.is_final and payment.verify_at is None else None

    result: Payment = wait_for(done, timeout=timeout, what=f"{payment_id} to settle")
    return result


def events(payment_id: str) -> list[str]:
    return list(
        PaymentEvent.objects.filter(payment_id=payment_id)
        .order_by("seq")
        .values_list("type", flat=True)
    )


SCENARIOS = {
    # phone: (status, result code) — docs/emulator.md, "Scenarios".
    "254708374149": ("succeeded", "0"),
    "254700000001": ("failed", "1"),
    "254700001032": ("failed", "1032"),
    "254700001037": ("failed", "1037"),
    "254700002001": ("failed", "2001"),
    "254700001001": ("rejected", "500.001.1001"),  # refused at push time
    "254700000404": ("succeeded", "0"),
    "254700000202": ("succeeded", "0"),
}


def test_every_scenario_phone_ends_where_the_money_is(
    site: Any, received: Counter[tuple[str, str]]
) -> None:
    ids = {phone: pay(site, phone) for phone in SCENARIOS}
    # The lost callback (…0404) is settled by one pesa_reconcile round once it is due.
    wait_for(
        lambda: Payment.objects.get(id=ids["254700000404"]).status == "pending", what="pending"
    )
    for phone, payment_id in ids.items():
        if phone == "254700000404":
            continue
        final(payment_id)
    wait_for(
        lambda: (
            (call_command("pesa_reconcile"), Payment.objects.get(id=ids["254700000404"]))[
                1
            ].is_final
        ),
        what="the lost callback's payment to be reconciled",
    )
    for phone, (status, code) in SCENARIOS.items():
        payment = Payment.objects.get(id=ids[phone])
        assert (payment.status, payment.result_code) == (status, code), phone
        assert not payment.flagged, (phone, payment.flag_reason)
        expected = {
            "succeeded": ["payment.pending", "payment.succeeded"],
            "failed": ["payment.pending", "payment.failed"],
            "rejected": ["payment.rejected"],
        }[status]
        assert events(payment.id) == expected, phone
        for event_type in expected:
            assert received[(payment.id, event_type)] == 1, (phone, event_type)
    assert sum(received.values()) == sum(len(events(i)) for i in ids.values())

    paid = Payment.objects.get(id=ids["254708374149"])
    assert paid.receipt and paid.paid_amount == 10 and paid.paid_phone == "254708374149"
    # The lost callback: paid by Daraja's query (no receipt: the query carries none).
    lost = Payment.objects.get(id=ids["254700000404"])
    assert lost.receipt is None
    assert list(StkQuery.objects.filter(payment=lost).values_list("outcome", flat=True)) == [
        "succeeded"
    ]
    # The duplicated callback: stored twice, applied once.
    dup = Payment.objects.get(id=ids["254700000202"])
    outcomes = wait_for(
        lambda: (
            sorted(Callback.objects.filter(payment=dup).values_list("outcome", flat=True))
            if Callback.objects.filter(payment=dup).count() == 2
            else None
        ),
        what="the second copy of the callback",
    )
    assert outcomes == ["applied", "duplicate"]
    # The refused push never reached the customer: no CheckoutRequestID, Daraja's reason.
    refused = Payment.objects.get(id=ids["254700001001"])
    assert refused.checkout_request_id is None and refused.failure_reason


def test_a_replayed_callback_is_stored_and_applied_once(
    site: Any, emulator: Any, received: Counter[tuple[str, str]]
) -> None:
    payment_id = pay(site, fresh_phone())
    payment = final(payment_id)
    sent = wait_for(
        lambda: [
            c
            for c in emulator.control.callbacks("stk")
            if payment.checkout_request_id in json.dumps(c.payload)
        ],
        what="the emulator's callback record",
    )
    url = f"{site.url}/mpesa/callbacks/{CALLBACK_TOKEN}/stk"
    again = httpx.post(url, json=sent[0].payload, timeout=10)
    assert again.status_code == 200 and again.json()["ResultCode"] == 0
    assert sorted(
        Callback.objects.filter(payment_id=payment_id).values_list("outcome", flat=True)
    ) == [
        "applied",
        "duplicate",
    ]
    assert events(payment_id) == ["payment.pending", "payment.succeeded"]
    assert received[(payment_id, "payment.succeeded")] == 1


def test_forged_callbacks_change_nothing(
    site: Any, settings: Any, emulator: Any, received: Counter[tuple[str, str]]
) -> None:
    url = f"{site.url}/mpesa/callbacks/{CALLBACK_TOKEN}/stk"
    # A wrong path token: 404, and nothing is stored.
    before = Callback.objects.count()
    forged = stk_callback_payload(
        checkout_request_id="ws_CO_forged", amount=10, phone="254708374149"
    )
    wrong = httpx.post(f"{site.url}/mpesa/callbacks/not-the-token-at-all/stk", json=forged)
    assert wrong.status_code == 404 and Callback.objects.count() == before
    # An id no payment has: stored raw for audit, 404 to the sender.
    unknown = httpx.post(url, json=forged)
    assert unknown.status_code == 404
    assert Callback.objects.get(checkout_request_id="ws_CO_forged").outcome == "unknown_payment"
    # A cancelled payment cannot be flipped to paid by whoever holds the token: the success
    # is kept as evidence, Daraja's query settles it (still cancelled), and it is flagged.
    cancelled = final(pay(site, "254700001032"))
    assert cancelled.status == "failed"
    flip = stk_callback_payload(
        checkout_request_id=cancelled.checkout_request_id,
        merchant_request_id=cancelled.merchant_request_id,
        amount=10,
        phone="254700001032",
    )
    answer = httpx.post(url, json=flip)
    assert answer.status_code == 200  # stored as evidence: "unverified"
    stored = Callback.objects.filter(payment=cancelled).order_by("received_at").last()
    assert stored is not None and stored.outcome == "unverified"
    call_command("pesa_reconcile")
    after = Payment.objects.get(id=cancelled.id)
    assert after.status == "failed" and after.result_code == "1032"
    assert after.flagged and "reported success" in (after.flag_reason or "")
    assert received[(after.id, "payment.flagged")] == 1
    # A person looks at it and resolves the flag: recorded, signalled once.
    resolved = resolve_flag(after, by="amina", note="statement shows no payment")
    assert not resolved.flagged and resolved.status == "failed"
    assert received[(after.id, "payment.flag_resolved")] == 1
    assert "amina" in PaymentEvent.objects.get(payment=after, type="payment.flag_resolved").detail
    # A success for another amount on a pending payment is refused (never applied).
    phone_2 = fresh_phone()
    emulator.control.add_rule(phone=phone_2, delay=30)  # the prompt stays open
    pending_id = pay(site, phone_2)
    pending = wait_for(
        lambda: Payment.objects.filter(id=pending_id, status="pending").first(), what="pending"
    )
    wrong_amount = stk_callback_payload(
        checkout_request_id=pending.checkout_request_id,
        merchant_request_id=pending.merchant_request_id,
        amount=1,
        phone=phone_2,
    )
    refused = httpx.post(url, json=wrong_amount)
    assert refused.status_code == 400
    still = Payment.objects.get(id=pending_id)
    assert still.status == "pending" and still.receipt is None and still.paid_amount is None
    # Off the allowlist (enforced): 403 and nothing stored.
    settings.PESA = {**settings.PESA, "callback_allowlist": "enforce"}
    count = Callback.objects.count()
    assert httpx.post(url, json=forged).status_code == 403
    assert Callback.objects.count() == count


def test_idempotency_key_returns_the_same_payment_and_pushes_once(site: Any, emulator: Any) -> None:
    pushes = len(emulator.control.requests("/mpesa/stkpush/v1/processrequest"))
    phone_3, key = fresh_phone(), f"order-{fresh_phone()}"
    first = pay(site, phone_3, key=key)
    again = pay(site, phone_3, key=key)
    assert first == again
    assert len(emulator.control.requests("/mpesa/stkpush/v1/processrequest")) == pushes + 1
    with pytest.raises(IdempotencyConflictError):
        request_payment(phone=phone_3, amount=11, account_reference="ORDER1", idempotency_key=key)
    final(first)


def test_request_payment_refuses_to_run_inside_a_transaction(site: Any, pesa_db: str) -> None:  # noqa: ARG001
    phone_4 = fresh_phone()
    with (
        pytest.raises(OpenTransactionError, match="non_atomic_requests"),
        transaction.atomic(using=pesa_db),
    ):
        request_payment(phone=phone_4, amount=10, account_reference="ORDER1")
    assert not Payment.objects.filter(phone=phone_4).exists()


def test_an_async_view_takes_a_payment(site: Any, received: Counter[tuple[str, str]]) -> None:
    payment_id = pay(site, fresh_phone(), path="/apay/")
    payment = final(payment_id)
    assert payment.status == "succeeded"
    assert received[(payment_id, "payment.succeeded")] == 1


def test_the_admin_finds_filters_shows_raw_callbacks_and_asks_daraja(
    site: Any, emulator: Any, admin_client: Any
) -> None:
    paid = final(pay(site, fresh_phone()))
    held_phone = fresh_phone()
    emulator.control.add_rule(phone=held_phone, delay=1.0, callback="drop")
    held = wait_for(
        lambda: Payment.objects.filter(id=pay(site, held_phone), status="pending").first(),
        what="a pending payment",
    )
    local = "0" + held_phone[3:6] + " " + held_phone[6:9] + " " + held_phone[9:]
    page = admin_client.get("/admin/pesa/payment/", {"q": local}).content.decode()
    assert held.id in page and paid.id not in page
    assert paid.id in admin_client.get("/admin/pesa/payment/", {"q": paid.receipt}).content.decode()
    pending = admin_client.get(
        "/admin/pesa/payment/", {"status__exact": "pending"}
    ).content.decode()
    assert held.id in pending and paid.id not in pending
    detail = admin_client.get(f"/admin/pesa/payment/{paid.id}/change/").content.decode()
    assert "MpesaReceiptNumber" in detail and paid.receipt in detail
    # The customer answered but the callback was lost: "Ask Daraja now" settles it.
    client = conf.daraja()
    wait_for(
        lambda: not client.stk_query(held.checkout_request_id or "").pending,
        what="the customer to answer",
    )
    answer = admin_client.post(
        "/admin/pesa/payment/",
        {"action": "ask_daraja_now", "_selected_action": [held.id]},
        follow=True,
    )
    assert answer.status_code == 200
    after = Payment.objects.get(id=held.id)
    assert after.status == "succeeded" and after.result_code == "0"
    assert f"Payment {held.id}: pending → succeeded" in answer.content.decode()
