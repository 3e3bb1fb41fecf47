"""What every benchmark shares: server processes, their counters, CPU and memory, results."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks._server import COUNTER_NAMES, COUNTERS_SIZE, read_counters

__all__ = [
    "REPO",
    "Machine",
    "Section",
    "Server",
    "Sizes",
    "Target",
    "cpu_seconds",
    "machine",
    "percentile",
    "start_server",
]

REPO = Path(__file__).resolve().parent.parent
_URL = re.compile(r"(https?://[0-9A-Za-z.\-\[\]:]+)")
_TICKS = os.sysconf("SC_CLK_TCK")


# -- sizes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does. ``issue`` is the size issue 5 asks for."""

    name: str
    pushes: int  # client benchmark, per client and concurrency (no latency)
    latency_pushes: int  # client benchmark with --tls --latency 30, concurrency 1
    roundtrips: int  # emulator STK push + callback round trips
    callbacks: int  # callback ingestion, per database
    e2e_payments: int  # end to end, POST /v1/payments -> webhook
    reconcile_payments: int  # pending payments whose callbacks were lost
    reconcile_rate: float  # STK queries per second allowed (client and emulator)
    payouts: int  # B2C payments
    payout_rate: float  # emulator spike-arrest threshold and client rate limit
    gateway_payouts: int  # B2C payouts of one batch through `pesa serve`
    gateway_payout_rate: float  # PESA_PAYOUT_RATE, and the emulator's spike-arrest threshold
    webhook_events: int = 300  # event to webhook: callbacks whose webhook latency is measured

    def to_dict(self) -> dict[str, Any]:
        """The sizes as a plain dict (for the JSON results)."""
        return asdict(self)


SIZES: dict[str, Sizes] = {
    # The smoke test: seconds, proves the harness works end to end.
    "tiny": Sizes("tiny", 12, 4, 20, 20, 6, 12, 40.0, 20, 40.0, 20, 20.0, 10),
    # Quick look while developing: about two minutes.
    "quick": Sizes("quick", 300, 40, 300, 300, 60, 200, 100.0, 300, 100.0, 300, 50.0, 100),
    # `make bench`: about ten minutes on a 2-core machine (see BENCHMARKS.md for what shrank).
    "default": Sizes("default", 2000, 150, 2000, 2000, 300, 1000, 100.0, 1500, 100.0, 1000, 50.0),
    # What issue 5 asks for, verbatim.
    "issue": Sizes(
        "issue", 2000, 2000, 2000, 10000, 1000, 10000, 100.0, 5000, 100.0, 1000, 50.0, 1000
    ),
}


# -- results ------------------------------------------------------------------------------


@dataclass
class Target:
    """One target of the issue: what was asked, what was measured, met or not, and why."""

    name: str
    target: str
    measured: str
    met: bool | None  # None: not measured in this run, or no target (informational)
    note: str = ""
    informational: bool = False  # a figure the issue asks for without a target


@dataclass
class Section:
    """The results of one benchmark, rendered as a section of BENCHMARKS.md."""

    key: str
    title: str
    what: str
    baseline: str
    columns: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data (for the JSON results)."""
        return asdict(self)


@dataclass(frozen=True)
class Machine:
    """Where the figures were measured."""

    cores: int
    cpu_model: str
    python: str
    platform: str
    memory_gb: float


def machine() -> Machine:
    """Describe this machine: cores, CPU model, Python, OS, memory."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 1024 / 1024
    return Machine(
        cores=os.cpu_count() or 1,
        cpu_model=model,
        python=f"{platform.python_implementation()} {platform.python_version()}",
        platform=f"{platform.system()} {platform.release()} ({platform.machine()})",
        memory_gb=round(memory, 1),
    )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_seconds() -> float:
    """CPU time (user + system, every thread) of this process so far."""
    return time.process_time()


# -- server processes -----------------------------------------------------------------------


@dataclass
class Server:
    """A server running in its own process, with its counters and /proc figures."""

    name: str
    process: subprocess.Popen[str]
    url: str
    counters_path: str
    output: list[str]
    ca_path: str | None = None

    def counters(self) -> dict[str, int]:
        """Connections, TLS connections, requests and OAuth requests served so far."""
        return read_counters(self.counters_path)

    def cpu(self) -> float:
        """CPU seconds (user + system) the server process and its live child processes
        (``pesa serve --processes N``) have used so far."""
        return sum(_process_cpu(pid) for pid in _process_tree(self.process.pid))

    def peak_rss_mb(self) -> float:
        """The process's peak resident set size (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def rss_mb(self) -> float:
        """The process's current resident set size (VmRSS), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the process printed (for error messages)."""
        return "\n".join(self.output[-lines:])


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # it has exited
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc/PID/task/TID/children."""
    found = [pid]
    for current in found:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _pump(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line.rstrip("\n"))


@contextlib.contextmanager
def start_server(
    name: str,
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    ready: str = "listening on",
    timeout: float = 60.0,
    ca_path: str | None = None,
) -> Iterator[Server]:
    """Start ``python -m benchmarks._server --counters F ARGS`` and wait for its URL line.

    ``ready`` is the text of the line that carries the URL (``pesa emulator`` prints
    "listening on URL"; ``pesa serve`` prints "API: URL/v1/payments"). The process is
    stopped (SIGINT, then SIGKILL) when the block ends, whatever happens.
    """
    fd, counters = tempfile.mkstemp(prefix=f"pesa-bench-{name}-", suffix=".counters")
    os.write(fd, b"\0" * COUNTERS_SIZE)
    os.close(fd)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
    )
    full_env.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server", "--counters", counters, *args],
        cwd=REPO,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=_pump, args=(process.stdout, output), daemon=True)
    reader.start()
    try:
        url = _wait_for_url(name, process, output, ready, timeout)
        _wait_for_port(name, process, url, output, timeout)
        yield Server(name, process, url, counters, output, ca_path)
    finally:
        _stop(process)
        reader.join(timeout=5)
        with contextlib.suppress(OSError):
            os.unlink(counters)


def _wait_for_url(
    name: str, process: subprocess.Popen[str], output: list[str], ready: str, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(output):
            if ready in line:
                match = _URL.search(line.split(ready, 1)[1])
                if match:
                    return match.group(1).rstrip("/")
        if process.poll() is not None:
            tail = "\n".join(output[-20:])
            raise RuntimeError(
                f"{name} exited with {process.returncode} before it was ready:\n{tail}"
            )
        time.sleep(0.02)
    raise RuntimeError(f"{name} printed no '{ready}' line within {timeout:.0f} s")


def _wait_for_port(
    name: str, process: subprocess.Popen[str], url: str, output: list[str], timeout: float
) -> None:
    # The URL is printed once the socket is bound, before uvicorn listens on it.
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = "\n".join(output[-20:])
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{tail}")
        try:
            with socket.create_connection((parts.hostname, parts.port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{name} did not accept connections within {timeout:.0f} s")


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """``after - before`` for every counter."""
    return {name: after[name] - before[name] for name in COUNTER_NAMES}
