"""Signing and verifying the webhooks the gateway sends (the ``Pesa-Signature`` header).

Every webhook body is signed with HMAC-SHA256 over ``"<timestamp>.<body>"`` using the
shared webhook secret, and sent with one header::

    Pesa-Signature: t=1767225600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

While a secret is being rotated the gateway signs with the new and the old secret, so the
header carries several ``v1=`` values and a receiver holding either secret accepts it.
The timestamp is covered by the signature, and receivers refuse signatures older (or
further in the future) than a tolerance, so a captured request cannot be replayed later.

This module needs nothing but the standard library, so a receiver can ``pip install pesa``
without the server extra and call :func:`pesa.verify_webhook`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Sequence
from typing import Any, Final, Literal

from pesa._exceptions import PesaError, ValidationError

__all__ = [
    "DEFAULT_WEBHOOK_TOLERANCE",
    "SIGNATURE_HEADER",
    "SIGNATURE_SCHEME",
    "WebhookSignatureError",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER: Final = "Pesa-Signature"
SIGNATURE_SCHEME: Final = "v1"
DEFAULT_WEBHOOK_TOLERANCE: Final = 300
# Unix seconds fit in 15 digits for 30 million years; a header is three short fields, or a
# few more during a secret rotation.
_MAX_TIMESTAMP_DIGITS: Final = 15
_MAX_HEADER_LENGTH: Final = 4096

WebhookSignatureReason = Literal[
    "malformed_header",
    "no_signature",
    "timestamp_too_old",
    "timestamp_in_future",
    "signature_mismatch",
    "invalid_payload",
]


class WebhookSignatureError(PesaError):
    """A webhook's ``Pesa-Signature`` header does not prove it came from the gateway.

    Answer such a request with a 400 and do not act on its body.

    Attributes:
        reason: why, as a stable code: ``malformed_header``, ``no_signature``,
            ``timestamp_too_old``, ``timestamp_in_future``, ``signature_mismatch`` or
            ``invalid_payload`` (signed correctly but not a JSON object).
    """

    def __init__(self, reason: WebhookSignatureReason, message: str) -> None:
        self.reason: WebhookSignatureReason = reason
        super().__init__(message)


def _as_bytes(value: str | bytes, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ValidationError(name, "must be str or bytes", type(value).__name__)


def _secrets(secret: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    if isinstance(secret, str | bytes):
        candidates: list[str | bytes] = [secret]
    else:
        candidates = list(secret)
    keys = [_as_bytes(s, "secret") for s in candidates]
    if not keys or any(not key for key in keys):
        raise ValidationError("secret", "must be a non-empty string (or a list of them)")
    return keys


def _digest(key: bytes, timestamp: int, payload: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def sign_webhook(
    payload: str | bytes,
    secret: str | bytes | Sequence[str | bytes],
    timestamp: int | None = None,
) -> str:
    """Build the ``Pesa-Signature`` header value for a webhook body.

    Args:
        payload: the exact bytes that will be sent as the request body.
        secret: the webhook secret; a list of secrets signs with each of them (one ``v1=``
            per secret, newest first), which is how a secret is rotated without downtime.
        timestamp: Unix seconds to sign with; the current time when omitted.

    Returns:
        The header value, e.g. ``"t=1767225600,v1=5257a8..."``.

    Example:
        >>> sign_webhook(b'{"id":"evt_1"}', "whsec_test", timestamp=1767225600)[:13]
        't=1767225600,'
    """
    body = _as_bytes(payload, "payload")
    keys = _secrets(secret)
    ts = int(time.time()) if timestamp is None else timestamp
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise ValidationError("timestamp", "must be a non-negative integer (Unix seconds)", ts)
    parts = [f"t={ts}"]
    parts.extend(f"{SIGNATURE_SCHEME}={_digest(key, ts, body)}" for key in keys)
    return ",".join(parts)


def _parse_header(header: str) -> tuple[int, list[str]]:
    if not isinstance(header, str) or not header.strip():
        raise WebhookSignatureError(
            "malformed_header", f"{SIGNATURE_HEADER} header is missing or empty"
        )
    if len(header) > _MAX_HEADER_LENGTH:
        raise WebhookSignatureError(
            "malformed_header",
            f"{SIGNATURE_HEADER} header is longer than {_MAX_HEADER_LENGTH} characters",
        )
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise WebhookSignatureError(
                "malformed_header",
                f"{SIGNATURE_HEADER} header is malformed: expected comma-separated key=value pairs",
            )
        key, value = key.strip(), value.strip()
        if key == "t":
            if timestamp is not None:
                raise WebhookSignatureError(
                    "malformed_header", f"{SIGNATURE_HEADER} header has more than one timestamp"
                )
            if not value.isascii() or not value.isdigit() or len(value) > _MAX_TIMESTAMP_DIGITS:
                raise WebhookSignatureError(
                    "malformed_header",
                    f"{SIGNATURE_HEADER} header timestamp must be Unix seconds "
                    f"(at most {_MAX_TIMESTAMP_DIGITS} digits)",
                )
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            if not value.isascii():
                raise WebhookSignatureError(
                    "malformed_header", f"{SIGNATURE_HEADER} header signature must be hex digits"
                )
            signatures.append(value)
        # Other schemes are ignored so that a future v2 can be added next to v1.
    if timestamp is None:
        raise WebhookSignatureError(
            "malformed_header", f"{SIGNATURE_HEADER} header has no timestamp (t=...)"
        )
    if not signatures:
        raise WebhookSignatureError(
            "no_signature", f"{SIGNATURE_HEADER} header has no {SIGNATURE_SCHEME} signature"
        )
    return timestamp, signatures


def verify_webhook(
    payload: str | bytes,
    header: str,
    secret: str | bytes | Sequence[str | bytes],
    tolerance: int | None = DEFAULT_WEBHOOK_TOLERANCE,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a webhook's ``Pesa-Signature`` header and return the event it carries.

    Verify the raw body exactly as received, before any JSON parsing or re-encoding.

    Args:
        payload: the raw request body.
        header: the value of the ``Pesa-Signature`` header.
        secret: your webhook secret; pass a list to accept several (old and new during a
            rotation).
        tolerance: how many seconds the signed timestamp may differ from now, in either
            direction (replay protection); ``None`` turns the check off.
        now: the current Unix time, for tests; the system clock when omitted.

    Returns:
        The event, decoded from the JSON body.

    Raises:
        WebhookSignatureError: the header is missing or malformed, the timestamp is outside
            the tolerance, or no signature matches (``reason`` says which).
        ValidationError: ``secret`` or ``tolerance`` is unusable.

    Example:
        >>> header = sign_webhook(b'{"id":"evt_1"}', "whsec_test", timestamp=1767225600)
        >>> verify_webhook(b'{"id":"evt_1"}', header, "whsec_test", now=1767225601)
        {'id': 'evt_1'}
    """
    if tolerance is not None and (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not math.isfinite(tolerance)
        or tolerance < 0
    ):
        # NaN would compare false with everything and so accept any timestamp.
        raise ValidationError(
            "tolerance", "must be a finite, non-negative number of seconds or None", tolerance
        )
    if now is not None and (
        isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now)
    ):
        raise ValidationError("now", "must be a finite number of Unix seconds or None", now)
    body = _as_bytes(payload, "payload")
    keys = _secrets(secret)
    timestamp, signatures = _parse_header(header)

    if tolerance is not None:
        current = time.time() if now is None else now
        if timestamp < current - tolerance:
            raise WebhookSignatureError(
                "timestamp_too_old",
                f"webhook timestamp is {int(current - timestamp)} s old, "
                f"more than the {tolerance} s tolerance",
            )
        if timestamp > current + tolerance:
            raise WebhookSignatureError(
                "timestamp_in_future",
                f"webhook timestamp is {int(timestamp - current)} s in the future, "
                f"more than the {tolerance} s tolerance",
            )

    expected = [_digest(key, timestamp, body) for key in keys]
    # compare_digest runs in time independent of where the strings differ; every pair is
    # compared so the time taken does not reveal which secret or signature matched.
    matched = False
    for candidate in signatures:
        for digest in expected:
            if hmac.compare_digest(candidate.encode("utf-8"), digest.encode("ascii")):
                matched = True
    if not matched:
        raise WebhookSignatureError(
            "signature_mismatch",
            "no webhook signature matches the payload and secret "
            "(wrong secret, or the body was changed after signing)",
        )

    try:
        event = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise WebhookSignatureError(
            "invalid_payload", "webhook body is signed but is not valid JSON"
        ) from err
    if not isinstance(event, dict):
        raise WebhookSignatureError("invalid_payload", "webhook body is not a JSON object")
    return event
