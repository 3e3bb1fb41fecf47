"""pesa's logger, the redaction filter that keeps secrets out of logs, and phone masking."""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = [
    "RedactingFilter",
    "configure_logging",
    "get_logger",
    "logger",
    "mask_phone",
    "redact",
]

logger = logging.getLogger("pesa")
logger.addHandler(logging.NullHandler())

# Keys whose values never reach a log line, in any casing (JSON bodies, headers, reprs).
_SECRET_KEYS = (
    "authorization",
    "password",
    "securitycredential",
    "passkey",
    "consumer_secret",
    "consumersecret",
    "initiator_password",
    "access_token",
    "api_key",
    "webhook_secret",
    "callback_token",
    "secret",
    "token",
)
_KEY_VALUE = re.compile(
    r"""(?P<key>["']?(?:[A-Za-z_]*?)(?:"""
    + "|".join(_SECRET_KEYS)
    + r""")["']?\s*[:=]\s*)(?P<quote>["']?)(?P<value>(?:Bearer |Basic )?[^"',&\s}]+)""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
# Kenyan MSISDNs in any of the formats people send: 2547XXXXXXXX, 2541XXXXXXXX, 07..., 01....
_PHONE = re.compile(r"(?<!\d)(?:\+?254|0)?([17]\d{8})(?!\d)")
# Daraja's CheckoutRequestIDs end with the customer's number: ws_CO_ + DDMMYYYYHHMMSS +
# milliseconds + the last nine digits of the MSISDN (ws_CO_21072024125243250722943992).
_CHECKOUT_PHONE = re.compile(r"\b(ws_CO_\d{14,})([17])\d{5}(\d{3})\b")


def mask_phone(phone: str | int) -> str:
    """Mask a phone number for logs: ``254708374149`` becomes ``2547****149``."""
    digits = re.sub(r"\D", "", str(phone))
    if len(digits) < 7:
        return "*" * len(digits)
    return f"{digits[:4]}****{digits[-3:]}"


def _mask_match(match: re.Match[str]) -> str:
    return mask_phone(match.group(0))


def redact(text: str) -> str:
    """Remove secrets and mask phone numbers in a piece of text bound for a log."""
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group('key')}{m.group('quote')}[redacted]", text)
    text = _CHECKOUT_PHONE.sub(lambda m: f"{m.group(1)}{m.group(2)}*****{m.group(3)}", text)
    return _PHONE.sub(_mask_match, text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts secrets and masks phones in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = ()
        return True


logger.addFilter(RedactingFilter())


def get_logger(name: str = "pesa") -> logging.Logger:
    """A logger under ``pesa`` whose records are redacted before any handler sees them.

    Filters on a logger do not apply to its children, so every module takes its own
    logger from here rather than from :func:`logging.getLogger`.
    """
    log = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in log.filters):
        log.addFilter(RedactingFilter())
    return log


def configure_logging(level: str | int = "WARNING", **handler_kwargs: Any) -> logging.Handler:
    """Send pesa's logs to stderr at ``level`` with redaction (what ``PESA_LOG`` sets)."""
    handler = logging.StreamHandler(**handler_kwargs)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
