"""Run a real gateway on a free loopback port, for tests (yours and pesa's own) and the demo.

``run_gateway()`` serves it from a background thread with its own event loop (any test,
sync or async, talks to it over HTTP); ``serve_gateway()`` serves it on the running event
loop (for async code that wants the app's objects on the same loop, such as ``pesa demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from pesa._net import listen_socket
from pesa.config import Settings
from pesa.gateway._dispatcher import HandlerMap
from pesa.testing._errors import StartupError

__all__ = ["RunningGateway", "run_gateway", "serve_gateway"]

_START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class RunningGateway:
    """A gateway serving on loopback.

    Attributes:
        app: the FastAPI app. Its live objects (``app.state.gateway``) belong to the loop
            that serves it: with ``run_gateway`` that is another thread, so talk HTTP.
        url: its base URL, ``http://127.0.0.1:<port>``.
        callback_url: the STK CallBackURL it gives Daraja (contains the secret token).
        emulator_url: the mounted emulator's base URL in the ``emulator`` environment.
    """

    app: FastAPI
    url: str
    callback_url: str
    emulator_url: str | None


def _prepare(
    settings: Settings, handlers: HandlerMap | None, app_kwargs: dict[str, Any]
) -> tuple[Any, socket.socket, RunningGateway]:
    import uvicorn

    from pesa.gateway._app import create_app
    from pesa.gateway._server import server_config

    sock = listen_socket("127.0.0.1", 0)  # IPPROTO_TCP: accepted connections get TCP_NODELAY
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"gateway_host": "127.0.0.1", "gateway_port": port})
    try:
        app = create_app(settings, handlers=handlers, **app_kwargs)
    except BaseException:
        sock.close()
        raise
    # The same server bounds as ``pesa serve`` (read deadline, connection limit, ...).
    server = uvicorn.Server(
        server_config(
            app, settings, log_level="warning", access_log=False, timeout_graceful_shutdown=5
        )
    )
    urls = app.state.urls
    return server, sock, RunningGateway(app, urls.public, urls.callback, urls.emulator)


@contextlib.contextmanager
def run_gateway(
    settings: Settings, *, handlers: HandlerMap | None = None, **app_kwargs: Any
) -> Iterator[RunningGateway]:
    """Serve ``create_app(settings, ...)`` on a free loopback port, in a background thread.

    The port is chosen by the OS (``gateway_port`` is overridden), so parallel test runs
    never collide. The app's lifespan (ledger, client, workers, mounted emulator) runs as
    in ``pesa serve`` and is shut down on exit.

    Example:
        >>> with run_gateway(Settings(env="emulator", api_key="k")) as gw:  # doctest: +SKIP
        ...     httpx.get(f"{gw.url}/healthz")
    """
    server, sock, running = _prepare(settings, handlers, app_kwargs)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="pesa-gateway", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise StartupError("the gateway did not start (see the log above)")
            time.sleep(0.01)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@contextlib.asynccontextmanager
async def serve_gateway(
    settings: Settings, *, handlers: HandlerMap | None = None, **app_kwargs: Any
) -> AsyncIterator[RunningGateway]:
    """Serve ``create_app(settings, ...)`` on a free loopback port, on the running loop.

    Example:
        >>> async with serve_gateway(Settings(env="emulator")) as gw:  # doctest: +SKIP
        ...     await httpx.AsyncClient().get(f"{gw.url}/healthz")
    """
    server, sock, running = _prepare(settings, handlers, app_kwargs)
    # A plain task rather than a task group: the caller may enter and leave this context
    # from different tasks (pytest-asyncio fixtures do).
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    deadline = time.monotonic() + _START_TIMEOUT
    try:
        while not server.started:
            if task.done() or time.monotonic() > deadline:
                if task.done() and task.exception() is not None:
                    raise StartupError("the gateway did not start") from task.exception()
                raise StartupError("the gateway did not start (see the log above)")
            await asyncio.sleep(0.01)
        yield running
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=20)
        sock.close()
