"""pesa's logger, the redaction filter that keeps secrets out of logs, and phone masking."""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = [
    "RedactingFilter",
    "configure_logging",
    "get_logger",
    "is_secret_key",
    "logger",
    "mask_phone",
    "redact",
    "redact_secrets",
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
_SECRET_ALTERNATIVES = "|".join(_SECRET_KEYS)
# key=value, "key": "value", key: value; a quoted value is redacted up to its closing quote
# (spaces included), an unquoted one up to the next separator.
_KEY_VALUE = re.compile(
    r"""(?P<key>["']?(?:[A-Za-z_]*?)(?:"""
    + _SECRET_ALTERNATIVES
    + r""")["']?\s*[:=]\s*)(?:(?P<quote>["'])(?:\\.|(?!(?P=quote))[^\\])*"""
    + r"""|(?:Bearer |Basic )?[^"',&\s}<]+)""",
    re.IGNORECASE,
)
# <Password>...</Password> (XML/SOAP bodies).
_XML_ELEMENT = re.compile(
    r"(?P<open><(?P<tag>[\w:.-]*?(?:" + _SECRET_ALTERNATIVES + r"))(?:\s[^>]*)?>)[^<]*",
    re.IGNORECASE,
)
# A multipart/form-data part named like a secret: its value is the line after the blank line.
_MULTIPART_PART = re.compile(
    r"(?P<head>name=\"?[\w.-]*?(?:"
    + _SECRET_ALTERNATIVES
    + r")\"?[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*?\r?\n)[^\r\n]*",
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


def is_secret_key(name: str) -> bool:
    """Whether a field called ``name`` holds a secret, in any casing.

    Example:
        >>> is_secret_key("SecurityCredential"), is_secret_key("Amount")
        (True, False)
    """
    return name.lower().replace("-", "_").endswith(_SECRET_KEYS)


def _redacted_value(match: re.Match[str]) -> str:
    return f"{match.group('key')}{match.group('quote') or ''}[redacted]"


def redact_secrets(text: str) -> str:
    """Remove secrets (tokens, passwords, credentials...) from text in any common format.

    JSON, form-encoded (``Password=...&``), headers, XML elements and multipart parts are
    covered; phone numbers are left alone (see :func:`redact` for log lines).
    """
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)
    text = _KEY_VALUE.sub(_redacted_value, text)
    if "<" in text:
        text = _XML_ELEMENT.sub(lambda m: f"{m.group('open')}[redacted]", text)
    if "name=" in text:
        text = _MULTIPART_PART.sub(lambda m: f"{m.group('head')}[redacted]", text)
    return text


def redact(text: str) -> str:
    """Remove secrets and mask phone numbers in a piece of text bound for a log."""
    text = redact_secrets(text)
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
