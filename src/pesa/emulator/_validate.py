"""Validation of raw Daraja request JSON, field by field, with Daraja's literal refusals.

Reads Daraja's own field names (and misspellings) straight from the decoded JSON, never
through pesa's client models, and refuses the way Daraja does: ``400.002.02 Bad Request -
Invalid <Field>``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from pesa._exceptions import PesaError
from pesa.emulator import _daraja as daraja

__all__ = [
    "Refusal",
    "amount",
    "choice",
    "msisdn",
    "optional_text",
    "required_text",
    "shortcode",
    "timestamp",
    "url",
]

# ASCII digits only (re.ASCII): Daraja refuses Arabic-Indic and other Unicode digits.
_MSISDN = re.compile(r"^254[17]\d{8}$", re.ASCII)
_SHORTCODE = re.compile(r"^\d{5,7}$", re.ASCII)
_TIMESTAMP = re.compile(r"^\d{14}$", re.ASCII)


class Refusal(PesaError):
    """Internal: the emulator refuses a request with Daraja's error envelope."""

    def __init__(self, spec: daraja.ErrorSpec, request_id: str | None = None) -> None:
        self.status_code, self.error_code, self.error_message = spec
        self.request_id = request_id
        super().__init__(f"[{self.error_code}] {self.error_message}")


def _digits(value: Any) -> str | None:
    # Daraja takes numeric fields as JSON numbers or strings alike ("174379" or 174379).
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return value
    return None


def shortcode(value: Any, field: str) -> str:
    """A 5-7 digit shortcode (number or string)."""
    text = _digits(value)
    if text is None or not _SHORTCODE.match(text):
        raise Refusal(daraja.bad_request(field))
    return text


def msisdn(value: Any, field: str) -> str:
    """A 12-digit Safaricom MSISDN ``2547XXXXXXXX`` or ``2541XXXXXXXX`` (number or string)."""
    text = _digits(value)
    if text is None or not _MSISDN.match(text):
        raise Refusal(daraja.bad_request(field))
    return text


def amount(value: Any, minimum: int, maximum: int, field: str = "Amount") -> int:
    """A whole number of shillings within the limits (decimals are not supported)."""
    number: Decimal | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float):
        number = Decimal(str(value))
    elif isinstance(value, str) and re.fullmatch(r"\d+(\.0+)?", value.strip()):
        number = Decimal(value.strip())
    if number is None or not number.is_finite() or number != number.to_integral_value():
        raise Refusal(daraja.bad_request(field))
    whole = int(number)
    if not minimum <= whole <= maximum:
        raise Refusal(daraja.bad_request(field))
    return whole


def timestamp(value: Any, now: datetime, tolerance: float | None) -> str:
    """A ``YYYYMMDDHHmmss`` Nairobi time within ``tolerance`` seconds of ``now``."""
    text = _digits(value)
    if text is None or not _TIMESTAMP.match(text):
        raise Refusal(daraja.bad_request("Timestamp"))
    try:
        # Sliced by hand: strptime costs more than the rest of an STK push's validation.
        parsed = datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14]),
            tzinfo=now.tzinfo,
        )
    except ValueError:
        raise Refusal(daraja.bad_request("Timestamp")) from None
    if tolerance is not None and abs(parsed - now) > timedelta(seconds=tolerance):
        raise Refusal(daraja.bad_request("Timestamp"))
    return text


def url(value: Any, field: str) -> str:
    """An absolute http(s) URL without whitespace (trailing spaces are a classic mistake)."""
    if not isinstance(value, str) or value != value.strip() or " " in value:
        raise Refusal(daraja.bad_request(field))
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refusal(daraja.bad_request(field))
    return value


def required_text(value: Any, field: str, *, min_length: int = 1, max_length: int = 100) -> str:
    """A string of ``min_length`` to ``max_length`` characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not min_length <= len(value.strip()) <= max_length:
        raise Refusal(daraja.bad_request(field))
    return value


def optional_text(value: Any, field: str, *, max_length: int) -> str:
    """An absent/null field, or a string of at most ``max_length`` characters."""
    if value is None:
        return ""
    return required_text(value, field, min_length=0, max_length=max_length)


def choice(value: Any, field: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``, compared as strings (``4`` and ``"4"`` are the same)."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text is None or text not in allowed:
        raise Refusal(daraja.bad_request(field))
    return text
