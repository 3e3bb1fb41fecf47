"""When a payout's or refund's status checks stop, and what a check past that point does (pure).

Every checker (the gateway's ``TransferChecker``, the Django app's ``PayoutChecker``) asks
these functions, so the rule that flags money for a person exists once:

- :func:`transfer_deadline`: ``PESA_PAYOUT_DEADLINE`` seconds after the transfer's **first
  send** (``first_sent_at``), not after its creation: a batch row queued behind the payout
  pace may be sent long after it was committed, and Daraja cannot answer before it is asked.
  A settled transfer whose evidence awaits Transaction Status counts from when that
  verification was first asked for (``verify_since``).
- :func:`flag_late_transfer`: past the deadline, a transfer is flagged only after one more
  Transaction Status query asked at (or after) the deadline has had :func:`transfer_grace`
  to be answered, or when Daraja has not answered at all for long after the deadline; a
  checker behind on its work must not flag what Daraja would confirm.
- :func:`next_transfer_check`: when to look again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = [
    "flag_late_transfer",
    "next_transfer_check",
    "transfer_deadline",
    "transfer_grace",
]

_HOPELESS_AFTER = 300.0
"""Seconds past the deadline (at least) after which Daraja's silence no longer holds a flag."""


def transfer_grace(status_after: float) -> float:
    """Seconds the last query, asked at the deadline, is given to be answered:
    ``PESA_PAYOUT_STATUS_AFTER``, kept within 10 to 60."""
    return max(10.0, min(60.0, status_after))


def transfer_deadline(
    *,
    created_at: datetime,
    first_sent_at: datetime | None,
    verify_since: datetime | None,
    settled: bool,
    seconds: float,
) -> datetime:
    """When a transfer with no final answer is flagged: ``seconds`` after its first send.

    Args:
        created_at: when the transfer was committed.
        first_sent_at: when its first request was committed to be sent (the attempt that
            took ``attempts`` from 0 to 1); later attempts do not move it.
        verify_since: when a verification of its evidence was first asked for.
        settled: the transfer is succeeded, failed or rejected.
        seconds: ``PESA_PAYOUT_DEADLINE``.

    A settled transfer awaiting verification counts from ``verify_since``. A transfer never
    sent has nothing to count from but its creation; no checker sees one (a payout is
    checked only once a send's answer was recorded, a refund is committed with its one
    send counted), so this is only the conservative answer for a row written otherwise.
    """
    if settled and verify_since is not None:
        start = verify_since
    elif first_sent_at is not None:
        start = first_sent_at
    else:
        start = created_at
    return start + timedelta(seconds=seconds)


def flag_late_transfer(
    now: datetime,
    deadline: datetime,
    *,
    grace: float,
    asked_at: datetime | None,
    asked_outcome: str | None,
    askable: bool = True,
) -> bool:
    """Whether a transfer past its ``deadline`` is flagged now (``False``: ask once more).

    Args:
        now: the time of the check (at or after ``deadline``).
        deadline: from :func:`transfer_deadline`.
        grace: from :func:`transfer_grace`.
        asked_at: when the latest Transaction Status query about it was asked (``None``:
            never).
        asked_outcome: that query's outcome (``sent``, ``answered``, ``timed_out``,
            ``error``, ``rate_limited``).
        askable: there is an id to ask by (a refund whose answer was lost has none: it is
            flagged at the deadline).
    """
    if not askable:
        return True
    answered_late = (
        asked_at is not None
        and asked_at >= deadline
        and (
            asked_outcome in ("answered", "timed_out")
            or (asked_outcome == "sent" and (now - asked_at).total_seconds() >= grace)
        )
    )
    # Daraja failing to answer at all does not hold the flag back for ever.
    hopeless = now >= deadline + timedelta(seconds=max(_HOPELESS_AFTER, 10 * grace))
    return answered_late or hopeless


def next_transfer_check(
    now: datetime, deadline: datetime, *, wait: float, grace: float
) -> datetime:
    """When to check a transfer again after asking about it: after ``wait`` seconds but no
    later than the deadline; past the deadline, once the last answer has had ``grace``."""
    if now >= deadline:
        return now + timedelta(seconds=grace)
    return min(now + timedelta(seconds=wait), deadline)
