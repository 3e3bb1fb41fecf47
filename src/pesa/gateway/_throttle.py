"""A token bucket that bounds how fast the reconciler queries Daraja."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from pesa._exceptions import ValidationError

__all__ = ["TokenBucket"]

_EPSILON = 1e-9


class TokenBucket:
    """Allows ``rate`` operations per second on average and at most ``burst`` at once.

    :meth:`acquire` waits until a token is free; :meth:`pause` stops every caller for a
    while (used when Daraja answers with spike arrest). Callers are served in turn, so the
    bound holds however many tasks share one bucket. Time comes from an injectable
    monotonic ``clock`` and ``sleep``, so tests count operations against a fake clock
    instead of measuring wall time.

    Example:
        >>> bucket = TokenBucket(rate=2.0, burst=1)   # at most 2 queries a second
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not rate > 0:
            raise ValidationError("rate", "must be greater than 0 per second", rate)
        if burst < 1:
            raise ValidationError("burst", "must be 1 or more", burst)
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = clock()
        self._paused_until = self._updated
        self._lock: anyio.Lock | None = None

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def wait_time(self) -> float:
        """Seconds until the next token is available (0 if one is available now)."""
        now = self._clock()
        self._refill(now)
        pause = self._paused_until - now
        # Float rounding must not leave a waiter sleeping ever-tinier slices of a second.
        pause = pause if pause > _EPSILON else 0.0
        if self._tokens >= 1 - _EPSILON:
            return pause
        return max(pause, (1 - self._tokens) / self.rate)

    def try_acquire(self) -> bool:
        """Take a token if one is available now; never waits."""
        if self.wait_time() > 0:
            return False
        self._tokens -= 1
        return True

    async def acquire(self) -> None:
        """Wait until a token is available, then take it."""
        if self._lock is None:
            # Created lazily: an anyio.Lock must be made inside the running event loop.
            self._lock = anyio.Lock()
        async with self._lock:
            while True:
                wait = self.wait_time()
                if wait <= 0:
                    self._tokens -= 1
                    return
                await self._sleep(wait)

    def pause(self, seconds: float) -> None:
        """Give out no token for ``seconds`` from now, and drop any saved-up burst."""
        if seconds <= 0:
            return
        now = self._clock()
        self._refill(now)
        self._paused_until = max(self._paused_until, now + seconds)
        # After a spike arrest resume at the steady rate, not with a burst.
        self._tokens = min(self._tokens, 1.0)
        self._updated = max(self._updated, self._paused_until)

    def pause_remaining(self) -> float:
        """Seconds from now until the current pause ends (0 when not paused)."""
        return max(0.0, self._paused_until - self._clock())

    @property
    def paused_until(self) -> float:
        """The clock value before which no token is given out."""
        return self._paused_until
