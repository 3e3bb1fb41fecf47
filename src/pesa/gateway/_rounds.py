"""The loop every gateway worker runs: rounds back to back while a backlog remains.

The reconciler (STK queries), the payout sender and the transfer checker (Transaction
Status) each define one round; this runs it until asked to stop, pausing ``interval``
between rounds when there is no backlog and backing off (exponentially, with jitter) after
a round that failed, so that a database hiccup never ends a worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from pesa._logging import get_logger
from pesa.gateway._backoff import Backoff, RandomSource, describe_outage

__all__ = ["run_rounds"]

log = get_logger("pesa.gateway")


async def run_rounds(
    name: str,
    round_: Callable[[], Awaitable[bool]],
    stop: anyio.Event,
    *,
    interval: float,
    failure_backoff: Backoff,
    rng: RandomSource,
) -> None:
    """Run ``round_`` until ``stop`` is set.

    Args:
        name: the worker's name, for logs.
        round_: one round; returns ``True`` when work remains (the next round starts at
            once), ``False`` to wait ``interval`` seconds.
        stop: set to stop after the round in progress.
        interval: seconds between rounds when there is no backlog.
        failure_backoff: the pause after consecutive failed rounds.
        rng: jitter source.
    """
    failures = 0
    while not stop.is_set():
        try:
            backlog = await round_()
        except Exception as err:  # the loop must survive a database hiccup
            failures += 1
            pause = failure_backoff.delay(failures, rng)
            outage = describe_outage(err)
            if outage is None:
                log.exception("%s round failed; retrying in %.1f s", name, pause)
            else:  # one line per backoff interval, not a traceback per round
                log.warning("%s round failed (%s); retrying in %.1f s", name, outage, pause)
            with anyio.move_on_after(pause):
                await stop.wait()
            continue
        failures = 0
        if not backlog:
            with anyio.move_on_after(interval):
                await stop.wait()
