"""Run a real emulator on a free loopback port, for tests (yours and pesa's own).

``run_emulator()`` serves it from a background thread (for sync tests and for other
processes' clients); ``serve_emulator()`` serves it on the running event loop (for async
tests that also receive its callbacks on the same loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pesa._net import listen_socket
from pesa.emulator import (
    AsyncEmulatorControl,
    Emulator,
    EmulatorConfig,
    EmulatorControl,
    TlsFiles,
    create_app,
    tls_files,
)
from pesa.testing._errors import StartupError

__all__ = ["RunningEmulator", "run_emulator", "serve_emulator"]


@dataclass(frozen=True)
class RunningEmulator:
    """A running emulator: where it listens and how to drive it.

    Attributes:
        base_url: ``http(s)://127.0.0.1:<port>``, the client's base URL.
        emulator: the in-process :class:`~pesa.emulator.Emulator` (read its records; in
            ``run_emulator`` it lives on another thread, so prefer ``control`` to change it).
        control: an :class:`~pesa.emulator.EmulatorControl` bound to ``base_url``.
        tls: the CA / certificate / key files when serving HTTPS, else None.
    """

    base_url: str
    emulator: Emulator
    control: EmulatorControl
    tls: TlsFiles | None = None

    def async_control(self) -> AsyncEmulatorControl:
        """A new :class:`~pesa.emulator.AsyncEmulatorControl` for this emulator.

        Use it as ``async with running.async_control() as control: ...``.
        """
        return AsyncEmulatorControl(self.base_url, verify=self.verify)

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate a client must trust for HTTPS (``verify=str(ca_path)``)."""
        return None if self.tls is None else self.tls.ca_path

    @property
    def verify(self) -> bool | ssl.SSLContext:
        """What to pass as httpx's ``verify=`` to talk to this emulator (trusts its CA)."""
        if self.tls is None:
            return True
        return ssl.create_default_context(cafile=str(self.tls.ca_path))


def _prepare(
    config: EmulatorConfig | None, tls: bool, latency_ms: float, host: str
) -> tuple[Emulator, Any, socket.socket, TlsFiles | None, str]:
    import uvicorn

    config = config or EmulatorConfig()
    if latency_ms:
        config = config.model_copy(update={"latency_ms": latency_ms})
    emulator = Emulator(config)
    files = tls_files(config.key_dir) if tls else None
    sock = listen_socket(host, 0)  # IPPROTO_TCP: accepted connections get TCP_NODELAY
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(emulator=emulator),
            log_level="warning",
            access_log=False,
            lifespan="on",
            ssl_certfile=str(files.cert_path) if files else None,
            ssl_keyfile=str(files.key_path) if files else None,
            timeout_graceful_shutdown=1,
        )
    )
    scheme = "https" if tls else "http"
    return emulator, server, sock, files, f"{scheme}://{host}:{port}"


class _LoopGuardedControl(EmulatorControl):
    """A sync control client that refuses to block the event loop serving its emulator."""

    def __init__(self, base_url: str, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._serving_loop = loop

    def _run(self, call: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._serving_loop:
            raise StartupError(
                "this emulator runs on the current event loop: a sync control call would "
                "deadlock; use `async with running.async_control() as control` instead"
            )
        return super()._run(call)


def _verify(files: TlsFiles | None) -> bool | ssl.SSLContext:
    return True if files is None else ssl.create_default_context(cafile=str(files.ca_path))


@contextlib.contextmanager
def run_emulator(
    config: EmulatorConfig | None = None,
    *,
    tls: bool = False,
    latency_ms: float = 0,
    host: str = "127.0.0.1",
) -> Iterator[RunningEmulator]:
    """Serve an emulator with uvicorn on a free port, in a background thread.

    Example:
        >>> with run_emulator(EmulatorConfig(stk_delay=0.05)) as running:  # doctest: +SKIP
        ...     httpx.get(f"{running.base_url}/oauth/v1/generate?grant_type=client_credentials",
        ...               auth=("key", "secret"))
    """
    emulator, server, sock, files, base_url = _prepare(config, tls, latency_ms, host)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="pesa-emulator", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise StartupError("the emulator server did not start")
        time.sleep(0.005)
    control = EmulatorControl(base_url, verify=_verify(files))
    try:
        yield RunningEmulator(base_url, emulator, control, files)
    finally:
        control.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.asynccontextmanager
async def serve_emulator(
    config: EmulatorConfig | None = None,
    *,
    tls: bool = False,
    latency_ms: float = 0,
    host: str = "127.0.0.1",
) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator with uvicorn on a free port, on the running event loop.

    The emulator shares the test's event loop, so drive it with ``running.emulator``
    (in-process) or ``running.async_control()``; the sync ``running.control`` raises rather
    than deadlock when called from that loop.
    """
    emulator, server, sock, files, base_url = _prepare(config, tls, latency_ms, host)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                raise StartupError("the emulator server did not start")
            await asyncio.sleep(0.005)
        control = _LoopGuardedControl(base_url, asyncio.get_running_loop(), verify=_verify(files))
        try:
            yield RunningEmulator(base_url, emulator, control, files)
        finally:
            control.close()
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
