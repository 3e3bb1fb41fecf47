"""A request for an STK payment, validated before anything is stored or sent (pure).

The gateway's REST API and the Django app's ``request_payment`` accept the same requests:
the rules are here, once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pesa._constants import DEFAULT_STK_MAX_AMOUNT, DEFAULT_STK_MIN_AMOUNT
from pesa._exceptions import ValidationError
from pesa.daraja import (
    normalize_msisdn,
    validate_account_reference,
    validate_amount,
    validate_transaction_desc,
)

__all__ = ["PaymentRequest", "validate_idempotency_key"]

_MAX_IDEMPOTENCY_KEY = 255
_MAX_METADATA_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A validated request to collect ``amount`` shillings from ``phone`` by STK push."""

    phone: str
    amount: int
    account_reference: str
    description: str
    metadata: dict[str, Any] | None = None

    @classmethod
    def validate(
        cls,
        *,
        phone: str,
        amount: Any,
        account_reference: str,
        description: str,
        metadata: dict[str, Any] | None = None,
        min_amount: int = DEFAULT_STK_MIN_AMOUNT,
        max_amount: int = DEFAULT_STK_MAX_AMOUNT,
    ) -> PaymentRequest:
        """Check every field with Daraja's rules before anything is stored or sent.

        Raises:
            ValidationError: naming the field and the rule it broke.
        """
        checked_amount = validate_amount(
            amount, field="amount", minimum=min_amount, maximum=max_amount
        )
        if metadata is not None:
            _check_metadata(metadata)
        return cls(
            phone=normalize_msisdn(phone, field="phone"),
            amount=checked_amount,
            account_reference=validate_account_reference(account_reference),
            description=validate_transaction_desc(description, field="description"),
            metadata=metadata,
        )


def _check_metadata(metadata: dict[str, Any]) -> None:
    try:
        size = len(json.dumps(metadata, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError) as err:
        raise ValidationError("metadata", "must be a JSON object") from err
    if size > _MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata", f"must be at most {_MAX_METADATA_BYTES} bytes of JSON", f"{size} bytes"
        )


def validate_idempotency_key(key: str | None) -> str | None:
    """Accept a printable key of at most 255 characters (or no key at all)."""
    if key is None:
        return None
    key = key.strip()
    if not key:
        raise ValidationError("Idempotency-Key", "must not be empty when present")
    if len(key) > _MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationError(
            "Idempotency-Key", f"must be at most {_MAX_IDEMPOTENCY_KEY} printable characters"
        )
    return key
