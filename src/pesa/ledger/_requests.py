"""A request for an STK payment, validated before anything is stored or sent (pure).

The gateway's REST API and the Django app's ``request_payment`` accept the same requests:
the rules are here, once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from pesa._constants import (
    DEFAULT_B2C_MAX_AMOUNT,
    DEFAULT_B2C_MIN_AMOUNT,
    DEFAULT_STK_MAX_AMOUNT,
    DEFAULT_STK_MIN_AMOUNT,
)
from pesa._exceptions import ValidationError
from pesa.daraja import (
    check_storable_text,
    normalize_msisdn,
    validate_account_reference,
    validate_amount,
    validate_occasion,
    validate_remarks,
    validate_transaction_desc,
)
from pesa.ledger._payout_states import PAYOUT_COMMANDS

__all__ = [
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "PaymentRequest",
    "PayoutRequest",
    "check_metadata",
    "validate_idempotency_key",
]

_MAX_IDEMPOTENCY_KEY = 255
MAX_METADATA_BYTES: Final = 16_384
"""The largest ``metadata`` accepted, in bytes of compact UTF-8 JSON."""
MAX_METADATA_DEPTH: Final = 16
"""How deep ``metadata`` may nest objects and arrays (the object itself is level 1)."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """A validated request to collect ``amount`` shillings from ``phone`` by STK push."""

    phone: str
    amount: int
    account_reference: str
    description: str
    metadata: dict[str, Any] | None = None
    account: str | None = None
    """The gateway's named Daraja account to push on (``None``: the default one)."""

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
        account: str | None = None,
    ) -> PaymentRequest:
        """Check every field with Daraja's rules before anything is stored or sent.

        Raises:
            ValidationError: naming the field and the rule it broke.
        """
        checked_amount = validate_amount(
            amount, field="amount", minimum=min_amount, maximum=max_amount
        )
        if metadata is not None:
            check_metadata(metadata)
        return cls(
            phone=normalize_msisdn(phone, field="phone"),
            amount=checked_amount,
            account_reference=validate_account_reference(account_reference),
            description=validate_transaction_desc(description, field="description"),
            metadata=metadata,
            account=account,
        )


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    """A B2C payout, validated before anything is stored or sent (gateway and Django app)."""

    phone: str
    amount: int
    command: str
    remarks: str
    occasion: str | None
    metadata: dict[str, Any] | None

    @classmethod
    def validate(
        cls,
        *,
        phone: Any,
        amount: Any,
        command: Any = "BusinessPayment",
        remarks: Any,
        occasion: Any = None,
        metadata: Any = None,
    ) -> PayoutRequest:
        """Check a payout with Daraja's B2C rules.

        Raises:
            ValidationError: naming the field and the rule.
        """
        if command not in PAYOUT_COMMANDS:
            raise ValidationError(
                "command", f"must be one of {', '.join(PAYOUT_COMMANDS)}", command
            )
        if metadata is not None:
            check_metadata(metadata)
        return cls(
            phone=normalize_msisdn(phone, field="phone"),
            amount=validate_amount(
                amount,
                field="amount",
                minimum=DEFAULT_B2C_MIN_AMOUNT,
                maximum=DEFAULT_B2C_MAX_AMOUNT,
            ),
            command=str(command),
            remarks=validate_remarks(remarks),
            occasion=None if occasion in (None, "") else validate_occasion(occasion),
            metadata=metadata,
        )


def check_metadata(metadata: Any) -> None:
    """Metadata is stored, hashed, returned and sent in webhooks: check it can be, first."""
    if not isinstance(metadata, dict):
        raise ValidationError("metadata", "must be a JSON object")
    _check_json_value(metadata, "metadata", 1)
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValidationError(
            "metadata", f"must be at most {MAX_METADATA_BYTES} bytes of JSON", f"{size} bytes"
        )


def _check_json_value(value: Any, where: str, depth: int) -> None:
    # Iterative in spirit, recursive in code: the depth bound keeps the recursion shallow.
    if isinstance(value, dict | list) and depth > MAX_METADATA_DEPTH:
        raise ValidationError(
            "metadata", f"must be nested at most {MAX_METADATA_DEPTH} levels deep", where
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    "metadata", "object keys must be strings", f"{where}: {type(key).__name__}"
                )
            check_storable_text(key, field=f"{where} key")
            _check_json_value(item, f"{where}.{key[:40]}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]", depth + 1)
    elif isinstance(value, str):
        check_storable_text(value, field=where)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(where, "must be a finite number (not NaN or Infinity)")
    elif value is not None and not isinstance(value, bool | int):
        raise ValidationError(
            where, "must be JSON: an object, array, string, number, true, false or null"
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
