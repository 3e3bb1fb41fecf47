"""Daraja time: an injectable clock, Nairobi ``YYYYMMDDHHMMSS`` timestamps, the STK password.

Daraja reads every timestamp as East Africa Time whatever the caller's zone, and a server
outside Kenya formatting its local time is a classic cause of ``Invalid Timestamp``.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

from pesa._clock import SYSTEM_CLOCK, Clock, SystemClock
from pesa._constants import NAIROBI_TZ
from pesa._exceptions import ValidationError

__all__ = [
    "NAIROBI",
    "Clock",
    "SystemClock",
    "daraja_timestamp",
    "parse_daraja_timestamp",
    "stk_password",
]

NAIROBI: Final = ZoneInfo(NAIROBI_TZ)
_FORMAT: Final = "%Y%m%d%H%M%S"


def daraja_timestamp(clock: Clock | None = None) -> str:
    """The current time as Daraja's ``YYYYMMDDHHMMSS`` in Africa/Nairobi.

    Example:
        >>> daraja_timestamp(FrozenClock(datetime(2016, 2, 16, 13, 56, 27, tzinfo=UTC)))
        '20160216165627'
    """
    now = (clock or SYSTEM_CLOCK).now()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValidationError("clock", "must return an aware datetime", now)
    return now.astimezone(NAIROBI).strftime(_FORMAT)


def parse_daraja_timestamp(value: str | int, *, field: str = "timestamp") -> datetime:
    """Parse a Daraja ``YYYYMMDDHHMMSS`` (a string or a JSON number) as an aware Nairobi time.

    Raises:
        ValidationError: the value is not 14 digits of a real date and time.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(field, "must be YYYYMMDDHHMMSS", value)
    text = str(value).strip()
    if len(text) != 14 or not text.isdigit():
        raise ValidationError(field, "must be YYYYMMDDHHMMSS", value)
    try:
        parsed = datetime.strptime(text, _FORMAT)
    except ValueError as err:
        raise ValidationError(field, "must be a real date and time YYYYMMDDHHMMSS", value) from err
    return parsed.replace(tzinfo=NAIROBI)


def stk_password(shortcode: str | int, passkey: str, timestamp: str) -> str:
    """The STK ``Password``: ``base64(BusinessShortCode + Passkey + Timestamp)`` (REFERENCE §6.1).

    Build it from the same ``timestamp`` that goes in the body, or Daraja answers
    ``500.001.1001 Wrong credentials``.
    """
    if not passkey:
        raise ValidationError("passkey", "must not be empty")
    raw = f"{shortcode}{passkey}{timestamp}".encode()
    return base64.b64encode(raw).decode("ascii")
