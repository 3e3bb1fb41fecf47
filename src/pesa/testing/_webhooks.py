"""Test helpers for webhook receivers: realistic events and correctly signed requests.

Example:
    >>> event = webhook_event("payment.succeeded", amount=250)
    >>> body, headers = signed_webhook(event, "whsec_test", timestamp=1767225600)
    >>> headers["Pesa-Signature"][:13]
    't=1767225600,'
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pesa._version import __version__
from pesa._webhooks import SIGNATURE_HEADER, sign_webhook

__all__ = ["signed_webhook", "webhook_event"]

_TERMINAL_FIELDS: dict[str, dict[str, Any]] = {
    "payment.succeeded": {
        "status": "succeeded",
        "result_code": "0",
        "result_desc": "The service request is processed successfully.",
        "receipt": "NLJ7RT61SV",
    },
    "payment.failed": {
        "status": "failed",
        "result_code": "1032",
        "result_desc": "Request cancelled by user",
        "failure_reason": "cancelled by the customer",
    },
    "payment.pending": {"status": "pending"},
    "payment.rejected": {
        "status": "rejected",
        "result_code": "400.002.02",
        "failure_reason": "Bad Request - Invalid PhoneNumber",
    },
    "payment.unknown": {"status": "unknown", "failure_reason": "read timeout after sending"},
    "payment.updated": {
        "status": "succeeded",
        "result_code": "0",
        "result_desc": "The service request is processed successfully.",
        "receipt": "NLJ7RT61SV",
    },
}


def webhook_event(
    event_type: str = "payment.succeeded",
    *,
    amount: int = 10,
    phone: str = "254708374149",
    payment: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """An event shaped exactly as the gateway delivers it (``{"id", "type", "created_at",
    "data": {"payment", "detail"}}``), with a plausible payment for ``type``.

    Args:
        event_type: the event type; the payment's status and codes follow from it.
        amount: the payment's amount in whole shillings.
        phone: the payment's phone number.
        payment: fields that override the generated payment.
        event_id: the event id (a random ``evt_…`` when omitted).
        created_at: when the event happened (now when omitted).
    """
    when = (created_at or datetime.now(UTC)).astimezone(UTC)
    data: dict[str, Any] = {
        "id": f"pay_{secrets.token_hex(13).upper()}",
        "status": "pending",
        "account": "default",
        "phone": phone,
        "amount": amount,
        "account_reference": "INV0042",
        "description": "Order 42",
        "metadata": None,
        "checkout_request_id": f"ws_CO_{secrets.randbelow(10**20):020d}",
        "checkout_request_id_verified": True,
        "merchant_request_id": "29115-34620561-1",
        "result_code": None,
        "result_desc": None,
        "receipt": None,
        "paid_amount": None,
        "paid_phone": None,
        "transaction_date": None,
        "failure_reason": None,
        "flagged": False,
        "flag_reason": None,
        "evidence_callback_id": None,
        "created_at": when.isoformat(),
        "updated_at": when.isoformat(),
    }
    data.update(_TERMINAL_FIELDS.get(event_type, {}))
    if event_type in ("payment.succeeded", "payment.updated"):
        data["paid_amount"] = amount
        data["paid_phone"] = phone
        data["transaction_date"] = when.isoformat()
    data.update(payment or {})
    return {
        "id": event_id or f"evt_{secrets.token_hex(13).upper()}",
        "type": event_type,
        "created_at": when.isoformat(),
        "data": {"payment": data, "detail": ""},
    }


def signed_webhook(
    event: Mapping[str, Any],
    secret: str | Sequence[str],
    *,
    timestamp: int | None = None,
    attempt: int = 1,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook request as the gateway sends it, signed.

    Post them to your receiver in its tests; :func:`pesa.verify_webhook` accepts them.

    Args:
        event: the event (see :func:`webhook_event`).
        secret: the webhook secret (or several, as during a rotation).
        timestamp: Unix seconds to sign with (now when omitted).
        attempt: the ``Pesa-Delivery-Attempt`` value.
    """
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"pesa-webhooks/{__version__}",
        SIGNATURE_HEADER: sign_webhook(body, secret, timestamp=timestamp),
        "Pesa-Event-Id": str(event.get("id", "")),
        "Pesa-Event-Type": str(event.get("type", "")),
        "Pesa-Delivery-Id": f"whd_{secrets.token_hex(13).upper()}",
        "Pesa-Delivery-Attempt": str(attempt),
    }
    return body, headers
