"""Client-side pacing: at most N requests per second, shared by every call of one client.

Bulk work (a salary run of B2C payouts) stays under Daraja's spike arrest instead of
tripping it. Slots are handed out under a thread lock, so sync threads and async tasks of
the same client share one schedule; the waiting happens outside the lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import anyio

from pesa._exceptions import ValidationError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Evenly spaced slots, ``1 / rate`` seconds apart.

    Example:
        >>> limiter = RateLimiter(5)   # five requests per second
        >>> limiter.wait()              # blocks until this caller's slot
    """

    def __init__(self, rate: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise ValidationError("rate_limit", "must be a positive number of requests/second")
        self.rate = float(rate)
        self._interval = 1.0 / self.rate
        self._monotonic = monotonic
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; return how many seconds to wait for it."""
        with self._lock:
            now = self._monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
            return slot - now

    def wait(self) -> None:
        """Block the current thread until its slot."""
        delay = self.reserve()
        if delay > 0:
            time.sleep(delay)

    async def await_slot(self) -> None:
        """Wait (asynchronously) until this task's slot."""
        delay = self.reserve()
        if delay > 0:
            await anyio.sleep(delay)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate})"
