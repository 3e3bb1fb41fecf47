"""Both clients, over loopback, against pesa's emulator: the business products end to end
(the request the client builds is the one the emulator's raw-JSON validation accepts, and
the callbacks it sends parse with pesa.daraja)."""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from pesa import AsyncDaraja, BadRequestError, Daraja
from pesa.daraja import (
    Invoice,
    parse_b2b_express_callback,
    parse_bill_payment,
    parse_ratiba_callback,
    parse_result,
)
from pesa.emulator import EmulatorConfig, nairobi_now
from pesa.testing import RunningEmulator, run_emulator

CLOSED = "http://127.0.0.1:9/cb"  # nothing listens: the emulator records what it sent
CREDENTIAL = base64.b64encode(bytes(range(256))).decode()  # the shape lenient mode accepts


@pytest.fixture(scope="module")
def running() -> Iterator[RunningEmulator]:
    config = EmulatorConfig(
        stk_delay=0.05, result_delay=0.02, callback_timeout=0.5, bill_manager_retries=0, seed=5
    )
    with run_emulator(config) as emulator:
        yield emulator


def _kwargs(running: RunningEmulator) -> dict[str, Any]:
    return {
        "environment": "emulator",
        "base_url": running.base_url,
        "consumer_key": "key",
        "consumer_secret": "secret",
        "shortcode": "600999",
        "initiator_name": "testapi",
        "security_credential": CREDENTIAL,
        "callback_url": CLOSED,
        "result_url": CLOSED,
        "timeout_url": CLOSED,
    }


class Client:
    """One test body, every client: ``await client("b2b_pay_bill", ...)``.

    ``kind``: ``"sync"``, ``"async"`` (httpx's pool) or ``"aiohttp"`` (AsyncDaraja on aiohttp).
    """

    def __init__(self, kind: str, running: RunningEmulator) -> None:
        self.kind = kind
        self.running = running
        self.sync = Daraja(**_kwargs(running)) if kind == "sync" else None
        self.async_ = (
            AsyncDaraja(**_kwargs(running), async_http="aiohttp" if kind == "aiohttp" else "httpx")
            if kind != "sync"
            else None
        )

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            target = getattr(self.sync, method)
            return await anyio.to_thread.run_sync(lambda: target(*args, **kwargs))
        assert self.async_ is not None
        return await getattr(self.async_, method)(*args, **kwargs)

    async def control(self, fn: Callable[[], Any]) -> Any:
        # The control API is sync: keep it off the event loop.
        return await anyio.to_thread.run_sync(fn)

    async def callback(self, kind: str, match: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + 10
        while True:
            sent = await self.control(lambda: self.running.control.callbacks(kind))
            found = [c.payload for c in sent if match(c.payload)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {kind} callback"
            await anyio.sleep(0.02)

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.async_ is not None:
            await self.async_.aclose()


@pytest.fixture(params=["sync", "async", "aiohttp"])
async def client(request: pytest.FixtureRequest, running: RunningEmulator) -> AsyncIterator[Client]:
    c = Client(request.param, running)
    yield c
    await c.close()


def _by_conversation(conversation_id: str | None) -> Callable[[Any], bool]:
    return lambda p: p["Result"]["ConversationID"] == conversation_id


async def test_pochi_result_parses(client: Client) -> None:
    ack = await client(
        "b2pochi_payment", "0708374149", 10, "Stock", originator_conversation_id=client.kind
    )
    result = parse_result(await client.callback("result", _by_conversation(ack.conversation_id)))
    assert result.succeeded and result.parameters["TransactionAmount"] == 10


async def test_b2b_family_and_tax_results_parse(client: Client) -> None:
    acks = [
        await client("b2b_pay_bill", 600000, 239, "353353", requester="0700000000"),
        await client("b2b_buy_goods", 5123456, 120),
        await client("b2c_top_up", 600997, 1000),
        await client("remit_tax", 500, "2020123456789"),
    ]
    results = [
        parse_result(await client.callback("result", _by_conversation(ack.conversation_id)))
        for ack in acks
    ]
    assert all(r.succeeded for r in results), [r.result_desc for r in results]
    assert results[0].reference_data["BillReferenceNumber"] == "353353"
    assert results[3].parameters["ReceiverPartyPublicName"].endswith("Tax Collecting Company")


async def test_express_checkout_callback_matches_the_request_ref(client: Client) -> None:
    answer = await client("b2b_express_checkout", 5123456, 71, "INV-71", "Acme Supplies")
    payload = await client.callback(
        "b2b_express", lambda p: p["requestId"] == answer.request_ref_id
    )
    callback = parse_b2b_express_callback(payload)
    assert callback.succeeded and callback.amount == 71


async def test_pull_recovers_payments_the_shortcode_was_never_told_of(client: Client) -> None:
    shortcode = {"sync": "600992", "async": "600978", "aiohttp": "600979"}[client.kind]
    registered = await client("pull_register", "0708374149", CLOSED, shortcode=shortcode)
    assert registered.response_code in ("1000", "1001")
    control = client.running.control
    await client.control(lambda: control.add_rule(operation="c2b", callback="drop", times=2))
    paid = [
        await client.control(
            lambda n=n: control.customer_pays(
                shortcode=shortcode, account_reference=f"P{n}", amount=50 + n, wait=10
            )
        )
        for n in range(2)
    ]
    page = await client("pull_query", nairobi_now() - timedelta(hours=1), shortcode=shortcode)
    found = {t.transaction_id: t for t in page.transactions}
    assert {p.trans_id for p in paid} <= set(found)
    assert found[paid[1].trans_id].amount == 51 and found[paid[1].trans_id].bill_reference == "P1"
    every = await client(
        "pull_transactions", nairobi_now() - timedelta(hours=47), shortcode=shortcode
    )
    assert [t.transaction_id for t in every] == [t.transaction_id for t in page.transactions]


async def test_qr_code_image_is_the_png_asked_for(client: Client) -> None:
    answer = await client("qr_code", "TEST SUPERMARKET", "Invoice Test", 1, "BG", 373132, size=200)
    assert answer.is_png and answer.response_code == "00"  # success, as Daraja spells it
    assert struct.unpack(">II", answer.image[16:24]) == (200, 200)


async def test_ratiba_acknowledged_then_accepted_by_the_customer(client: Client) -> None:
    answer = await client(
        "ratiba_create",
        f"Rent {client.kind}",
        "0708374149",
        4500,
        "HOUSE12",
        frequency="monthly",
        start_date=date(2024, 9, 5),
        end_date=date(2025, 9, 5),
    )
    ref = answer.response_header.response_ref_id
    payload = await client.callback("ratiba", lambda p: p["ResponseHeader"]["responseRefID"] == ref)
    callback = parse_ratiba_callback(payload)
    assert callback.succeeded and callback.transaction_id


async def test_bill_manager_invoice_paid_reconciled_and_not_cancellable(client: Client) -> None:
    shortcode = {"sync": "600000", "async": "600997", "aiohttp": "600996"}[client.kind]
    account = f"ACC-{client.kind}"
    joined = await client(
        "bill_manager_opt_in", "billing@example.com", "0708374149", CLOSED, shortcode=shortcode
    )
    assert joined.app_key
    invoice = Invoice(
        f"INV-{client.kind}",
        "Jane Doe",
        "0708374149",
        800,
        account,
        "Fees",
        "Aug 2021",
        date(2021, 10, 12),
    )
    await client("bill_manager_invoice", invoice)
    control = client.running.control
    paid = await client.control(
        lambda: control.customer_pays(
            shortcode=shortcode, account_reference=account, amount=800, wait=10
        )
    )
    payload = await client.callback("bill_payment", lambda p: p["transactionId"] == paid.trans_id)
    payment = parse_bill_payment(payload)
    assert payment.paid_amount == 800 and payment.account_reference == account
    done = await client(
        "bill_manager_reconcile",
        payment,
        external_reference=invoice.external_reference,
        full_name="Jane Doe",
        invoice_name="Fees",
    )
    assert done.response_code == "200"
    with pytest.raises(BadRequestError) as info:
        await client("bill_manager_cancel_invoice", invoice.external_reference)
    assert info.value.error_code == "409"


@pytest.mark.slow
def test_pesa_qr_saves_the_decoded_png(running: RunningEmulator, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(PESA_BASE_URL=running.base_url, PESA_CONSUMER_KEY="k", PESA_CONSUMER_SECRET="s")
    target = tmp_path / "till.png"
    command = [
        sys.executable, "-m", "pesa", "qr", "--merchant-name", "TEST SUPERMARKET", "--ref",
        "Invoice Test", "--amount", "1", "--cpi", "373132", "--size", "250", "-o", str(target),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "saved to" in done.stdout
    image = target.read_bytes()
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", image[16:24]) == (250, 250)
    as_json = subprocess.run(
        [*command[:-1], str(tmp_path / "again.png"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert json.loads(as_json.stdout)["png"] is True
    bad = subprocess.run(
        [*command, "--trx-code", "XX"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 1 and "trx_code" in bad.stderr
