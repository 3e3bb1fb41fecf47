"""Scenario 2: the emulator drops 20% of the STK callbacks; the reconciler settles 100%.

The reconciler runs the whole time, as in ``pesa serve``: it races callbacks that arrive
while it queries, so a result may be learnt twice (once by query, once by callback) and
must still be applied once.
"""

from __future__ import annotations

import random

import anyio
import pytest

from pesa import AsyncDaraja
from pesa.emulator import SANDBOX_PASSKEY, EmulatorConfig
from pesa.gateway import Reconciler, ReconcilerOptions
from pesa.ledger import Ledger, PaymentStatus
from pesa.testing import serve_emulator

from ._harness import CallbackSink, audit, bounded_gather, phone_for, serve_asgi, size
from ._report import Recorder

SCENARIO = "2. Lost callbacks"
DROPPED_SHARE = 0.2
FAILED_SHARE = 0.2
# Amounts select the emulator's behaviour through its rules (see test body).
PAID, PAID_DROPPED, CANCELLED, CANCELLED_DROPPED = 11, 12, 13, 14

pytestmark = pytest.mark.timeout(size(180, 3_600))


def emulator_client(base_url: str, callback_url: str) -> AsyncDaraja:
    """An AsyncDaraja pointed at a loopback emulator with the sandbox shortcode."""
    return AsyncDaraja(
        environment="emulator",
        base_url=base_url,
        consumer_key="reliability-key",
        consumer_secret="reliability-secret-value",
        shortcode="174379",
        passkey=SANDBOX_PASSKEY,
        callback_url=callback_url,
        timeout=30,
    )


async def wait_until_settled(ledger: Ledger, payments: int) -> None:
    """Poll the ledger until every payment is terminal (the caller bounds the wait)."""
    while True:
        counts = (await ledger.stats()).payments
        open_ = sum(counts.get(s, 0) for s in ("created", "pending", "unknown"))
        if open_ == 0 and sum(counts.values()) == payments:
            return
        await anyio.sleep(0.2)


async def test_reconciler_settles_every_payment_whose_callback_was_dropped(
    database: tuple[str, str], recorder: Recorder
) -> None:
    backend, url = database
    payments_n = size(ci=100, soak=2_000)
    rng = random.Random(2_2026)
    # A generous delivery timeout: a callback the sink applied but answered after the
    # emulator gave up (a busy machine) would count as refused without being refused.
    config = EmulatorConfig(stk_delay=0.2, seed=2026, max_records=100_000, callback_timeout=60)
    async with serve_emulator(config) as emulator:
        daraja = emulator.emulator
        daraja.add_rule(operation="stk", amount=PAID_DROPPED, callback="drop")
        daraja.add_rule(operation="stk", amount=CANCELLED, result_code=1032)
        daraja.add_rule(
            operation="stk", amount=CANCELLED_DROPPED, result_code=1032, callback="drop"
        )
        ledger = await Ledger.open(url)
        await ledger.migrate()
        sink = CallbackSink(ledger)
        try:
            async with (
                serve_asgi(sink.app()) as sink_base,
                emulator_client(emulator.base_url, f"{sink_base}/callbacks/stk") as client,
            ):
                reconciler = Reconciler(
                    ledger,
                    client,
                    options=ReconcilerOptions(
                        interval=0.2,
                        min_age=0.0,
                        recheck_interval=0.3,
                        deadline=3_600,
                        query_rate=100,
                        query_burst=10,
                        batch_size=100,
                    ),
                )
                expected: dict[str, PaymentStatus] = {}
                dropped: set[str] = set()

                async def pay(i: int) -> None:
                    drop = rng.random() < DROPPED_SHARE
                    fail = rng.random() < FAILED_SHARE
                    amount = (
                        (CANCELLED_DROPPED if drop else CANCELLED)
                        if fail
                        else (PAID_DROPPED if drop else PAID)
                    )
                    payment, _ = await ledger.create_payment(
                        f"lost-{i}", phone_for(i), amount, f"INV{i}", "Reliability"
                    )
                    push = await client.stk_push(phone_for(i), amount, f"INV{i}", "Reliability")
                    await ledger.mark_accepted(
                        payment.id, push.checkout_request_id, push.merchant_request_id
                    )
                    expected[payment.id] = PaymentStatus.FAILED if fail else PaymentStatus.SUCCEEDED
                    if drop:
                        dropped.add(payment.id)

                stop = anyio.Event()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(reconciler.run, stop)
                    await bounded_gather([lambda i=i: pay(i) for i in range(payments_n)], 8)
                    with anyio.fail_after(size(150, 3_000)):
                        await wait_until_settled(ledger, payments_n)
                    # Late callbacks (after a query settled their payment) must still land.
                    await daraja.wait_idle(timeout=60)
                    stop.set()
            book = await audit(ledger)
        finally:
            await ledger.close()

    pushes = daraja.requests("/mpesa/stkpush/v1/processrequest")
    queries = daraja.requests("/mpesa/stkpushquery/v1/query")
    sent = daraja.callbacks("stk")
    wrong = [pid for pid, status in expected.items() if book.payments[pid].status != status]
    counts = {
        "payments": payments_n,
        "stk_pushes": len(pushes),
        "callbacks_dropped": len(dropped),
        "callbacks_delivered": sum(1 for c in sent if c.delivered),
        "callbacks_refused": sum(1 for c in sent if not c.delivered),
        "callback_before_accepted": sink.outcomes["unknown_payment"],
        "applied_by_callback": sink.outcomes["applied"],
        "settled_by_query": payments_n - sink.outcomes["applied"],
        "callback_after_query": sink.outcomes["duplicate"],
        "stk_queries": len(queries),
        "settled": sum(1 for p in book.payments.values() if p.is_terminal),
        "lost": len(wrong),
        "applied_twice": book.applied_twice,
    }
    result = recorder.record(
        SCENARIO,
        backend,
        counts,
        must_be_zero=("lost", "applied_twice"),
        must_equal=(
            ("stk_pushes", "payments"),
            ("settled", "payments"),
            ("callbacks_refused", "callback_before_accepted"),
        ),
        about=(
            f"STK pushes through AsyncDaraja to the emulator, which drops {DROPPED_SHARE:.0%} "
            f"of the callbacks ({FAILED_SHARE:.0%} of customers cancel); the reconciler runs "
            "throughout with no minimum age, racing the callbacks that do arrive. A callback "
            "that overtakes the commit of Daraja's acceptance (`callback_before_accepted`) "
            "names a CheckoutRequestID the ledger does not know yet: it is kept raw, refused, "
            "and its payment is settled by query."
        ),
    )
    assert result.passed, result.failures
    assert counts["settled_by_query"] >= len(dropped)
