"""The one clock type: wall time for records and Daraja, monotonic time for pacing and leases.

Every layer that reads the time takes a :class:`Clock`: the Daraja client (timestamps and
token expiry), the ledger (``created_at``, ``next_check_at``), the gateway's workers (leases,
rate budgets, retry schedules) and the emulator (token lifetimes, rate limits, callback
dates). Tests inject one :class:`pesa.testing.FrozenClock` and move all of them together.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from pesa._exceptions import ValidationError

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "require_clock"]


@runtime_checkable
class Clock(Protocol):
    """Where pesa reads the time; inject a frozen one in tests (``pesa.testing.FrozenClock``).

    Two readings, because they answer different questions: :meth:`now` is *when* (stored,
    sent to Daraja, compared with dates from outside), :meth:`monotonic` is *how long*
    (leases, rate budgets, timeouts), which must not jump when the wall clock is set.
    """

    def now(self) -> datetime:
        """The current time as an aware datetime (any zone)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (only differences mean anything)."""
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)`` and ``time.monotonic()``."""

    __slots__ = ()

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()
"""The shared real clock, the default wherever a clock is optional."""


def require_clock(clock: object, default: Clock | None = None, field: str = "clock") -> Clock:
    """``clock`` if it is a :class:`Clock` (``default`` when it is ``None`` and a default is
    given); a clear error naming ``field`` if not.

    A plain function returning a datetime (what ``Ledger.open(clock=...)`` took before the
    clock had two readings) fails here, at construction, not at the first write.
    """
    if clock is None and default is not None:
        return default
    if not isinstance(clock, Clock):
        raise ValidationError(
            field,
            "must be a clock with now() and monotonic() (pesa.daraja.Clock; "
            "pesa.testing.FrozenClock in tests)",
            type(clock).__name__,
        )
    return clock
