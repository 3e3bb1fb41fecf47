"""pesa's one token bucket: a GCRA whose state lives in this process or is shared.

Every rate pesa keeps goes through :class:`TokenBucket`: the client's pacing
(``rate_limit``), the reconciler's query budget, the payout pace and the emulator's spike
arrest. The arithmetic is :func:`gcra`, written once; where its two numbers live is a
:class:`BucketState`:

- :class:`LocalState` (the default): this process only, on an injectable clock's
  ``monotonic()`` (:class:`pesa._clock.Clock`).
- a shared state (:class:`pesa.ledger.DatabaseBucketState`, one row per budget, or Redis):
  several processes, on several machines, spend one budget, so ``rate`` is global.

The state is two numbers: ``tat``, the theoretical arrival time of the next request (the
moment the bucket would be full again), and ``paused_until``. With ``interval = 1/rate``
and ``tolerance = (burst - 1) * interval``, a request at ``now`` may go at
``max(now, tat - tolerance)``, and moves ``tat`` to ``max(tat, now) + interval``. Taking
always reserves a slot (the caller then waits for it), so callers are served in turn and
no window of length ``w`` ever holds more than ``burst + rate * w`` requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import anyio

from pesa._clock import SYSTEM_CLOCK, Clock
from pesa._exceptions import ConfigurationError, ValidationError

__all__ = [
    "BucketState",
    "Grant",
    "LocalState",
    "SharedBucketState",
    "TokenBucket",
    "gcra",
]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Grant:
    """What one step of :func:`gcra` decided.

    Attributes:
        tat: the new theoretical arrival time.
        paused_until: the new end of the pause.
        wait: seconds from ``now`` until the caller's slot (0: go now).
        taken: whether a slot was reserved (a conditional take of a busy bucket is not).
    """

    tat: float
    paused_until: float
    wait: float
    taken: bool


def gcra(
    tat: float,
    paused_until: float,
    now: float,
    *,
    interval: float,
    tolerance: float,
    pause: float = 0.0,
    conditional: bool = False,
    take: bool = True,
) -> Grant:
    """One step of the bucket: apply a pause, then reserve the next slot.

    Args:
        tat: the theoretical arrival time so far.
        paused_until: no slot before this moment.
        now: the current time, on the same clock as ``tat``.
        interval: ``1 / rate``.
        tolerance: ``(burst - 1) * interval``.
        pause: seconds from ``now`` during which no slot is given (spike arrest); after a
            pause the bucket resumes at the steady rate, without a burst.
        conditional: reserve only if the slot is now (``try_acquire``).
        take: reserve a slot at all (False: only apply ``pause``).
    """
    if pause > 0:
        paused_until = max(paused_until, now + pause)
        tat = max(tat, paused_until + tolerance)
    wait = tat - tolerance - now
    # Float rounding must not leave a waiter sleeping ever-tinier slices of a second.
    wait = wait if wait > _EPSILON else 0.0
    if not take or (conditional and wait > 0):
        return Grant(tat, paused_until, wait, False)
    return Grant(max(tat, now) + interval, paused_until, wait, True)


class BucketState(Protocol):
    """Where a bucket's ``tat`` and ``paused_until`` live (see :func:`gcra`)."""

    def step(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        """Apply :func:`gcra` atomically; return its grant and the ``now`` it used."""
        ...


@runtime_checkable
class SharedBucketState(Protocol):
    """A state several processes share (a database row, a Redis key): steps are async."""

    async def astep(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        """Apply :func:`gcra` atomically on the shared state; return the grant and its now."""
        ...


class LocalState:
    """The state in this process (thread-safe), on ``clock.monotonic()``."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        now = clock.monotonic()
        self._tat = now
        self._paused_until = now
        self._lock = threading.Lock()

    def step(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        """Apply :func:`gcra` under a thread lock."""
        with self._lock:
            now = self.clock.monotonic()
            grant = gcra(
                self._tat,
                self._paused_until,
                now,
                interval=interval,
                tolerance=tolerance,
                pause=pause,
                conditional=conditional,
                take=take,
            )
            self._tat, self._paused_until = grant.tat, grant.paused_until
            return grant, now


class TokenBucket:
    """Allows ``rate`` operations per second on average and at most ``burst`` at once.

    :meth:`acquire` waits until the caller's slot; :meth:`pause` stops every caller for a
    while (Daraja answered spike arrest). With ``shared`` (a :class:`SharedBucketState`)
    the budget is global: every process spending it together stays within ``rate``, and a
    pause one of them records stops them all. Time comes from an injectable ``clock``
    (its ``monotonic()``) and ``sleep``, so tests count operations against a fake clock.

    Example:
        >>> bucket = TokenBucket(rate=2.0, burst=1)   # at most 2 queries a second
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = SYSTEM_CLOCK,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        shared: SharedBucketState | None = None,
        field: str = "rate",
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ValidationError(field, "must be greater than 0 per second", rate)
        if burst < 1:
            raise ValidationError("burst", "must be 1 or more", burst)
        self.rate = float(rate)
        self.burst = burst
        self._interval = 1.0 / self.rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self.shared = shared
        # This process's view: exact for a local bucket, the last step seen for a shared one.
        self._local = LocalState(clock)
        self._pending_pause = 0.0
        self._lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        where = "local" if self.shared is None else type(self.shared).__name__
        return f"TokenBucket(rate={self.rate}, burst={self.burst}, state={where})"

    def _local_step(self, *, pause: float = 0.0, conditional: bool = False, take: bool) -> Grant:
        grant, _ = self._local.step(
            interval=self._interval,
            tolerance=self._tolerance,
            pause=pause,
            conditional=conditional,
            take=take,
        )
        return grant

    def _mirror(self, grant: Grant, now: float) -> None:
        """Copy a shared step into the local view, moved onto this process's clock."""
        offset = self._clock.monotonic() - now
        local = self._local
        with local._lock:
            local._tat = grant.tat + offset
            local._paused_until = grant.paused_until + offset

    # -- taking --------------------------------------------------------------------------

    def reserve(self) -> float:
        """Take the next slot of a local bucket; return how many seconds to wait for it."""
        if self.shared is not None:
            raise ConfigurationError("a shared token bucket is taken with acquire(), not reserve()")
        return self._local_step(take=True).wait

    def wait(self) -> None:
        """Block the current thread until its slot (local buckets)."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def acquire(self) -> None:
        """Wait until this caller's slot (shared: reserved in the shared state).

        The callers of one process are served in turn (one reserves, waits, then the
        next), so a cancelled waiter never leaves a reserved slot unused behind others.
        """
        if self._lock is None:
            # Created lazily: an anyio.Lock must be made inside the running event loop.
            self._lock = anyio.Lock()
        async with self._lock:
            await self._acquire()

    async def _acquire(self) -> None:
        if self.shared is None:
            wait = self._local_step(take=True).wait
        else:
            pause, self._pending_pause = self._pending_pause, 0.0
            grant, now = await self.shared.astep(
                interval=self._interval,
                tolerance=self._tolerance,
                pause=pause,
                conditional=False,
                take=True,
            )
            self._mirror(grant, now)
            wait = grant.wait
        if wait > 0:
            await self._sleep(wait)

    await_slot = acquire

    def try_acquire(self) -> bool:
        """Take a slot if one is free now; never waits (local view of a shared bucket)."""
        return self._local_step(conditional=True, take=True).taken

    # -- pausing -------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Give out no slot for ``seconds`` from now, and drop any saved-up burst.

        A shared bucket records the pause in the shared state with its next
        :meth:`acquire` (or :meth:`flush`), so every process sharing it pauses too.
        """
        if seconds <= 0:
            return
        self._local_step(pause=seconds, take=False)
        if self.shared is not None:
            self._pending_pause = max(self._pending_pause, seconds)

    async def flush(self) -> None:
        """Write a pending pause to the shared state now (no-op for a local bucket)."""
        if self.shared is None or self._pending_pause <= 0:
            return
        pause, self._pending_pause = self._pending_pause, 0.0
        grant, now = await self.shared.astep(
            interval=self._interval,
            tolerance=self._tolerance,
            pause=pause,
            conditional=False,
            take=False,
        )
        self._mirror(grant, now)

    def wait_time(self) -> float:
        """Seconds until the next slot is free (0 if now); a shared bucket's last view."""
        return self._local_step(take=False).wait

    def pause_remaining(self) -> float:
        """Seconds from now until the current pause ends (0 when not paused)."""
        return max(0.0, self._local._paused_until - self._clock.monotonic())

    @property
    def paused_until(self) -> float:
        """The clock value before which no slot is given out."""
        return self._local._paused_until
