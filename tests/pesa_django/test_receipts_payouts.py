"""C2B receipts and B2C payouts in pesa.django, against the emulator over real HTTP.

A customer pays the shortcode from the phone's menu (the emulator's C2B simulate): Daraja
asks the validation view, then posts the confirmation, which becomes one receipt, once per
TransID. The shop sends money with ``send_payout``: its Result settles it, and a lost Result
is settled by Transaction Status from ``pesa_reconcile``. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.core.management import call_command
from django.db.models import F

from conftest import CALLBACK_TOKEN, pesa_overrides, wait_for
from pesa.django import ValidationVerdict, conf, send_payout
from pesa.django.models import (
    Callback,
    Payout,
    PayoutEvent,
    Receipt,
    ReceiptEvent,
    TransactionStatusQuery,
)
from pesa.django.signals import PAYOUT_SIGNALS, RECEIPT_SIGNALS
from pesa.ledger import IdempotencyConflictError

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PHONE = "254708374149"
C2B_SHORTCODE = "600984"  # a PayBill of the emulator (174379 takes STK pushes only)


@pytest.fixture
def seen() -> Iterator[Counter[tuple[str, str]]]:
    """Every receipt and payout signal sent, counted by (subject id, event type)."""
    counts: Counter[tuple[str, str]] = Counter()
    connected = []
    for what, table in (("receipt", RECEIPT_SIGNALS), ("payout", PAYOUT_SIGNALS)):
        for event_type, signal in table.items():

            def handler(sender: Any, event: Any, what: str = what, **kw: Any) -> None:
                subject = kw[what]
                assert isinstance(subject, sender) and "detail" in kw
                counts[(subject.id, event.type)] += 1

            uid = f"test-{event_type}"
            signal.connect(handler, weak=False, dispatch_uid=uid)
            connected.append((signal, uid))
    yield counts
    for signal, uid in connected:
        signal.disconnect(dispatch_uid=uid)


def reference() -> str:
    return f"INV{secrets.token_hex(3).upper()}"


def customer_pays(emulator: Any, amount: int, account: str) -> None:
    conf.daraja().c2b_simulate(PHONE, amount, bill_ref_number=account, shortcode=C2B_SHORTCODE)
    wait_for(
        lambda: any(
            p.account_reference == account and p.status != "pending"
            for p in emulator.control.c2b_payments()
        ),
        what=f"the emulator to settle the C2B payment for {account}",
    )


def confirmation_sent(emulator: Any, account: str) -> dict[str, Any]:
    sent = [
        c.payload
        for c in emulator.control.callbacks("c2b_confirmation")
        if c.payload.get("BillRefNumber") == account
    ]
    assert len(sent) == 1, sent
    payload: dict[str, Any] = sent[0]
    return payload


# -- receipts -------------------------------------------------------------------------------


@pytest.mark.usefixtures("site")
def test_a_c2b_payment_is_one_receipt_however_often_its_confirmation_comes(
    emulator: Any, seen: Counter[tuple[str, str]]
) -> None:
    call_command("pesa_c2b_register", shortcode=C2B_SHORTCODE)
    account = reference()
    customer_pays(emulator, 120, account)
    receipt = wait_for(lambda: Receipt.objects.filter(account_reference=account).first())
    # Daraja signs nothing: under PESA_C2B_VERIFY=auto it counts, marked unverified.
    assert (receipt.status, receipt.amount, receipt.counts) == ("unverified", Decimal(120), True)
    assert receipt.msisdn is not None and receipt.phone is None  # masked by C2B v2
    validated = Callback.objects.filter(kind="c2b_validate").order_by("-received_at").first()
    assert validated is not None and validated.outcome == "accepted"  # validation off

    # Daraja re-sends the same confirmation: one receipt, acknowledged, nothing announced.
    payload = confirmation_sent(emulator, account)
    again = httpx.post(conf.site_url("c2b:confirmation"), json=payload, timeout=10)
    assert again.status_code == 200 and again.json() == {"ResultCode": 0, "ResultDesc": "Success"}
    assert Receipt.objects.filter(trans_id=receipt.trans_id).count() == 1
    outcomes = list(
        Callback.objects.filter(kind="c2b_confirm", receipt=receipt)
        .order_by("received_at")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["applied", "duplicate"]

    # A copy that disagrees (another amount) is a flag, never a second receipt.
    forged = {**payload, "TransAmount": "99999.00"}
    flagged = httpx.post(conf.site_url("c2b:confirmation"), json=forged, timeout=10)
    assert flagged.status_code == 200
    receipt.refresh_from_db()
    assert receipt.flagged and receipt.amount == Decimal(120)
    events = list(ReceiptEvent.objects.filter(receipt=receipt).values_list("type", flat=True))
    assert events == ["receipt.received", "receipt.flagged"]
    assert seen[(receipt.id, "receipt.received")] == 1
    assert seen[(receipt.id, "receipt.flagged")] == 1


@pytest.mark.usefixtures("site")
def test_a_forged_confirmation_is_refused_and_a_malformed_one_kept_as_evidence(
    seen: Counter[tuple[str, str]],
) -> None:
    body = {
        "TransactionType": "Pay Bill",
        "TransID": f"FRG{secrets.token_hex(4).upper()}",
        "TransTime": "20261203120000",
        "TransAmount": "5000.00",
        "BusinessShortCode": "174379",
        "BillRefNumber": "FORGED",
        "MSISDN": "2547****149",
        "FirstName": "Mallory",
    }
    url = conf.site_url("c2b:confirmation").replace(CALLBACK_TOKEN, "not-the-token-at-all-0000")
    refused = httpx.post(url, json=body, timeout=10)
    assert refused.status_code == 404
    assert not Receipt.objects.filter(trans_id=body["TransID"]).exists()
    assert not Callback.objects.filter(kind="c2b_confirm").exists()
    malformed = httpx.post(
        conf.site_url("c2b:confirmation"), json={"TransID": "X", "TransAmount": "-1"}, timeout=10
    )
    assert malformed.status_code == 400
    assert list(Callback.objects.values_list("kind", "outcome")) == [("c2b_confirm", "invalid")]
    assert not Receipt.objects.exists() and not seen


def slow_rule(request: Any) -> bool:  # noqa: ARG001 - the validator's signature
    time.sleep(3)
    return True


def reject_small(request: Any) -> ValidationVerdict:
    if request.amount < 100:
        return ValidationVerdict.reject("C2B00013", "below the minimum order")
    return ValidationVerdict.accepted("ORDER-OK")


def test_validation_asks_the_merchant_and_falls_back_when_it_is_slow(
    site: Any, emulator: Any, settings: Any, seen: Counter[tuple[str, str]]
) -> None:
    settings.PESA = pesa_overrides(
        base_url=emulator.base_url,
        public_url=site.url,
        c2b_validation="handler",
        c2b_validation_timeout=0.5,
        c2b_validation_fallback="reject",
    )
    call_command("pesa_c2b_register", shortcode=C2B_SHORTCODE)
    settings.PESA_C2B_VALIDATOR = "test_receipts_payouts.reject_small"
    small, large = reference(), reference()
    customer_pays(emulator, 50, small)
    customer_pays(emulator, 150, large)
    by_account = {p.account_reference: p for p in emulator.control.c2b_payments()}
    assert (by_account[small].status, by_account[small].result_code) == ("rejected", "C2B00013")
    assert by_account[large].status == "completed"
    receipt = wait_for(lambda: Receipt.objects.filter(account_reference=large).first())
    assert receipt.third_party_trans_id == "ORDER-OK"
    assert not Receipt.objects.filter(account_reference=small).exists()

    # A rule slower than PESA_C2B_VALIDATION_TIMEOUT: the fallback answers (reject).
    settings.PESA_C2B_VALIDATOR = "test_receipts_payouts.slow_rule"
    slow = reference()
    started = time.monotonic()
    customer_pays(emulator, 300, slow)
    assert time.monotonic() - started < 3  # answered without waiting for the rule
    payment = next(p for p in emulator.control.c2b_payments() if p.account_reference == slow)
    assert (payment.status, payment.result_code) == ("rejected", "C2B00016")
    kept = Callback.objects.filter(kind="c2b_validate").order_by("received_at")
    assert list(kept.values_list("outcome", flat=True)) == [
        "rejected",
        "accepted",
        "fallback_reject",
    ]
    assert not Receipt.objects.filter(account_reference=slow).exists()
    assert sum(seen.values()) == 1  # the one receipt


# -- payouts --------------------------------------------------------------------------------


def payout_events(payout: Payout) -> list[str]:
    return list(
        PayoutEvent.objects.filter(payout=payout).order_by("seq").values_list("type", flat=True)
    )


def b2c_sends(emulator: Any, payout: Payout) -> int:
    return sum(
        1
        for r in emulator.control.requests("/mpesa/b2c/v3/paymentrequest")
        if (r.body or {}).get("OriginatorConversationID") == payout.id
    )


def settled(payout_id: str) -> Payout:
    return wait_for(
        lambda: (p := Payout.objects.get(id=payout_id)).is_final and p,
        what=f"payout {payout_id} to settle",
    )


@pytest.mark.usefixtures("site")
def test_send_payout_is_idempotent_and_its_result_settles_it_once(
    emulator: Any, seen: Counter[tuple[str, str]]
) -> None:
    key = f"refund-{secrets.token_hex(4)}"
    first = send_payout(phone="0708374149", amount=150, idempotency_key=key, remarks="Refund")
    # Pending, or already succeeded: under load the emulator's Result can arrive before
    # Daraja's answer is recorded; it is kept as evidence and applied with the answer.
    assert first.status in ("pending", "succeeded"), first.failure_reason
    assert first.conversation_id, first.failure_reason
    again = send_payout(phone="+254708374149", amount=150, idempotency_key=key, remarks="Refund")
    assert again.id == first.id
    with pytest.raises(IdempotencyConflictError):
        send_payout(phone="0708374149", amount=151, idempotency_key=key, remarks="Refund")
    payout = settled(first.id)
    assert (payout.status, payout.paid_amount) == ("succeeded", Decimal(150))
    assert payout.receipt and b2c_sends(emulator, payout) == 1
    # Daraja delivers the Result again: stored, applied once.
    result = next(
        c.payload
        for c in emulator.control.callbacks("result")
        if c.payload["Result"].get("OriginatorConversationID") == payout.id
    )
    duplicate = httpx.post(conf.site_url("b2c-result"), json=result, timeout=10)
    assert duplicate.status_code == 200
    outcomes = Callback.objects.filter(kind="b2c_result", payout=payout).order_by("received_at")
    assert list(outcomes.values_list("outcome", flat=True)) == ["applied", "duplicate"]
    assert payout_events(payout) == ["payout.pending", "payout.succeeded"]
    assert seen[(payout.id, "payout.pending")] == 1
    assert seen[(payout.id, "payout.succeeded")] == 1
    assert Payout.objects.filter(idempotency_key=key).count() == 1


@pytest.mark.usefixtures("site")
def test_a_lost_b2c_result_is_settled_by_pesa_reconcile(
    emulator: Any, seen: Counter[tuple[str, str]]
) -> None:
    amount = 1000 + secrets.randbelow(8000)
    emulator.control.add_rule(operation="b2c", amount=amount, callback="drop")
    payout = send_payout(phone=PHONE, amount=amount, remarks="Salary", command="SalaryPayment")
    assert payout.status == "pending"
    time.sleep(1.0)  # the Result never comes
    assert Payout.objects.get(id=payout.id).status == "pending"

    def reconciled() -> Payout | None:
        call_command("pesa_reconcile")
        current = Payout.objects.get(id=payout.id)
        return current if current.is_final else None

    settled_payout: Payout = wait_for(reconciled, what="pesa_reconcile to settle the payout")
    assert (settled_payout.status, settled_payout.paid_amount) == ("succeeded", Decimal(amount))
    assert settled_payout.receipt and not settled_payout.flagged
    query = TransactionStatusQuery.objects.filter(payout=payout, outcome="answered").get()
    assert query.result_code == "0" and query.conversation_id
    assert payout_events(settled_payout) == ["payout.pending", "payout.succeeded"]
    assert seen[(payout.id, "payout.succeeded")] == 1
    assert b2c_sends(emulator, payout) == 1  # settled by asking, never by sending again

    # The status answer delivered again changes nothing.
    answer = next(
        c.payload
        for c in emulator.control.callbacks("result")
        if c.payload["Result"].get("ConversationID") == query.conversation_id
    )
    repeat = httpx.post(conf.site_url("status-result"), json=answer, timeout=10)
    assert repeat.status_code == 200
    stored = Callback.objects.filter(kind="status_result").order_by("received_at")
    assert list(stored.values_list("outcome", flat=True))[-1] == "duplicate"
    call_command("pesa_reconcile")
    assert payout_events(Payout.objects.get(id=payout.id)) == [
        "payout.pending",
        "payout.succeeded",
    ]
    assert sum(n for (pid, _), n in seen.items() if pid == payout.id) == 2


@pytest.mark.usefixtures("site")
def test_pesa_reconcile_counts_the_payout_deadline_from_the_first_send(
    emulator: Any, settings: Any
) -> None:
    deadline = 60.0
    settings.PESA = {**settings.PESA, "payout_deadline": deadline}
    amount = 1000 + secrets.randbelow(8000)
    emulator.control.add_rule(operation="b2c", amount=amount, callback="drop")
    payout = send_payout(phone=PHONE, amount=amount, remarks="Salary")
    assert payout.status == "pending" and payout.attempts == 1
    assert payout.first_sent_at == payout.created_at
    # A row committed long before its request left (past created_at + deadline, and past
    # the point where the rule gave up asking): the deadline is the send's, not the row's.
    Payout.objects.filter(id=payout.id).update(
        created_at=F("created_at") - timedelta(seconds=deadline + 400)
    )
    time.sleep(1.0)  # the Result never comes
    call_command("pesa_reconcile")
    asked = Payout.objects.get(id=payout.id)
    assert not asked.flagged and asked.expired_at is None
    assert TransactionStatusQuery.objects.filter(payout=payout).exists()

    def reconciled() -> Payout | None:
        call_command("pesa_reconcile")
        current = Payout.objects.get(id=payout.id)
        return current if current.is_final else None

    done: Payout = wait_for(reconciled, what="pesa_reconcile to settle the payout")
    assert done.status == "succeeded" and not done.flagged
    assert done.to_dict()["first_sent_at"] == payout.first_sent_at.isoformat()


@pytest.mark.usefixtures("site")
def test_a_forged_b2c_result_moves_no_money(emulator: Any, seen: Counter[tuple[str, str]]) -> None:
    amount = 1000 + secrets.randbelow(8000)
    emulator.control.add_rule(operation="b2c", amount=amount, callback="drop")
    payout = send_payout(phone=PHONE, amount=amount, remarks="Payout")
    forged = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": payout.id,
            "ConversationID": "AG_20261203_forged",
            "TransactionID": "FORGED0001",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "TransactionAmount", "Value": amount},
                    {"Key": "TransactionReceipt", "Value": "FORGED0001"},
                    {"Key": "ReceiverPartyPublicName", "Value": f"{PHONE} - Mallory"},
                ]
            },
        }
    }
    wrong_token = conf.site_url("b2c-result").replace(CALLBACK_TOKEN, "guessed-token-0000000000")
    assert httpx.post(wrong_token, json=forged, timeout=10).status_code == 404
    assert not Callback.objects.filter(kind="b2c_result").exists()
    # With the token but not the ConversationID Daraja gave us: kept, never applied.
    kept = httpx.post(conf.site_url("b2c-result"), json=forged, timeout=10)
    assert kept.status_code in (200, 400)
    current = Payout.objects.get(id=payout.id)
    assert current.status == "pending" and current.receipt is None
    assert Callback.objects.get(kind="b2c_result").outcome not in ("applied", "duplicate")
    assert seen[(payout.id, "payout.succeeded")] == 0


@pytest.mark.usefixtures("site")
def test_the_admin_finds_receipts_by_phone_and_asks_daraja_about_a_payout(
    emulator: Any, admin_client: Any
) -> None:
    call_command("pesa_c2b_register", shortcode=C2B_SHORTCODE)
    account = reference()
    customer_pays(emulator, 75, account)
    receipt = wait_for(lambda: Receipt.objects.filter(account_reference=account).first())
    # The confirmation shows the number masked (2547****149): a phone in any format finds it.
    for term in ("0708 374 149", "+254708374149", receipt.trans_id, account):
        page = admin_client.get("/admin/pesa/receipt/", {"q": term}).content.decode()
        assert receipt.trans_id in page, term
    missing = admin_client.get("/admin/pesa/receipt/", {"q": "0711000000"}).content.decode()
    assert receipt.trans_id not in missing
    detail = admin_client.get(f"/admin/pesa/receipt/{receipt.id}/change/").content.decode()
    assert "BillRefNumber" in detail and account in detail  # the raw confirmation, inline

    amount = 1000 + secrets.randbelow(8000)
    emulator.control.add_rule(operation="b2c", amount=amount, callback="drop")
    payout = send_payout(phone=PHONE, amount=amount, remarks="Payout")
    answer = admin_client.post(
        "/admin/pesa/payout/",
        {"action": "ask_daraja_now", "_selected_action": [payout.id]},
        follow=True,
    )
    assert answer.status_code == 200
    assert "Transaction Status asked" in answer.content.decode()
    done = settled(payout.id)
    assert done.status == "succeeded" and done.receipt
    page = admin_client.get("/admin/pesa/payout/", {"q": "0708374149"}).content.decode()
    assert payout.id in page
    detail = admin_client.get(f"/admin/pesa/payout/{payout.id}/change/").content.decode()
    assert "answered" in detail  # the Transaction Status query, inline
