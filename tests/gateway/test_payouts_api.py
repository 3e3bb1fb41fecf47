"""The payouts, refunds and balance API over HTTP (a live gateway, the emulator mounted)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa.emulator import Emulator, EmulatorConfig, EmulatorControl
from pesa.testing import RunningGateway, run_gateway

from .conftest import API_KEY, CALLBACK_TOKEN, gateway_settings

OPEN = ("created", "pending", "unknown")


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(EmulatorConfig(stk_delay=0.1, result_delay=0.05, seed=9))


@pytest.fixture
def gateway(database_url: str, emulator: Emulator) -> Iterator[RunningGateway]:
    settings = gateway_settings(
        database_url,
        payout_status_after=0.5,
        balance_wait=1.0,
        reconcile_min_age=0.5,
    )
    with run_gateway(settings, emulator=emulator) as running:
        yield running


@pytest.fixture
def api(gateway: RunningGateway) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=20) as client:
        yield client


def wait(api: httpx.Client, path: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        item: dict[str, Any] = api.get(path).json()
        if item["status"] not in OPEN or time.monotonic() > deadline:
            return item
        time.sleep(0.05)


def payout_body(**fields: Any) -> dict[str, Any]:
    body = {"phone": "0708374149", "amount": 1500, "remarks": "Salary"}
    body.update(fields)
    return body


BAD_PAYOUTS: list[tuple[dict[str, Any], str]] = [
    ({"amount": 5}, "amount"),
    ({"amount": "1500"}, "amount"),
    ({"amount": 300_000}, "amount"),
    ({"command": "Pay"}, "command"),
    ({"remarks": "x"}, "remarks"),
    ({"phone": "0808374149"}, "phone"),
    ({"account": "other"}, "account"),
    ({"extra": 1}, "extra"),
]


def test_a_bad_payout_is_refused_naming_the_field_and_nothing_is_sent(
    api: httpx.Client, emulator: Emulator
) -> None:
    for fields, field in BAD_PAYOUTS:
        response = api.post("/v1/payouts", json=payout_body(**fields))
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field, fields
    assert api.get("/v1/payouts").json()["data"] == []
    assert emulator.requests("/mpesa/b2c/v3/paymentrequest") == []


def test_a_payout_is_paid_once_and_its_retry_sends_nothing(
    api: httpx.Client, emulator: Emulator
) -> None:
    created = api.post("/v1/payouts", json=payout_body(), headers={"Idempotency-Key": "p-1"})
    assert created.status_code == 201
    payout = created.json()
    # Accepted (pending); on a busy machine the Result (50 ms later) may already be in.
    assert payout["status"] in ("pending", "succeeded")
    assert payout["originator_conversation_id"] == payout["id"]
    retry = api.post("/v1/payouts", json=payout_body(), headers={"Idempotency-Key": "p-1"})
    assert retry.json()["id"] == payout["id"]
    assert retry.headers["Idempotent-Replayed"] == "true"
    conflict = api.post(
        "/v1/payouts", json=payout_body(amount=1600), headers={"Idempotency-Key": "p-1"}
    )
    assert conflict.status_code == 409
    final = wait(api, f"/v1/payouts/{payout['id']}")
    assert final["status"] == "succeeded"
    assert final["receipt"] and final["recipient_name"] == "254708374149 - John Doe"
    assert len(emulator.requests("/mpesa/b2c/v3/paymentrequest")) == 1
    listed = api.get("/v1/payouts", params={"phone": "254708374149"}).json()["data"]
    assert [p["id"] for p in listed] == [payout["id"]]
    assert api.get("/v1/payouts/po_nobody").status_code == 404


def test_a_batch_is_committed_whole_and_paced_out(
    api: httpx.Client, emulator: Emulator, gateway: RunningGateway
) -> None:
    rows = [payout_body(phone=f"07000{i:05d}", amount=10 + i) for i in range(600)]
    # About 50 KB per 600 rows: more than 1,000 rows is over the REST API's 64 KiB cap, but
    # not over the batch route's own.
    big = [*rows, *rows, *rows]
    assert len(json.dumps({"payouts": big})) > 64 * 1024
    bad = api.post("/v1/payouts/batches", json={"batch_id": "b1", "payouts": [*rows[:3], {}]})
    assert bad.status_code == 422 and bad.json()["error"]["field"].startswith("payouts.3.")
    wrong = api.post(
        "/v1/payouts/batches",
        json={"batch_id": "b1", "payouts": [payout_body(amount=1)]},
    )
    assert wrong.json()["error"]["field"] == "payouts.0.amount"
    unauthenticated = httpx.post(f"{gateway.url}/v1/payouts/batches", json={"payouts": big})
    assert unauthenticated.status_code == 401
    accepted = api.post(
        "/v1/payouts/batches", json={"payouts": rows[:20]}, headers={"Idempotency-Key": "batch-1"}
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["batch_id"] == "batch-1" and accepted.json()["created"] == 20
    again = api.post(
        "/v1/payouts/batches", json={"payouts": rows[:20]}, headers={"Idempotency-Key": "batch-1"}
    )
    assert again.json()["created"] == 0 and again.headers["Idempotent-Replayed"] == "true"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        summary = api.get("/v1/payouts/batches/batch-1").json()
        if summary["settled"] == 20:
            break
        time.sleep(0.1)
    assert summary["by_status"]["succeeded"] == 20
    assert summary["amount_by_status"]["succeeded"] == sum(10 + i for i in range(20))
    page = api.get("/v1/payouts", params={"batch_id": "batch-1", "limit": 8}).json()
    assert [p["batch_row"] for p in page["data"]] == list(range(8))
    assert page["next_cursor"] == "7"
    ocids = [r.body["OriginatorConversationID"] for r in emulator.requests("/mpesa/b2c")]
    assert len(ocids) == len(set(ocids)) == 20
    assert api.get("/v1/payouts/batches/nobody").status_code == 404
    big_batch = api.post("/v1/payouts/batches", json={"batch_id": "big", "payouts": big})
    assert big_batch.status_code == 202, big_batch.text


def _paid(api: httpx.Client, amount: int = 100) -> dict[str, Any]:
    created = api.post(
        "/v1/payments",
        json={
            "phone": "0708374149",
            "amount": amount,
            "account_reference": "R",
            "description": "refund test",
        },
    ).json()
    payment = wait(api, f"/v1/payments/{created['id']}")
    assert payment["status"] == "succeeded"
    return payment


def test_refunds_over_http(api: httpx.Client, emulator: Emulator) -> None:
    assert api.post("/v1/payments/pay_nobody/refund").status_code == 404
    emulator.add_rule(phone="254711999999", delay=120, callback="drop")
    pending = api.post(
        "/v1/payments",
        json={"phone": "254711999999", "amount": 10, "account_reference": "R", "description": "d"},
    ).json()
    not_yet = api.post(f"/v1/payments/{pending['id']}/refund")
    assert not_yet.status_code == 409 and "only a succeeded" in not_yet.json()["error"]["message"]
    payment = _paid(api)
    part = api.post(f"/v1/payments/{payment['id']}/refund", json={"amount": 40})
    assert part.status_code == 409
    assert "PESA_REFUND_PARTIAL" in part.json()["error"]["rule"]
    made = api.post(
        f"/v1/payments/{payment['id']}/refund",
        json={"remarks": "Wrong size"},
        headers={"Idempotency-Key": "rf-1"},
    )
    assert made.status_code == 201
    refund = made.json()
    assert refund["amount"] == 100 and refund["original_receipt"] == payment["receipt"]
    replay = api.post(
        f"/v1/payments/{payment['id']}/refund",
        json={"remarks": "Wrong size"},
        headers={"Idempotency-Key": "rf-1"},
    )
    assert replay.json()["id"] == refund["id"] and replay.headers["Idempotent-Replayed"] == "true"
    final = wait(api, f"/v1/refunds/{refund['id']}")
    assert final["status"] == "succeeded" and final["receipt"]
    listed = api.get("/v1/refunds", params={"payment_id": payment["id"]}).json()["data"]
    assert [r["id"] for r in listed] == [refund["id"]]
    assert len(emulator.requests("/mpesa/reversal/v1/request")) == 1
    types = [
        e["type"] for e in api.get("/v1/events", params={"subject_id": refund["id"]}).json()["data"]
    ]
    assert types == ["refund.pending", "refund.succeeded"]


def test_the_balance_is_read_through_its_result_or_the_last_one_known(
    api: httpx.Client, emulator: Emulator
) -> None:
    emulator.add_rule(operation="account_balance", callback="drop", times=1)
    unknown = api.get("/v1/balance")
    assert unknown.status_code == 202, unknown.text
    assert unknown.json()["status"] == "pending" and unknown.json()["accounts"] == []
    assert int(unknown.headers["Retry-After"]) >= 1
    fresh = api.get("/v1/balance")
    assert fresh.status_code == 200, fresh.text
    body = fresh.json()
    assert body["fresh"] is True and body["shortcode"] == "174379"
    assert body["status"] == "read" and body["request_id"] != unknown.json()["request_id"]
    assert {a["name"] for a in body["accounts"]} >= {"Utility Account", "Working Account"}
    cached = api.get("/v1/balance", params={"max_age": 60}).json()
    assert cached["request_id"] == body["request_id"] and cached["fresh"] is False
    emulator.add_rule(operation="account_balance", callback="drop", times=1)
    stale = api.get("/v1/balance").json()
    assert stale["fresh"] is False and stale["request_id"] == body["request_id"]
    assert stale["age_seconds"] >= 0


def test_results_routes_check_the_token_and_keep_what_they_refuse(
    gateway: RunningGateway, api: httpx.Client, emulator: Emulator
) -> None:
    emulator.add_rule(operation="b2c", callback="drop", delay=30)
    payout = api.post("/v1/payouts", json=payout_body()).json()
    assert payout["status"] == "pending"
    base = f"{gateway.url}/callbacks"
    forged = {
        "Result": {
            "ResultType": 0,
            "ResultCode": 0,
            "ResultDesc": "The service request is processed successfully.",
            "OriginatorConversationID": payout["id"],
            "ConversationID": "AG_20261129_forged",
            "TransactionID": "FORGED0001",
            "ResultParameters": {
                "ResultParameter": [
                    {"Key": "TransactionAmount", "Value": 1500},
                    {"Key": "TransactionReceipt", "Value": "FORGED0001"},
                ]
            },
        }
    }
    assert httpx.post(f"{base}/wrong/b2c/result", json=forged).status_code == 404
    assert httpx.post(f"{base}/{CALLBACK_TOKEN}/nope/result", json=forged).status_code == 404
    assert httpx.post(f"{base}/{CALLBACK_TOKEN}/b2c/result", content=b"<xml/>").status_code == 400
    # The token alone is not enough: the ConversationID is not the one Daraja gave.
    assert httpx.post(f"{base}/{CALLBACK_TOKEN}/b2c/result", json=forged).status_code == 400
    # Even with the right ConversationID, a failure can only be reported for the payout's
    # own ids; a success without its amount waits for Transaction Status.
    forged["Result"]["ConversationID"] = payout["conversation_id"]
    del forged["Result"]["ResultParameters"]
    unverified = httpx.post(f"{base}/{CALLBACK_TOKEN}/b2c/result", json=forged)
    assert unverified.status_code == 200
    current = api.get(f"/v1/payouts/{payout['id']}").json()
    assert current["status"] == "pending" and current["receipt"] is None
    assert current["evidence_callback_id"] is not None
    oversized = httpx.post(f"{base}/{CALLBACK_TOKEN}/b2c/result", content=b"x" * (40 * 1024))
    assert oversized.status_code == 413


RECEIPT_ACCOUNTS = """
default = "paybill"

[accounts.paybill]
shortcode = "600997"
passkey = "paybill-passkey"
initiator_name = "testapi"
initiator_password = "Safaricom999!*!"
c2b_register = true
"""


@pytest.mark.slow
def test_a_confirmed_receipt_is_refunded_never_more_than_was_paid(
    database_url: str, tmp_path: Path
) -> None:
    """POST /v1/receipts/{id}/refund: a C2B payment given back by reversal of its TransID."""
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(RECEIPT_ACCOUNTS, encoding="utf-8")
    settings = gateway_settings(database_url, accounts_file=accounts, refund_partial="allow")
    emulator = Emulator(EmulatorConfig(result_delay=0.05, seed=19))
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        run_gateway(settings, emulator=emulator) as gateway,
        httpx.Client(base_url=gateway.url, headers=headers, timeout=20) as api,
        EmulatorControl(f"{gateway.url}/emulator", api_key=API_KEY) as control,
    ):
        deadline = time.monotonic() + 20
        while (api.get("/v1/accounts").json()["data"][0]["c2b_registration"] or {}).get(
            "status"
        ) != "registered":
            assert time.monotonic() < deadline, "C2B URLs not registered"
            time.sleep(0.05)
        paid = control.customer_pays(
            shortcode="600997", amount=300, account_reference="INV-9", wait=10
        )
        assert api.post("/v1/receipts/rcp_nobody/refund").status_code == 404
        receipt: dict[str, Any] = {}
        deadline = time.monotonic() + 20
        while receipt.get("status") != "confirmed":
            assert time.monotonic() < deadline, receipt
            page = api.get("/v1/receipts", params={"account_reference": "INV-9"}).json()
            receipt = page["data"][0] if page["data"] else {}
            time.sleep(0.05)
        assert receipt["trans_id"] == paid.trans_id
        path = f"/v1/receipts/{receipt['id']}/refund"
        too_much = api.post(path, json={"amount": 301})
        assert too_much.status_code == 409 and "more than remains" in too_much.text
        first = api.post(path, json={"amount": 100, "remarks": "Part back"})
        assert first.status_code == 201, first.text
        assert first.json()["original_receipt"] == paid.trans_id
        rest = api.post(path, json={"remarks": "The rest"})
        assert rest.status_code == 201 and rest.json()["amount"] == 200
        assert api.post(path).status_code == 409, "already refunded in full"
        finals = [wait(api, f"/v1/refunds/{r.json()['id']}") for r in (first, rest)]
        assert [f["status"] for f in finals] == ["succeeded", "succeeded"]
        listed = api.get("/v1/refunds", params={"receipt_id": receipt["id"]}).json()["data"]
        assert sorted(r["amount"] for r in listed) == [100, 200]
        reversals = emulator.requests("/mpesa/reversal/v1/request")
        assert [r.body["TransactionID"] for r in reversals] == [paid.trans_id] * 2


def test_a_receipt_waiting_for_daraja_cannot_be_refunded(database_url: str) -> None:
    """A confirmation not yet confirmed by Transaction Status never becomes a reversal."""
    import asyncio

    from pesa.ledger import Ledger, ReceiptAccount, RefundNotAllowedError
    from pesa.testing import c2b_payment_payload

    async def run() -> None:
        async with await Ledger.open(database_url) as ledger:
            await ledger.migrate()
            body = json.dumps(c2b_payment_payload(trans_id="RKL51ZDR4F")).encode()
            outcome = await ledger.receipts.ingest_confirmation(
                body, source_ip=None, account_for=lambda _: ReceiptAccount("paybill", True)
            )
            assert outcome.receipt is not None and outcome.receipt.status == "received"
            with pytest.raises(RefundNotAllowedError, match="received"):
                await ledger.refunds.create(
                    None,
                    outcome.receipt.id,
                    None,
                    remarks="Forged?",
                    receiver_party="600997",
                    partial=True,
                    claim=timedelta(seconds=30),
                    source="receipt",
                )

    asyncio.run(run())
