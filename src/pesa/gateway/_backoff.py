"""The retry schedule of the gateway's workers: exponential, capped, with jitter (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from pesa._exceptions import ValidationError

__all__ = ["Backoff", "RandomSource", "describe_outage"]


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in ``[0, 1)``; :mod:`random` itself qualifies."""

    def random(self) -> float:
        """A float in ``[0, 1)``."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """An exponential backoff schedule with jitter and a cap.

    Attempt ``n`` (1-based) waits ``min(cap, base * factor ** (n - 1))`` seconds, reduced
    by a random fraction of at most ``jitter`` so that many workers retrying the same
    failure spread out instead of arriving together. The delay never exceeds ``cap`` and
    never falls below ``base * (1 - jitter)``.

    Example:
        >>> Backoff(base=5, cap=3600, jitter=0).delay(3)
        20.0
    """

    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.base > 0:
            raise ValidationError("base", "must be greater than 0 seconds", self.base)
        if not self.cap >= self.base:
            raise ValidationError("cap", "must be at least base", self.cap)
        if not self.factor >= 1:
            raise ValidationError("factor", "must be at least 1", self.factor)
        if not 0 <= self.jitter < 1:
            raise ValidationError("jitter", "must be in [0, 1)", self.jitter)

    def ceiling(self, attempt: int) -> float:
        """The delay before retry number ``attempt`` without jitter (the upper bound)."""
        if attempt < 1:
            raise ValidationError("attempt", "must be 1 or more", attempt)
        # Step up to the cap instead of computing factor ** attempt, which overflows a float
        # for large attempt numbers.
        delay = self.base
        for _ in range(attempt - 1):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)

    def delay(self, attempt: int, rng: RandomSource = random) -> float:
        """The jittered delay in seconds before retry number ``attempt`` (1-based)."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1.0 - self.jitter * rng.random())


def describe_outage(error: BaseException) -> str | None:
    """One line describing ``error`` if it is an outage (database or network unreachable).

    Such a failure is expected to pass: the workers log it as one warning per backoff
    interval, without a traceback. ``None`` for anything else (a bug: log it in full).
    """
    outage = isinstance(error, OSError | TimeoutError | ConnectionError)
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError
    except ModuleNotFoundError:  # pragma: no cover - the workers always have sqlalchemy
        pass
    else:
        outage = outage or isinstance(error, OperationalError | PoolTimeoutError)
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            outage = True
        if isinstance(error, DBAPIError) and error.orig is not None:
            error = error.orig
    if not outage:
        return None
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"
