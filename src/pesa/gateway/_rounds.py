"""The loop every gateway worker runs: rounds back to back while a backlog remains.

The reconciler (STK queries), the payout sender, the transfer checker (Transaction
Status), the receipt verifier and each lane of the webhook dispatcher define one round;
this runs it until asked to stop, pausing ``interval`` between rounds when there is no
backlog (or until woken, for a worker given a ``wake`` signal) and backing off
(exponentially, with jitter) after a round that failed, so that a database hiccup never
ends a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

from pesa._logging import get_logger
from pesa.gateway._backoff import Backoff, RandomSource, describe_outage

__all__ = ["Wake", "failure_backoff", "pause", "run_rounds"]

log = get_logger("pesa.gateway")


def failure_backoff(interval: float, cap: float = 300.0) -> Backoff:
    """The pause after consecutive failed rounds: from one ``interval`` up to ``cap``."""
    return Backoff(base=interval, cap=max(interval, cap))


class Wake(Protocol):
    """A signal that ends an idle pause early (:class:`pesa.ledger.OutboxSignal`)."""

    def waiter(self) -> asyncio.Event:
        """The event the next notification sets; taken before a round looks for work."""
        ...


async def pause(stop: anyio.Event, seconds: float, woken: asyncio.Event | None = None) -> None:
    """Wait ``seconds``, or less if ``stop`` (or ``woken``) is set meanwhile."""
    with anyio.move_on_after(seconds):
        if woken is None:
            await stop.wait()
            return
        if woken.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def first(event: anyio.Event | asyncio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(first, stop)
            tg.start_soon(first, woken)


async def run_rounds(
    name: str,
    round_: Callable[[], Awaitable[bool]],
    stop: anyio.Event,
    *,
    interval: float,
    failure_backoff: Backoff,
    rng: RandomSource,
    wake: Wake | None = None,
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
        wake: ends an idle pause as soon as new work is signalled (the webhook dispatcher:
            a commit that wrote deliveries). Its waiter is taken before each round, so a
            signal that comes while the round runs starts the next one at once.
    """
    failures = 0
    while not stop.is_set():
        woken = wake.waiter() if wake is not None else None
        try:
            backlog = await round_()
        except Exception as err:  # the loop must survive a database hiccup
            failures += 1
            delay = failure_backoff.delay(failures, rng)
            outage = describe_outage(err)
            if outage is None:
                log.exception("%s round failed; retrying in %.1f s", name, delay)
            else:  # one line per backoff interval, not a traceback per round
                log.warning("%s round failed (%s); retrying in %.1f s", name, outage, delay)
            await pause(stop, delay)
            continue
        failures = 0
        if not backlog:
            await pause(stop, interval, woken)
