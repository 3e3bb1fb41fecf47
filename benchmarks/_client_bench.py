"""Benchmark 1: STK pushes through pesa's clients, the snippet way and the raw-httpx floor.

Several ways to send the same STK pushes to ``pesa emulator`` (its own process):

- ``AsyncDaraja`` (tasks) and ``Daraja`` (threads): pesa's clients, unmodified;
  ``AsyncDaraja`` twice, on httpx's own pool and on aiohttp's (``async_http="aiohttp"``);
- the snippet way: ``requests.get`` for a new OAuth token and ``requests.post`` for the push,
  each on a new connection, as tutorial code does;
- the floor: raw httpx, one pooled client, a token fetched once beforehand and the payload
  built by hand; async (tasks) and sync (threads), so each pesa client has its own floor;
- the aiohttp floor: raw ``aiohttp.ClientSession``, the same shortcuts (the floor of
  ``AsyncDaraja`` on aiohttp).

Per push the emulator process counts HTTP requests, TCP connections, TLS connections (one
handshake each) and OAuth requests (see ``benchmarks/_server.py``); the client's CPU time is
this process's ``time.process_time()`` over the measured region. Every run first warms up
with ``4 x concurrency`` pushes (the pool fills, the token is fetched); counts "per push in
steady state" exclude the warm-up, OAuth totals include it.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import requests

from benchmarks._daraja import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    PASSKEY,
    SHORTCODE,
    drop_callbacks,
    emulator,
    fetch_token,
    phone,
    stk_body,
)
from benchmarks._harness import Section, Server, Sizes, Target, counter_delta, cpu_seconds

__all__ = ["CLIENTS", "run"]

CALLBACK_URL = "https://merchant.example/callbacks/stk"
CLIENTS = (
    "pesa-async",
    "pesa-async-aiohttp",
    "pesa-sync",
    "snippet",
    "floor-async",
    "floor-aiohttp",
    "floor-sync",
)
_FLOOR_OF = {
    "pesa-async": "floor-async",
    "pesa-async-aiohttp": "floor-aiohttp",
    "pesa-sync": "floor-sync",
}
_FLOORS = ("floor-async", "floor-aiohttp", "floor-sync")
_series = iter(range(1, 10_000))


@dataclass
class Run:
    """One client, one concurrency, one emulator configuration."""

    client: str
    network: str
    concurrency: int
    pushes: int
    wall: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    errors: int = 0
    first_error: str | None = None
    steady: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Successful pushes per second."""
        return (self.pushes - self.errors) / self.wall if self.wall else math.nan

    @property
    def cpu_per_push_us(self) -> float:
        """Client CPU microseconds per push."""
        return self.cpu / self.pushes * 1e6 if self.pushes else math.nan

    def per_push(self, name: str) -> float:
        """A steady-state counter per push."""
        return self.steady.get(name, 0) / self.pushes if self.pushes else math.nan


class _Errors:
    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._lock = threading.Lock()

    def add(self, err: BaseException) -> None:
        with self._lock:
            self.count += 1
            if self.first is None:
                self.first = f"{type(err).__name__}: {err}"[:300]


# -- drivers --------------------------------------------------------------------------------


async def _drive_async(
    push: Callable[[int], Awaitable[Any]], indices: list[int], concurrency: int, errors: _Errors
) -> None:
    async def worker(mine: list[int]) -> None:
        for index in mine:
            try:
                await push(index)
            except Exception as err:  # counted and reported, never hidden
                errors.add(err)

    async with anyio.create_task_group() as group:
        for k in range(concurrency):
            group.start_soon(worker, indices[k::concurrency])


def _drive_threads(
    push: Callable[[int], Any], indices: list[int], concurrency: int, errors: _Errors
) -> None:
    def worker(mine: list[int]) -> None:
        for index in mine:
            try:
                push(index)
            except Exception as err:  # counted and reported, never hidden
                errors.add(err)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker, indices[k::concurrency]) for k in range(concurrency)]:
            future.result()


class _Measure:
    """Counters, CPU and wall time around the measured region of one run."""

    def __init__(self, server: Server, run: Run) -> None:
        self.server = server
        self.run = run
        self.start_counters = server.counters()

    def begin(self) -> None:
        gc.collect()
        self.steady_counters = self.server.counters()
        self.server_cpu = self.server.cpu()
        self.cpu = cpu_seconds()
        self.wall = time.perf_counter()

    def end(self, errors: _Errors) -> None:
        self.run.wall = time.perf_counter() - self.wall
        self.run.cpu = cpu_seconds() - self.cpu
        self.run.server_cpu = self.server.cpu() - self.server_cpu
        end = self.server.counters()
        self.run.steady = counter_delta(self.steady_counters, end)
        self.run.total = counter_delta(self.start_counters, end)
        self.run.errors = errors.count
        self.run.first_error = errors.first


# -- the five ways ----------------------------------------------------------------------------


def _pesa_kwargs(server: Server) -> dict[str, Any]:
    return {
        "base_url": server.url,
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
        "shortcode": SHORTCODE,
        "passkey": PASSKEY,
        "callback_url": CALLBACK_URL,
        "verify": server.ca_path or True,
    }


def _run_pesa_async(
    server: Server, run: Run, warmup: list[int], work: list[int], backend: str = "httpx"
) -> None:
    from pesa import AsyncDaraja

    async def main() -> None:
        measure = _Measure(server, run)
        async with AsyncDaraja(**_pesa_kwargs(server), async_http=backend) as mpesa:

            async def push(index: int) -> None:
                await mpesa.stk_push(phone(series, index), 1, "INV42", "Bench")

            await _drive_async(push, warmup, run.concurrency, _Errors())
            errors = _Errors()
            measure.begin()
            await _drive_async(push, work, run.concurrency, errors)
            measure.end(errors)

    series = next(_series)
    anyio.run(main)


def _run_pesa_async_aiohttp(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    _run_pesa_async(server, run, warmup, work, backend="aiohttp")


def _run_pesa_sync(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    from pesa import Daraja

    series = next(_series)
    measure = _Measure(server, run)
    with Daraja(**_pesa_kwargs(server)) as mpesa:

        def push(index: int) -> None:
            mpesa.stk_push(phone(series, index), 1, "INV42", "Bench")

        _drive_threads(push, warmup, run.concurrency, _Errors())
        errors = _Errors()
        measure.begin()
        _drive_threads(push, work, run.concurrency, errors)
        measure.end(errors)


def _run_snippet(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    # What tutorials do: a fresh token and fresh connections for every push.
    series = next(_series)
    verify = server.ca_path or True
    oauth_url = f"{server.url}/oauth/v1/generate?grant_type=client_credentials"
    push_url = f"{server.url}/mpesa/stkpush/v1/processrequest"

    def push(index: int) -> None:
        token = requests.get(
            oauth_url,
            auth=requests.auth.HTTPBasicAuth(CONSUMER_KEY, CONSUMER_SECRET),
            verify=verify,
            timeout=30,
        ).json()["access_token"]
        payload = stk_body(phone(series, index), 1, "INV42", CALLBACK_URL)
        response = requests.post(
            push_url,
            json=payload,
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=30,
        )
        response.raise_for_status()
        response.json()

    measure = _Measure(server, run)
    _drive_threads(push, warmup, run.concurrency, _Errors())
    errors = _Errors()
    measure.begin()
    _drive_threads(push, work, run.concurrency, errors)
    measure.end(errors)


def _limits(concurrency: int) -> httpx.Limits:
    # The floor keeps every connection it opens: one per concurrent caller, all reused.
    size = max(concurrency, 10)
    return httpx.Limits(max_connections=size, max_keepalive_connections=size)


def _run_floor_async(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    series = next(_series)

    async def main() -> None:
        measure = _Measure(server, run)
        token = fetch_token(server.url, server.ca_path or True)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=server.url,
            verify=server.ca_path or True,
            limits=_limits(run.concurrency),
            timeout=30,
        ) as client:

            async def push(index: int) -> None:
                payload = stk_body(phone(series, index), 1, "INV42", CALLBACK_URL)
                response = await client.post(
                    "/mpesa/stkpush/v1/processrequest", json=payload, headers=headers
                )
                response.raise_for_status()
                response.json()

            await _drive_async(push, warmup, run.concurrency, _Errors())
            errors = _Errors()
            measure.begin()
            await _drive_async(push, work, run.concurrency, errors)
            measure.end(errors)

    anyio.run(main)


def _run_floor_aiohttp(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    import ssl

    import aiohttp

    series = next(_series)
    push_url = f"{server.url}/mpesa/stkpush/v1/processrequest"

    async def main() -> None:
        measure = _Measure(server, run)
        token = fetch_token(server.url, server.ca_path or True)
        headers = {"Authorization": f"Bearer {token}"}
        context = (
            ssl.create_default_context(cafile=server.ca_path)
            if server.ca_path
            else ssl.create_default_context()
        )
        connector = aiohttp.TCPConnector(limit=max(run.concurrency, 10), ssl=context)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:

            async def push(index: int) -> None:
                payload = stk_body(phone(series, index), 1, "INV42", CALLBACK_URL)
                async with session.post(push_url, json=payload, headers=headers) as response:
                    response.raise_for_status()
                    await response.json()

            await _drive_async(push, warmup, run.concurrency, _Errors())
            errors = _Errors()
            measure.begin()
            await _drive_async(push, work, run.concurrency, errors)
            measure.end(errors)

    anyio.run(main)


def _run_floor_sync(server: Server, run: Run, warmup: list[int], work: list[int]) -> None:
    series = next(_series)
    measure = _Measure(server, run)
    token = fetch_token(server.url, server.ca_path or True)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(
        base_url=server.url,
        verify=server.ca_path or True,
        limits=_limits(run.concurrency),
        timeout=30,
    ) as client:

        def push(index: int) -> None:
            payload = stk_body(phone(series, index), 1, "INV42", CALLBACK_URL)
            response = client.post(
                "/mpesa/stkpush/v1/processrequest", json=payload, headers=headers
            )
            response.raise_for_status()
            response.json()

        _drive_threads(push, warmup, run.concurrency, _Errors())
        errors = _Errors()
        measure.begin()
        _drive_threads(push, work, run.concurrency, errors)
        measure.end(errors)


_RUNNERS: dict[str, Callable[[Server, Run, list[int], list[int]], None]] = {
    "pesa-async": _run_pesa_async,
    "pesa-async-aiohttp": _run_pesa_async_aiohttp,
    "pesa-sync": _run_pesa_sync,
    "snippet": _run_snippet,
    "floor-async": _run_floor_async,
    "floor-aiohttp": _run_floor_aiohttp,
    "floor-sync": _run_floor_sync,
}


def measure_client(
    server: Server,
    client: str,
    network: str,
    concurrency: int,
    pushes: int,
    warmup_rounds: int = 4,
) -> Run:
    """Warm up (``warmup_rounds`` x ``concurrency`` pushes), then send ``pushes`` STK pushes
    with ``client`` at ``concurrency``."""
    run = Run(client, network, concurrency, pushes)
    warmup = list(range(warmup_rounds * concurrency))
    work = list(range(len(warmup), len(warmup) + pushes))
    _RUNNERS[client](server, run, warmup, work)
    return run


# -- the benchmark ------------------------------------------------------------------------------


# pesa and the floor are each measured this many times (alternating) and the run with the
# least CPU per push is kept: on a shared machine, interference only ever adds CPU time.
_REPEATS = 2


def _matrix(
    server: Server,
    network: str,
    concurrencies: tuple[int, ...],
    pushes: int,
    log: Callable[[str], None],
    repeats: int = _REPEATS,
    warmup_rounds: int = 4,
) -> list[Run]:
    runs: list[Run] = []
    for concurrency in concurrencies:
        best: dict[str, Run] = {}
        for repeat in range(repeats):
            for client in CLIENTS:
                if repeat and client == "snippet":
                    continue  # only pesa and the floor enter a CPU ratio
                run = measure_client(server, client, network, concurrency, pushes, warmup_rounds)
                log(
                    f"  {network:<14} c={concurrency:<3} {client:<18} "
                    f"{run.throughput:8.1f} push/s {run.cpu_per_push_us:8.0f} us CPU/push  "
                    f"errors={run.errors}"
                )
                if client not in best or run.cpu < best[client].cpu:
                    best[client] = run
        runs += [best[client] for client in CLIENTS]
    return runs


def run(sizes: Sizes, log: Callable[[str], None]) -> Section:
    """Benchmark 1 at ``sizes``: plain HTTP, TLS, and TLS with 30 ms of latency."""
    # The smoke test (tiny) runs each client once, after one round of warm-up: it proves the
    # harness, not the figures.
    tiny = sizes.name == "tiny"
    repeats, rounds = (1, 1) if tiny else (_REPEATS, 4)
    section = Section(
        key="client",
        title="1. Client: STK pushes against the emulator",
        what=(
            f"{sizes.pushes} STK pushes per client and concurrency (after a warm-up of "
            f"{rounds} x concurrency pushes) to `pesa emulator` in its own process; "
            f"{sizes.latency_pushes} pushes at concurrency 1 with `--tls --latency 30`."
        ),
        baseline=(
            "the floor: raw httpx, one pooled client, a pre-fetched token, hand-built "
            "payloads (async for AsyncDaraja, threads for Daraja; raw aiohttp for "
            "AsyncDaraja on aiohttp); and the snippet way "
            "(`requests`, new token and new connections per push) for throughput"
        ),
    )
    runs: list[Run] = []
    with emulator() as server:
        drop_callbacks(server)
        runs += _matrix(server, "http", (1, 32), sizes.pushes, log, repeats, rounds)
    with emulator(tls=True) as server:
        drop_callbacks(server)
        runs += _matrix(server, "tls", (1, 32), sizes.pushes, log, repeats, rounds)
    with emulator(tls=True, latency_ms=30) as server:
        drop_callbacks(server)
        runs += _matrix(server, "tls+30ms", (1,), sizes.latency_pushes, log)
    _report(section, runs, repeats)
    return section


def nodelay_note(fixed: int, server: str, command: str) -> str:
    """The TCP_NODELAY sentence of a section: how many connections the hook had to fix."""
    if not fixed:
        return (
            f"TCP_NODELAY: every {server} connection had it (the benchmark's connection hook "
            "sets it where a server forgot it, and says so; see docs/benchmarks.md)."
        )
    return (
        f"TCP_NODELAY: the benchmark set it on {fixed} {server} connections that lacked it. "
        f"{command} binds a socket made with protocol 0, so asyncio leaves Nagle's "
        "algorithm on: each response body then waits for the client's delayed ACK, about "
        "40 ms per request on a kept-alive connection but not on a fresh one, and every "
        "pooled client looks about 20 times slower than it is. The fix belongs in the "
        "server: create the socket with `socket.IPPROTO_TCP`, or set TCP_NODELAY."
    )


def _find(runs: list[Run], client: str, network: str, concurrency: int) -> Run:
    for candidate in runs:
        if (candidate.client, candidate.network, candidate.concurrency) == (
            client,
            network,
            concurrency,
        ):
            return candidate
    raise KeyError((client, network, concurrency))


def _report(section: Section, runs: list[Run], repeats: int = _REPEATS) -> None:
    section.columns = [
        "network",
        "conc.",
        "client",
        "push/s",
        "vs snippet",
        "CPU us/push",
        "CPU vs floor",
        "requests/push",
        "new TCP/push",
        "new TLS/push",
        "TLS handshakes (total)",
        "OAuth calls (total)",
        "errors",
    ]
    for r in runs:
        snippet = _find(runs, "snippet", r.network, r.concurrency)
        floor_name = _FLOOR_OF.get(r.client, r.client if r.client in _FLOORS else "")
        floor = _find(runs, floor_name, r.network, r.concurrency) if floor_name else None
        section.rows.append(
            [
                r.network,
                r.concurrency,
                r.client,
                round(r.throughput, 1),
                round(r.throughput / snippet.throughput, 2),
                round(r.cpu_per_push_us),
                round(r.cpu / floor.cpu, 2) if floor else "",
                round(r.per_push("requests"), 3),
                round(r.per_push("connections"), 3),
                round(r.per_push("tls_connections"), 3) if r.network != "http" else "-",
                r.total.get("tls_connections", 0) if r.network != "http" else "-",
                r.total.get("oauth_requests", 0),
                r.errors,
            ]
        )
    section.data["runs"] = [
        {
            "client": r.client,
            "network": r.network,
            "concurrency": r.concurrency,
            "pushes": r.pushes,
            "wall_s": r.wall,
            "cpu_s": r.cpu,
            "server_cpu_s": r.server_cpu,
            "throughput": r.throughput,
            "errors": r.errors,
            "first_error": r.first_error,
            "steady": r.steady,
            "total": r.total,
        }
        for r in runs
    ]
    errors = [r for r in runs if r.errors]
    for r in errors:
        section.notes.append(
            f"{r.client} ({r.network}, c={r.concurrency}): {r.errors} errors, first: "
            f"{r.first_error}"
        )

    # CPU: pesa against its floor, without latency, on plain HTTP and on TLS (AsyncDaraja on
    # aiohttp: against the fastest async floor, in _async_targets).
    for client in ("pesa-async", "pesa-sync"):
        ratios = {
            (net, c): _find(runs, client, net, c).cpu / _find(runs, _FLOOR_OF[client], net, c).cpu
            for net in ("http", "tls")
            for c in (1, 32)
        }
        worst = max(ratios.values())
        section.targets.append(
            Target(
                name=f"{client} CPU time vs {_FLOOR_OF[client]}",
                target="<= 1.3x",
                measured=", ".join(f"{net} c={c}: {v:.2f}x" for (net, c), v in ratios.items()),
                met=worst <= 1.3,
                note=""
                if worst <= 1.3
                else f"worst case {worst:.2f}x, {(worst / 1.3 - 1) * 100:.0f}% over the target",
            )
        )
    _async_targets(section, runs)
    if any(t.met is False for t in section.targets):
        section.notes.append(
            "Where pesa spends CPU beyond the floor: the request model (pydantic validation "
            "of phone, amount, reference and URL), the STK password and Nairobi timestamp, "
            "the response model, the token's `httpx.Auth` flow and the (filtered) debug log "
            "calls; the floor skips all of them. Differences of 10-20% between runs of the "
            "same code are common on a busy 2-core machine: re-run on a quiet one."
        )
    async_1 = _find(runs, "floor-async", "http", 1)
    async_32 = _find(runs, "floor-async", "http", 32)
    if async_32.cpu_per_push_us > 2 * async_1.cpu_per_push_us:
        section.notes.append(
            f"httpx's async pool is expensive under concurrency: the async floor spends "
            f"{async_32.cpu_per_push_us:.0f} us of CPU per push at concurrency 32 against "
            f"{async_1.cpu_per_push_us:.0f} us at 1 (the threaded floor: "
            f"{_find(runs, 'floor-sync', 'http', 32).cpu_per_push_us:.0f} us), so without "
            "latency AsyncDaraja at concurrency 32 can be slower than the snippet way; pesa "
            "pays the same cost as raw httpx there, the CPU ratio stays near 1."
        )
    pesa_runs = [r for r in runs if r.client.startswith("pesa")]
    oauth = sorted({r.total.get("oauth_requests", 0) for r in pesa_runs})
    section.targets.append(
        Target(
            name="OAuth calls per credential per token lifetime (pesa)",
            target="exactly 1",
            measured=f"{', '.join(map(str, oauth))} per run (each run one client, one token)",
            met=oauth == [1],
        )
    )
    steady = [r for r in pesa_runs if r.network != "http"]
    requests_per = max(r.per_push("requests") for r in steady)
    # A pool never re-opens a connection when every handshake of the run (warm-up
    # included) fits in one connection per concurrent caller; the connections opened after
    # the warm-up are then the pool still growing to its working size, not churn.
    reopened = [
        f"{r.client} {r.network} c={r.concurrency}: {r.total.get('tls_connections', 0)}"
        for r in steady
        if r.total.get("tls_connections", 0) > r.concurrency
    ]
    growth = sum(r.steady.get("tls_connections", 0) for r in steady)
    pushes = sum(r.pushes for r in steady)
    section.targets.append(
        Target(
            name="steady state (pesa, TLS): requests per push, new handshakes",
            target="1 request, 0 new handshakes",
            measured=(
                f"max {requests_per:.3f} requests/push; TLS handshakes per run never above "
                f"the concurrency (one connection per concurrent caller, none re-opened)"
                if not reopened
                else f"max {requests_per:.3f} requests/push; connections re-opened: "
                + "; ".join(reopened)
            )
            + (
                f"; {growth} of those handshakes came after the warm-up, over {pushes} "
                "pushes, while the pool grew"
                if growth
                else ""
            ),
            met=requests_per <= 1.0 + 1e-9 and not reopened,
        )
    )
    for client in ("pesa-async", "pesa-sync"):
        fast = _find(runs, client, "tls+30ms", 1)
        slow = _find(runs, "snippet", "tls+30ms", 1)
        ratio = fast.throughput / slow.throughput
        section.targets.append(
            Target(
                name=f"{client} vs snippet way, --tls --latency 30, concurrency 1",
                target=">= 1.8x throughput",
                measured=f"{ratio:.2f}x ({fast.throughput:.1f} vs {slow.throughput:.1f} push/s)",
                met=ratio >= 1.8,
                note="" if ratio >= 1.8 else f"{1.8 / ratio:.2f}x short",
            )
        )
    fixed = sum(r.total.get("nodelay_fixed", 0) for r in runs)
    section.notes.append(
        "Per-push counts are after the warm-up; totals include it. A pooled client opens "
        "at most one connection per concurrent caller; the snippet way opens two per push."
    )
    section.notes.append(nodelay_note(fixed, "emulator", "`pesa emulator`"))
    section.notes.append(
        "CPU time is the client process's `time.process_time()` (user + system, all threads) "
        "over the measured pushes; the emulator runs in another process on the same cores. "
        + (
            f"pesa and the floor are each run {repeats} times, alternating, and the run with "
            "the least CPU per push is shown (interference on a shared machine only adds CPU)."
            if repeats > 1
            else "Each client ran once (the smoke-test size): the CPU ratios are noisy."
        )
    )
    section.notes.append(
        "The snippet way computes its Timestamp in Africa/Nairobi time; tutorial code uses "
        "the server's local time and is refused as an invalid timestamp outside UTC+3."
    )


# Issue 12, target 4: AsyncDaraja at concurrency 32 against the threaded sync client.
_ASYNC_THROUGHPUT = 0.9
_ASYNC_CPU = 1.2


def _async_targets(section: Section, runs: list[Run]) -> None:
    """AsyncDaraja (each pool) against Daraja in threads at c=32, and the fastest floor."""
    for client in ("pesa-async-aiohttp", "pesa-async"):
        pool = "aiohttp" if client.endswith("aiohttp") else "httpx"
        speed = {}
        cpu = {}
        for net in ("http", "tls"):
            mine, sync = _find(runs, client, net, 32), _find(runs, "pesa-sync", net, 32)
            speed[net] = mine.throughput / sync.throughput
            cpu[net] = mine.cpu_per_push_us / sync.cpu_per_push_us
        slowest, costliest = min(speed.values()), max(cpu.values())
        # The aiohttp pool is the candidate the target is for; httpx's is shown beside it.
        informational = client == "pesa-async"
        section.targets.append(
            Target(
                name=f"AsyncDaraja ({pool} pool) vs Daraja in threads, c=32: throughput",
                target=f">= {_ASYNC_THROUGHPUT}x",
                measured=", ".join(f"{net}: {v:.2f}x" for net, v in speed.items()),
                met=None if informational else slowest >= _ASYNC_THROUGHPUT,
                note=""
                if slowest >= _ASYNC_THROUGHPUT
                else f"worst {slowest:.2f}x" + (" (httpx's own async pool)" * informational),
                informational=informational,
            )
        )
        section.targets.append(
            Target(
                name=f"AsyncDaraja ({pool} pool) vs Daraja in threads, c=32: CPU per push",
                target=f"<= {_ASYNC_CPU}x",
                measured=", ".join(f"{net}: {v:.2f}x" for net, v in cpu.items()),
                met=None if informational else costliest <= _ASYNC_CPU,
                note="" if costliest <= _ASYNC_CPU else f"worst {costliest:.2f}x",
                informational=informational,
            )
        )
    ratios = {}
    for net in ("http", "tls"):
        for c in (1, 32):
            fastest = min(
                (_find(runs, floor, net, c) for floor in ("floor-async", "floor-aiohttp")),
                key=lambda r: r.cpu_per_push_us,
            )
            mine = _find(runs, "pesa-async-aiohttp", net, c)
            ratios[(net, c)] = (mine.cpu_per_push_us / fastest.cpu_per_push_us, fastest.client)
    worst = max(v for v, _ in ratios.values())
    if worst > 1.3:
        section.notes.append(
            "AsyncDaraja on aiohttp against raw aiohttp: the client still builds and reads "
            "every request through httpx's `AsyncClient` (URL merging, the `httpx.Auth` "
            "flow, header objects, cookie extraction, the `Response` model), a few hundred "
            "microseconds per push that raw aiohttp skips, on top of pesa's own work (the "
            "request model, STK password, response model) that the floors skip too. "
            "Closing it means an async send path that talks to aiohttp without httpx's "
            "client (its own token header and answer parsing), not a faster transport."
        )
    section.targets.append(
        Target(
            name="AsyncDaraja (aiohttp pool) CPU per push vs the fastest async floor",
            target="<= 1.3x",
            measured=", ".join(
                f"{net} c={c}: {v:.2f}x ({floor})" for (net, c), (v, floor) in ratios.items()
            ),
            met=worst <= 1.3,
            note="" if worst <= 1.3 else f"worst case {worst:.2f}x",
        )
    )
