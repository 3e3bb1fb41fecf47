"""Misbehaviour on purpose: injected faults and the per-app rate limit (spike arrest)."""

from __future__ import annotations

import random

from pesa._bucket import TokenBucket
from pesa._clock import SYSTEM_CLOCK, Clock
from pesa._exceptions import ValidationError
from pesa.emulator import _daraja as daraja
from pesa.emulator._models import Fault
from pesa.emulator._validate import Refusal

__all__ = ["FaultBook", "RateLimiter", "fault_refusal"]


class FaultBook:
    """The active faults with their remaining uses, drawn per Daraja request."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._faults: list[Fault] = []
        self._uses: dict[str, int] = {}

    def add(self, fault: Fault) -> Fault:
        self._faults.append(fault)
        if fault.times is not None:
            self._uses[fault.id] = fault.times
        return fault

    def remove(self, fault_id: str) -> bool:
        before = len(self._faults)
        self._faults = [f for f in self._faults if f.id != fault_id]
        self._uses.pop(fault_id, None)
        return len(self._faults) != before

    def clear(self) -> None:
        self._faults.clear()
        self._uses.clear()

    @property
    def faults(self) -> list[Fault]:
        return list(self._faults)

    def draw(self, path: str, *, oauth: bool = False) -> tuple[Fault | None, float]:
        """The fault that answers this request (if any) and the extra delay of slow faults."""
        hit: Fault | None = None
        slow = 0.0
        for fault in self._faults:
            if fault.path is not None and not path.startswith(fault.path):
                continue
            if oauth and fault.kind == "invalid_token":
                continue  # OAuth issues tokens; it never checks one
            if fault.rate < 1 and self._rng.random() >= fault.rate:
                continue
            if fault.id in self._uses:
                left = self._uses[fault.id]
                if left <= 0:
                    continue
                self._uses[fault.id] = left - 1
            if fault.kind == "slow":
                slow += fault.delay
            elif hit is None:
                hit = fault
        return hit, slow


def fault_refusal(fault: Fault, token_error: daraja.ErrorSpec) -> Refusal | str:
    """Daraja's answer to a request a fault refuses (a str is a plain-text 503)."""
    if fault.kind == "http_500":
        return Refusal(daraja.INTERNAL_SERVER_ERROR)
    if fault.kind == "spike_arrest":
        return Refusal(daraja.SPIKE_ARREST)
    if fault.kind == "invalid_token":
        return Refusal(token_error)
    # A 503 comes from the load balancer in front of Daraja, not as Daraja JSON.
    return "Service Unavailable"


class RateLimiter:
    """A token bucket per app (consumer key): beyond the rate, Daraja answers spike arrest.

    Each app's bucket is pesa's one token bucket (:class:`pesa._bucket.TokenBucket`),
    holding a second's worth of requests (at least one), on the emulator's clock.
    """

    def __init__(self, requests_per_second: float | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._default = requests_per_second
        self._rate = requests_per_second
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def rate(self) -> float | None:
        return self._rate

    def set(self, requests_per_second: float | None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValidationError("requests_per_second", "must be positive (or None for unlimited)")
        self._rate = requests_per_second
        self._buckets.clear()

    def reset(self) -> None:
        """Back to the configured rate, every bucket full."""
        self._rate = self._default
        self._buckets.clear()

    def take(self, app: str) -> bool:
        """Spend one request of ``app``; False when its bucket is empty."""
        rate = self._rate
        if rate is None:
            return True
        bucket = self._buckets.get(app)
        if bucket is None:
            bucket = self._buckets[app] = TokenBucket(
                rate, max(1, int(rate)), clock=self._clock, field="requests_per_second"
            )
        return bucket.try_acquire()
