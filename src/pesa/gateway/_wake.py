"""The dispatcher's PostgreSQL listener: ``LISTEN pesa_outbox`` on a connection of its own.

A commit that makes webhook deliveries due sends ``NOTIFY pesa_outbox`` (see
:mod:`pesa.ledger._wake`); this listener turns each notification into the ledger's
in-process :class:`~pesa.ledger.OutboxSignal`, so a ``pesa worker`` wakes when a
``pesa serve --no-workers`` process commits a transition. It reconnects with backoff when
the connection drops, logging one warning per attempt (not per failed statement), and
fires the signal once on every (re)connection: anything committed while it was away is
picked up at once rather than at the next poll.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from pesa._logging import get_logger
from pesa.gateway._backoff import Backoff, RandomSource, describe_outage
from pesa.ledger._wake import OUTBOX_CHANNEL

if TYPE_CHECKING:
    from pesa.ledger import Ledger

__all__ = ["LISTENER_APPLICATION_NAME", "listen_for_outbox"]

log = get_logger("pesa.gateway.webhooks")

LISTENER_APPLICATION_NAME = "pesa-outbox-listener"
"""``application_name`` of the listener's connection (``pg_stat_activity``)."""

# psycopg checks a quiet connection this often, so a dead server is noticed and ``stop``
# is honoured even with no notification.
_IDLE_CHECK = 30.0


def _conninfo(ledger: Ledger) -> tuple[str, dict[str, Any]]:
    url = ledger.engine.url.set(drivername="postgresql")
    query = dict(url.query)
    url = url.set(query={})
    params: dict[str, Any] = {k: v if isinstance(v, str) else v[-1] for k, v in query.items()}
    params.setdefault("application_name", LISTENER_APPLICATION_NAME)
    return url.render_as_string(hide_password=False), params


async def listen_for_outbox(
    ledger: Ledger,
    stop: anyio.Event,
    *,
    backoff: Backoff | None = None,
    rng: RandomSource | None = None,
    connected: anyio.Event | None = None,
) -> None:
    """LISTEN until ``stop`` is set, firing ``ledger.outbox_signal`` on each notification.

    Returns at once when the ledger is not on PostgreSQL or does not notify.

    Args:
        backoff: the pause between reconnection attempts (1 s doubling to 30 s).
        connected: set once the first LISTEN is in place (tests wait on it).
    """
    if not ledger.notify:
        return
    import psycopg

    backoff = backoff or Backoff(base=1.0, cap=30.0)
    if rng is None:
        import random

        rng = random.Random()
    dsn, params = _conninfo(ledger)
    signal = ledger.outbox_signal
    failures = 0
    while not stop.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, **params
            ) as conn:
                await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
                if failures:
                    log.info("outbox listener reconnected")
                failures = 0
                signal.notify()  # whatever was committed while we were not listening
                if connected is not None:
                    connected.set()
                async with anyio.create_task_group() as tg:

                    async def stopper() -> None:
                        await stop.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(stopper)
                    while True:
                        async for _ in conn.notifies(timeout=_IDLE_CHECK):
                            signal.notify()
                        # A quiet period: make sure the connection is still alive.
                        await conn.execute("SELECT 1")
        except Exception as err:  # the dispatcher falls back on polling meanwhile
            if stop.is_set():
                return
            while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
                inner = err.exceptions[0]
                if not isinstance(inner, Exception):
                    break
                err = inner  # the task group's wrapping says nothing
            failures += 1
            pause = backoff.delay(failures, rng)
            outage = describe_outage(err) or f"{type(err).__name__}: {err}"
            log.warning(
                "outbox listener lost its PostgreSQL connection (%s); webhooks are found by "
                "polling until it reconnects, in %.1f s",
                outage,
                pause,
            )
            with anyio.move_on_after(pause):
                await stop.wait()
