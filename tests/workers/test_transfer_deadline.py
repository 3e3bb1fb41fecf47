"""The transfer checker's deadline counts from a payout's first send, not its creation.

A real ledger (SQLite, and PostgreSQL when configured), the in-process emulator, the
gateway's sender and checker, and one frozen clock they all share. Results go to a closed
port (lost, as when the gateway is down); the emulator records what it sent, and the test
hands a Transaction Status answer to the ledger as the gateway's status route would.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from pesa import AsyncDaraja, Settings
from pesa.emulator import Emulator, EmulatorConfig
from pesa.gateway import TokenBucket
from pesa.gateway._accounts import AccountClients, effective_accounts
from pesa.gateway._transfers import InitiatorUrls, TransferChecker, TransferOptions, TransferSender
from pesa.ledger import Ledger, Payout, PayoutSpec, TransferStatus

from .conftest import ManualClock, OpenLedger

CLOSED = "http://127.0.0.1:9/callbacks/token"  # nothing listens: every Result is lost
CREDENTIAL = base64.b64encode(bytes(range(256))).decode()  # the shape lenient mode accepts
SHORTCODE = "600999"
DEADLINE = 60.0
STATUS_AFTER = 2.0
GRACE = 10.0  # transfer_grace(STATUS_AFTER)
# Queued this long behind the payout pace: past created_at + deadline, and past the point
# where the old rule gave up asking (deadline + 300 s) and flagged at once.
QUEUED = DEADLINE + 400.0


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    config = EmulatorConfig(result_delay=0.0, callback_timeout=0.5, seed=11)
    async with Emulator(config) as running:
        yield running


@pytest.fixture
async def clients(emulator: Emulator) -> AsyncIterator[AccountClients]:
    settings = Settings(_env_file=None, env="emulator")  # type: ignore[call-arg]
    async with AsyncDaraja(
        environment="emulator",
        base_url="http://emulator.test",
        consumer_key="deadline-key",
        consumer_secret="deadline-secret",
        shortcode=SHORTCODE,
        initiator_name="testapi",
        security_credential=CREDENTIAL,
        max_retries=0,
        transport=httpx.ASGITransport(app=emulator.app),
    ) as client:
        yield AccountClients(effective_accounts(settings), {"default": client})


def options() -> TransferOptions:
    return TransferOptions(
        rate=100.0,
        status_after=STATUS_AFTER,
        deadline=DEADLINE,
        recheck_interval=20.0,
        recheck_cap=20.0,
        lease=120.0,
        batch_size=50,
    )


def workers(
    ledger: Ledger, clients: AccountClients, clock: ManualClock
) -> tuple[TransferSender, TransferChecker]:
    urls = InitiatorUrls(CLOSED)
    sender = TransferSender(
        ledger,
        clients,
        settings=Settings(_env_file=None),  # type: ignore[call-arg]
        urls=urls,
        options=options(),
        clock=clock,
    )
    checker = TransferChecker(
        ledger,
        clients,
        bucket=TokenBucket(100.0, 20, clock=clock),
        urls=urls,
        options=options(),
        clock=clock,
    )
    return sender, checker


def spec(amount: int) -> PayoutSpec:
    return PayoutSpec("254708374149", amount, "BusinessPayment", "Late batch", shortcode=SHORTCODE)


async def payout(ledger: Ledger, payout_id: str) -> Payout:
    found = await ledger.payouts.get(payout_id)
    assert found is not None
    return found


async def answer_status(ledger: Ledger, emulator: Emulator, payout_id: str) -> None:
    """Deliver the emulator's Transaction Status Result about ``payout_id`` to the ledger."""
    await emulator.wait_idle()
    query = await ledger.status_queries.latest(payout_id)
    assert query is not None and query.conversation_id
    (sent,) = [
        c
        for c in emulator.callbacks("result")
        if c.payload["Result"].get("ConversationID") == query.conversation_id
    ]
    outcome = await ledger.status_queries.ingest_result(
        json.dumps(sent.payload).encode(), source_ip=None
    )
    assert outcome.status == "applied", outcome.detail


async def test_a_payout_sent_late_is_checked_and_settled_not_flagged_at_its_creation_deadline(
    open_ledger: OpenLedger, clients: AccountClients, emulator: Emulator, clock: ManualClock
) -> None:
    ledger = await open_ledger()
    sender, checker = workers(ledger, clients, clock)
    await ledger.payouts.create_batch("late", [spec(150), spec(160)])
    created_at = clock.now()

    # The rows wait behind the pace (a long spike-arrest pause) well past created + deadline.
    clock.advance(seconds=QUEUED)
    assert await sender.run_once() == 2
    sent_at = clock.now()
    rows, _ = await ledger.payouts.page(batch_id="late")
    settled, lost = sorted(rows, key=lambda p: p.amount)
    for row in (settled, lost):
        assert row.status is TransferStatus.PENDING
        assert row.created_at == created_at and row.first_sent_at == sent_at

    # Its Result is lost; once it is overdue the checker asks Daraja instead of flagging it.
    clock.advance(seconds=STATUS_AFTER + 1)
    report = await checker.run_once()
    assert (report.claimed, report.queried, report.expired) == (2, 2, 0)
    await answer_status(ledger, emulator, settled.id)
    done = await payout(ledger, settled.id)
    assert done.status is TransferStatus.SUCCEEDED and done.receipt
    assert not done.flagged and done.expired_at is None

    # The other one's status answer is lost too: asked again until first_sent_at + deadline,
    # then once more at the deadline, and flagged only when that last answer is overdue.
    deadline = sent_at + timedelta(seconds=DEADLINE)
    row = await payout(ledger, lost.id)
    assert row.next_check_at is not None and row.next_check_at <= deadline
    clock.set(deadline - timedelta(seconds=1))
    report = await checker.run_once()
    assert (report.queried, report.expired) == (1, 0)
    clock.set(deadline)
    report = await checker.run_once()
    assert (report.queried, report.expired) == (1, 0)
    assert not (await payout(ledger, lost.id)).flagged
    clock.advance(seconds=GRACE)
    report = await checker.run_once()
    assert (report.queried, report.expired) == (0, 1)
    flagged = await payout(ledger, lost.id)
    assert flagged.status is TransferStatus.UNKNOWN and flagged.flagged  # never failed
    assert flagged.expired_at == deadline + timedelta(seconds=GRACE)
