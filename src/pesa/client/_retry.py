"""The retry policy: what may be re-sent, and after how long.

Daraja has no idempotency key, so this is where pesa differs from Stripe-style clients:
a money-moving request (STK push, B2C, reversal, C2B simulate) is re-sent only when it
provably never left this machine (connect error, pool timeout, or the token fetch before
it failed). Queries and OAuth are also retried on timeouts, 5xx and spike arrest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final, Literal

import httpx

from pesa._constants import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BASE_DELAY,
    DEFAULT_RETRY_MAX_DELAY,
)
from pesa._exceptions import DarajaError, RateLimitError, ServerError, UnexpectedResponseError
from pesa._logging import get_logger
from pesa.daraja._operations import OAUTH_PATH

__all__ = [
    "Failure",
    "RetryDecision",
    "RetryPolicy",
    "classify_transport_error",
    "parse_retry_after",
    "should_retry",
]

log = get_logger("pesa.client")

Failure = Literal["not_sent", "maybe_sent"]
"""Where a transport failure happened: before the request left, or possibly after."""

# Raised before a single byte of the request can have reached the server.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def classify_transport_error(error: httpx.RequestError) -> Failure:
    """``"not_sent"`` when the request provably never left, else ``"maybe_sent"``.

    A failure while fetching the token also counts as not sent: the request the token was
    for had not been sent yet.
    """
    if isinstance(error, _NOT_SENT):
        return "not_sent"
    try:
        path = error.request.url.path
    except RuntimeError:  # no request attached: nothing can have been sent
        return "not_sent"
    return "not_sent" if path == OAUTH_PATH else "maybe_sent"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how long to wait: exponential backoff with full jitter, capped.

    Attributes:
        max_retries: re-sends after the first attempt (0 disables retries).
        base_delay: the first backoff, doubled on every retry.
        max_delay: no wait is longer, ``Retry-After`` included.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base_delay: float = DEFAULT_RETRY_BASE_DELAY
    max_delay: float = DEFAULT_RETRY_MAX_DELAY

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        backoff = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        jittered = random.uniform(backoff / 2, backoff) if backoff > 0 else 0.0
        if retry_after is not None:
            jittered = max(jittered, retry_after)
        return min(self.max_delay, jittered)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The outcome of :func:`should_retry`: whether to re-send, and why (for the log)."""

    retry: bool
    reason: str


def should_retry(
    *,
    operation: str,
    moves_money: bool,
    failure: Failure | DarajaError,
    attempt: int,
    policy: RetryPolicy,
) -> RetryDecision:
    """Decide whether attempt number ``attempt`` (1-based) may be followed by a re-send.

    Pure: no I/O, no sleeping. The caller logs the reason and sleeps.
    """
    if attempt > policy.max_retries:
        return RetryDecision(False, f"{operation}: no retries left ({policy.max_retries})")
    if failure == "not_sent":
        return RetryDecision(True, f"{operation}: the request never left (connect/pool)")
    if failure == "maybe_sent":
        if moves_money:
            return RetryDecision(False, f"{operation}: may have been sent; never re-sent")
        return RetryDecision(True, f"{operation}: transport failure on a safe request")
    retryable = RateLimitError | ServerError | UnexpectedResponseError
    if isinstance(failure, retryable) and not moves_money:
        return RetryDecision(True, f"{operation}: {failure.error_code or failure.status_code}")
    return RetryDecision(False, f"{operation}: not retryable ({type(failure).__name__})")
