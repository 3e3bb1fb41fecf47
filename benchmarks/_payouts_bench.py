"""Benchmark 5: bulk B2C payouts paced by the client's rate limit, under spike arrest.

``pesa emulator --rate-limit R`` refuses requests beyond R per second per app with spike
arrest (``500.003.02``), as Daraja's gateway does. ``AsyncDaraja(rate_limit=R)`` sends the
payouts from 32 concurrent tasks. The baseline is the limit itself: throughput should reach
R within 10% while not one request is refused. The emulator's own request log is read
afterwards to count spike-arrest answers independently of the client.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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
