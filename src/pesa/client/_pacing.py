"""Client-side pacing: at most N requests per second, shared by every call of one client.

Bulk work (a salary run of B2C payouts) stays under Daraja's spike arrest instead of
tripping it. It is pesa's one token bucket (:mod:`pesa._bucket`) with a burst of 1: slots
are handed out under a thread lock, so sync threads and async tasks of the same client
share one schedule; the waiting happens outside the lock.
"""

from __future__ import annotations

from pesa._bucket import TokenBucket
from pesa._clock import SYSTEM_CLOCK, Clock

__all__ = ["RateLimiter"]


class RateLimiter(TokenBucket):
    """Evenly spaced slots, ``1 / rate`` seconds apart.

    Example:
        >>> limiter = RateLimiter(5)   # five requests per second
        >>> limiter.wait()              # blocks until this caller's slot
    """

    def __init__(self, rate: float, *, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(rate, 1, clock=clock, field="rate_limit")

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate})"
