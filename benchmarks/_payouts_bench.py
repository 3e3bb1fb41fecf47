"""Benchmark 5: bulk B2C payouts paced by the client's rate limit, under spike arrest.

``pesa emulator --rate-limit R`` refuses requests beyond R per second per app with spike
arrest (``500.003.02``), as Daraja's gateway does. ``AsyncDaraja(rate_limit=R)`` sends the
payouts from 32 concurrent tasks. The baseline is the limit itself: throughput should reach
R within 10% while not one request is refused. The emulator's own request log is read
afterwards to count spike-arrest answers independently of the client.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio

from benchmarks._client_bench import _drive_async, _Errors
from benchmarks._daraja import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    certificate,
    control,
    drop_callbacks,
    emulator,
    phone,
)
from benchmarks._harness import Section, Sizes, Target, cpu_seconds

__all__ = ["run"]

_CONCURRENCY = 32
_ORG_SHORTCODE = "600000"


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """``sizes.payouts`` B2C payments at ``sizes.payout_rate`` per second."""
    from pesa import AsyncDaraja, RateLimitError

    n, rate = sizes.payouts, sizes.payout_rate
    section = Section(
        key="payouts",
        title="5. Bulk payouts: B2C under the spike-arrest threshold",
        what=(
            f"{n} B2C payments from {_CONCURRENCY} concurrent tasks with "
            f"`AsyncDaraja(rate_limit={rate:g})` against `pesa emulator --rate-limit {rate:g}` "
            "(spike arrest beyond it)."
        ),
        baseline=f"the rate limit itself, {rate:g} requests per second",
    )
    spike = 0
    with (
        tempfile.TemporaryDirectory(prefix="pesa-bench-") as tmp,
        emulator(rate_limit=rate) as server,
    ):
        drop_callbacks(server, "b2c")
        cert = certificate(server, Path(tmp))
        errors = _Errors()
        spiked: list[str] = []

        async def main() -> tuple[float, float]:
            async with AsyncDaraja(
                base_url=server.url,
                consumer_key=CONSUMER_KEY,
                consumer_secret=CONSUMER_SECRET,
                shortcode=_ORG_SHORTCODE,
                initiator_name="testapi",
                initiator_password="Safaricom999!*!",
                certificate_path=cert,
                result_url="https://merchant.example/b2c/result",
                timeout_url="https://merchant.example/b2c/timeout",
                rate_limit=rate,
            ) as mpesa:

                async def pay(index: int) -> None:
                    try:
                        await mpesa.b2c_payment(
                            phone(60, index),
                            10,
                            "Salary",
                            originator_conversation_id=f"bench-{uuid.uuid4()}",
                        )
                    except RateLimitError as err:
                        spiked.append(str(err))
                        raise

                cpu0, t0 = cpu_seconds(), time.perf_counter()
                await _drive_async(pay, list(range(n)), _CONCURRENCY, errors)
                return time.perf_counter() - t0, cpu_seconds() - cpu0

        wall, cpu = anyio.run(main)
        with control(server) as client:
            records = client.get("/requests", params={"path": "/mpesa/b2c"}).json()
        for record in records:
            response = record.get("response")
            if isinstance(response, dict) and response.get("errorCode") == "500.003.02":
                spike += 1
    throughput = (n - errors.count) / wall
    reach = throughput / rate
    log(f"  {throughput:.1f} payouts/s of {rate:g} allowed, {spike} spike arrests")
    section.columns = [
        "payouts",
        "limit /s",
        "payouts/s",
        "vs limit",
        "spike arrests (server log)",
        "errors",
        "client CPU us/payout",
    ]
    section.rows = [
        [n, rate, round(throughput, 1), round(reach, 3), spike, errors.count, round(cpu / n * 1e6)]
    ]
    section.targets.append(
        Target(
            name="payout throughput vs the rate limit",
            target="within 10% of the limit",
            measured=f"{reach:.3f}x ({throughput:.1f}/s of {rate:g}/s)",
            met=0.9 <= reach <= 1.1,
            note="" if reach >= 0.9 else f"{(1 - reach) * 100:.0f}% below the limit",
        )
    )
    section.targets.append(
        Target(
            name="requests refused for spike arrest",
            target="0",
            measured=f"{spike} (server log), {len(spiked)} raised to the caller",
            met=spike == 0 and not spiked,
        )
    )
    if errors.count:
        section.notes.append(f"{errors.count} payouts failed; first: {errors.first}")
    section.notes.append(
        "The emulator's limiter is a token bucket holding one second of requests; the "
        "client spaces requests evenly 1/rate apart, OAuth included."
    )
    section.data = {"wall_s": wall, "throughput": throughput, "spike_arrests": spike}
    return section


_GATEWAY_API_KEY = "bench-payouts-api-key-0123456789"


def run_gateway(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """One batch of ``sizes.gateway_payouts`` through ``pesa serve`` at its configured rate."""
    import httpx

    from benchmarks._gateway_bench import gateway, gateway_env, sqlite_database

    n, rate = sizes.gateway_payouts, sizes.gateway_payout_rate
    section = Section(
        key="payouts_gateway",
        title="5b. Bulk payouts through the gateway: the configured rate, no spike arrest",
        what=(
            f"One batch of {n} payouts (`POST /v1/payouts/batches`) to `pesa serve` (SQLite, "
            f"workers on, `PESA_PAYOUT_RATE={rate:g}`), which sends them to `pesa emulator "
            f"--rate-limit {rate:g}` (its own process; spike arrest beyond) and records each "
            "answer and each Result. The rate is measured from the emulator's own request "
            "log: B2C requests received, first to last."
        ),
        baseline=f"the configured rate itself, {rate:g} payouts per second",
    )
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(emulator(rate_limit=rate, extra=["--result-delay", "0.05"]))
        db = stack.enter_context(sqlite_database())
        token = uuid.uuid4().hex
        env = gateway_env(
            db.url,
            token,
            PESA_BASE_URL=emu.url,
            PESA_API_KEY=_GATEWAY_API_KEY,
            PESA_PAYOUT_RATE=f"{rate:g}",
        )
        gw = stack.enter_context(gateway(env))
        rows = [
            {"phone": phone(70, i), "amount": 10 + i % 5, "remarks": "Bench payout"}
            for i in range(n)
        ]
        headers = {"Authorization": f"Bearer {_GATEWAY_API_KEY}"}
        with httpx.Client(base_url=gw.url, headers=headers, timeout=60) as api:
            t0 = time.monotonic()
            response = api.post("/v1/payouts/batches", json={"batch_id": "bench", "payouts": rows})
            response.raise_for_status()
            committed = time.monotonic() - t0
            deadline = time.monotonic() + max(120.0, 4 * n / rate)
            summary: dict[str, Any] = response.json()
            while time.monotonic() < deadline and summary["settled"] < n:
                time.sleep(0.2)
                summary = api.get("/v1/payouts/batches/bench").json()
            settled_s = time.monotonic() - t0
        with control(emu) as client:
            records = client.get("/requests").json()
    b2c = [r for r in records if str(r.get("path", "")).startswith("/mpesa/b2c")]
    spike = sum(
        1
        for r in records
        if isinstance(r.get("response"), dict) and r["response"].get("errorCode") == "500.003.02"
    )
    accepted = [r for r in b2c if r.get("status_code") == 200]
    times = sorted(datetime.fromisoformat(r["received_at"]).timestamp() for r in b2c)
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    measured = (len(times) - 1) / span if span and span == span else float("nan")
    reach = measured / rate
    succeeded = int(summary["by_status"].get("succeeded", 0))
    log(f"  {measured:.1f} payouts/s of {rate:g} configured, {spike} spike arrests")
    section.columns = [
        "payouts",
        "configured /s",
        "sent /s (emulator log)",
        "vs configured",
        "spike arrests (emulator log)",
        "accepted B2C",
        "succeeded",
        "batch committed, s",
        "all settled, s",
    ]
    section.rows = [
        [
            n,
            rate,
            round(measured, 1),
            round(reach, 3),
            spike,
            len(accepted),
            succeeded,
            round(committed, 2),
            round(settled_s, 1),
        ]
    ]
    section.targets.append(
        Target(
            name="bulk payouts through the gateway vs the configured rate",
            target="within 10% of the configured rate",
            measured=f"{reach:.3f}x ({measured:.1f}/s of {rate:g}/s)",
            met=0.9 <= reach <= 1.1,
            note="" if reach >= 0.9 else f"{(1 - reach) * 100:.0f}% below the rate",
        )
    )
    section.targets.append(
        Target(
            name="payouts refused for spike arrest",
            target="0",
            measured=f"{spike} (emulator log)",
            met=spike == 0,
        )
    )
    section.targets.append(
        Target(
            name="payouts paid, once each",
            target=f"{n} accepted B2C, {n} succeeded",
            measured=f"{len(accepted)} accepted, {succeeded} succeeded",
            met=len(accepted) == n == succeeded
            and len({r["body"]["OriginatorConversationID"] for r in accepted}) == n,
        )
    )
    section.notes.append(
        "Every B2C request of the gateway takes a token of one bucket (`PESA_PAYOUT_RATE` "
        "per second, burst 1), so the requests leave evenly spaced; the emulator's limiter "
        "holds one second of requests. Each payout is three ledger transactions (the "
        "claim, shared by a batch of rows; Daraja's answer; the Result), so the rate a "
        "gateway can sustain is bounded by its database as well."
    )
    section.data = {
        "rate": measured,
        "configured": rate,
        "spike_arrests": spike,
        "accepted": len(accepted),
        "settled_s": settled_s,
    }
    return section
