"""Issue 3's benchmark: STK push + callback round trips per second through the emulator.

A round trip is an STK push answered by ``pesa emulator`` plus the callback the emulator
then POSTs to a receiver (a bare ASGI sink in its own process, which counts them). The
baseline is a bare ASGI endpoint answering the same STK JSON with no logic, served by the
same uvicorn set-up, driven by the same client (raw httpx, pooled, threads) at the same
concurrency. Both rates are wall-clock; each server's CPU seconds per request are reported
too, since on a 2-core machine the driver shares the cores with the server.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import httpx

from benchmarks._client_bench import _drive_threads, _Errors, _limits, nodelay_note
from benchmarks._daraja import emulator, fetch_token, phone, stk_body
from benchmarks._harness import Section, Server, Sizes, Target, start_server

__all__ = ["run"]

_CONCURRENCY = 32
# Seconds to wait, after the last push, for the remaining callbacks.
_CALLBACK_WAIT = 60.0


def _push_all(server: Server, n: int, callback_url: str, token: str, series: int) -> _Errors:
    errors = _Errors()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, limits=_limits(_CONCURRENCY), timeout=60) as client:

        def push(index: int) -> None:
            body = stk_body(phone(series, index), 1, "INV42", callback_url)
            response = client.post("/mpesa/stkpush/v1/processrequest", json=body, headers=headers)
            response.raise_for_status()

        _drive_threads(push, list(range(n)), _CONCURRENCY, errors)
    return errors


def _wait_for(sink: Server, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while sink.counters()["requests"] < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """Round trips per second through the emulator against a bare ASGI endpoint."""
    n = sizes.roundtrips
    section = Section(
        key="emulator",
        title="Emulator: STK push + callback round trips (issue 3)",
        what=(
            f"{n} STK pushes at concurrency {_CONCURRENCY} to `pesa emulator --stk-delay 0`, "
            "each followed by the emulator's callback to a receiver process; the time runs "
            "until the last callback has arrived."
        ),
        baseline=(
            "a bare ASGI endpoint returning the same STK push JSON without any logic, "
            "same uvicorn set-up, same driver and concurrency, same run"
        ),
    )
    with start_server("bare-stk", ["bare", "stk"]) as bare:
        warm = _push_all(bare, _CONCURRENCY, "http://127.0.0.1:9/cb", "x", 90)
        before, cpu0, t0 = bare.counters()["requests"], bare.cpu(), time.perf_counter()
        errors = _push_all(bare, n, "http://127.0.0.1:9/cb", "x", 91)
        bare_wall = time.perf_counter() - t0
        bare_cpu = (bare.cpu() - cpu0) / max(1, bare.counters()["requests"] - before)
        bare_rate = (n - errors.count) / bare_wall
        del warm
    log(f"  bare endpoint: {bare_rate:.0f} req/s, {bare_cpu * 1e6:.0f} us server CPU/request")

    with start_server("sink", ["bare", "sink"]) as sink, emulator(stk_delay=0) as emu:
        token = fetch_token(emu.url, True)
        callback_url = f"{sink.url}/callbacks/stk"
        _push_all(emu, _CONCURRENCY, callback_url, token, 92)
        _wait_for(sink, _CONCURRENCY, 30)
        sink0 = sink.counters()
        received0 = sink0["requests"]
        cpu0, t0 = emu.cpu(), time.perf_counter()
        errors = _push_all(emu, n, callback_url, token, 93)
        complete = _wait_for(sink, received0 + n - errors.count, _CALLBACK_WAIT)
        emu_wall = time.perf_counter() - t0
        emu_cpu = (emu.cpu() - cpu0) / n
        sink1 = sink.counters()
        delivered = sink1["requests"] - received0
        callback_connections = sink1["connections"] - sink0["connections"]
        fixed = emu.counters()["nodelay_fixed"]
    rate = delivered / emu_wall if emu_wall else math.nan
    log(f"  emulator: {rate:.0f} round trips/s, {emu_cpu * 1e6:.0f} us emulator CPU/round trip")
    ratio = rate / bare_rate
    capacity = bare_cpu / emu_cpu if emu_cpu else math.nan
    section.columns = ["server", "per second", "vs bare", "server CPU us per", "errors"]
    section.rows = [
        ["bare ASGI endpoint (requests)", round(bare_rate, 1), 1.0, round(bare_cpu * 1e6), 0],
        [
            "emulator (push + callback round trips)",
            round(rate, 1),
            round(ratio, 2),
            round(emu_cpu * 1e6),
            errors.count,
        ],
    ]
    churn = callback_connections / delivered if delivered else math.nan
    section.targets.append(
        Target(
            name="emulator round trips vs bare endpoint",
            target=">= 0.5x the bare endpoint's rate",
            measured=f"{ratio:.2f}x ({rate:.0f} vs {bare_rate:.0f}/s); by server CPU "
            f"{capacity:.2f}x",
            met=ratio >= 0.5 and complete,
            note="" if ratio >= 0.5 else f"{0.5 / ratio:.2f}x short (see the notes)",
        )
    )
    section.notes.append(
        f"The emulator opened {callback_connections} connections to deliver {delivered} "
        f"callbacks ({churn:.2f} per callback) with up to {_CONCURRENCY} pushes in flight."
    )
    if ratio < 0.5:
        section.notes.append(
            "Why the target is missed (diagnosed by profiling `pesa emulator` under this "
            "load, 2026-11-29): each accepted push spawns its callback delivery at once, so "
            "hundreds of deliveries queue in the emulator's one `httpx.AsyncClient` "
            "(`max_connections=200`, `max_keepalive_connections=50`). httpcore's pool scans "
            "every queued request against every connection each time one finishes "
            "(`AsyncConnectionPool._assign_requests_to_connections`, about 70% of the "
            "emulator's CPU in the profile): the cost per callback grows with the backlog, "
            "and connections beyond the 50 kept alive are closed and reopened. What would "
            "close it: bound the deliveries in flight (a semaphore of about 32, FIFO) and "
            "keep as many connections alive as may be open."
        )
    if not complete:
        section.notes.append(f"only {delivered} of {n} callbacks arrived within the time limit")
    if errors.count:
        section.notes.append(f"{errors.count} pushes failed; first: {errors.first}")
    section.notes.append(
        "A round trip costs the emulator two HTTP exchanges (it answers the push, then sends "
        "the callback as a client) plus Daraja's validation; the bare endpoint does one "
        "exchange and nothing else."
    )
    section.notes.append(nodelay_note(fixed, "emulator", "`pesa emulator`"))
    section.data = {
        "bare_rate": bare_rate,
        "emulator_rate": rate,
        "bare_cpu_per_request_s": bare_cpu,
        "emulator_cpu_per_roundtrip_s": emu_cpu,
        "delivered": delivered,
        "callback_connections": callback_connections,
    }
    return section
