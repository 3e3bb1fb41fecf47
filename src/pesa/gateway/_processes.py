"""``pesa serve --processes N``: N gateway processes serving one listening socket.

One Python process is one core's worth of the gateway (the callback route and the ledger's
async driver run on one event loop). The parent binds the socket once, then starts N
children (``spawn``, so each builds its own app, engine and event loop) that all accept on
it; the kernel hands each new connection to one of them. Everything they share is in the
database: every ledger write is a transaction guarded by the payment's version (and, on
PostgreSQL, row locks), so two processes applying the same callback apply it once, exactly
as two requests in one process do.

The background workers (reconciler, webhook dispatcher, receipt verifier) run in the first
child only, when they are on at all: they claim their work with leases and ``SKIP LOCKED``,
so more copies would be safe, but one set is what the rate settings (queries per second,
payout pace) are written for; scale them with ``pesa worker`` processes instead.

The parent forwards SIGINT and SIGTERM to the children and waits for them (each finishes
its requests in flight, as a single ``pesa serve`` does). A child that dies while the
others serve is started again, unless it died during its first seconds (a configuration
that cannot start would fail the same way every time): then every child is stopped.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from pesa._logging import get_logger
from pesa.config import Settings

__all__ = ["serve_processes"]

log = get_logger("pesa.gateway")

# A child that exits sooner than this after its start failed to start.
_STARTUP_SECONDS = 5.0


def _child(
    settings: Settings, sock: socket.socket, index: int, parent: int, uvicorn_options: Any
) -> None:
    """One gateway process (the target of a spawned child)."""
    import logging

    import uvicorn

    from pesa._logging import configure_logging
    from pesa.gateway import create_app
    from pesa.gateway._callbacks import CallbackPathFilter
    from pesa.gateway._server import server_config

    # Its own process group: a Ctrl-C at the terminal reaches the parent only, which stops
    # every child once (a second signal would make uvicorn drop requests in flight).
    os.setpgrp()
    # ``parent`` comes from the parent itself: read here, a parent killed while this child
    # was starting would already have been replaced by init.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    configure_logging(settings.log).addFilter(CallbackPathFilter())
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(CallbackPathFilter())
    if index > 0:
        settings = settings.model_copy(update={"run_workers": False})
    app = create_app(settings)
    server = uvicorn.Server(server_config(app, settings, **uvicorn_options))
    server.run(sockets=[sock])


def _exit_with_parent(parent: int) -> None:
    """Stop this child (as SIGTERM does) once its parent is gone (killed without a chance
    to stop its children): no gateway process outlives ``pesa serve``."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def serve_processes(
    settings: Settings, sock: socket.socket, processes: int, **uvicorn_options: Any
) -> int:
    """Serve the gateway on ``sock`` from ``processes`` child processes until stopped.

    Returns:
        The exit status: 0 after a requested stop, 1 when a child could not start.
    """
    multiprocessing.allow_connection_pickling()  # sockets travel to spawned children
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start(index: int) -> tuple[BaseProcess, float]:
        child = context.Process(
            target=_child,
            args=(settings, sock, index, os.getpid(), uvicorn_options),
            name=f"pesa-serve-{index}",
        )
        child.start()
        log.info("gateway process %d started (pid %s)", index, child.pid)
        return child, time.monotonic()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        # SIGTERM to each child: it stops accepting, finishes what is in flight and exits.
        nonlocal stopping
        stopping = True
        for child, _ in children:
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it has just exited
                    os.kill(child.pid, signal.SIGTERM)

    children: list[tuple[BaseProcess, float]] = []
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        children.extend(start(index) for index in range(processes))
        while not stopping:
            time.sleep(0.2)
            for index, (child, started) in enumerate(children):
                if child.is_alive() or stopping:
                    continue
                if time.monotonic() - started < _STARTUP_SECONDS:
                    log.error(
                        "gateway process %d exited (status %s) as it started: stopping",
                        index,
                        child.exitcode,
                    )
                    status = 1
                    stop(signal.SIGTERM, None)
                    break
                log.error(
                    "gateway process %d exited (status %s): starting it again",
                    index,
                    child.exitcode,
                )
                children[index] = start(index)
        for child, _ in children:
            child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
