"""Input validation for Daraja fields: phone numbers, amounts, text lengths, shortcodes, URLs.

Every check raises :class:`pesa.ValidationError` naming the field and the rule, before
anything is sent. Nothing is ever silently truncated or rounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final

from pydantic import BeforeValidator

from pesa._constants import DEFAULT_STK_MAX_AMOUNT, DEFAULT_STK_MIN_AMOUNT
from pesa._exceptions import ValidationError
from pesa._logging import mask_phone

__all__ = [
    "ACCOUNT_REFERENCE_MAX",
    "BILL_REF_MAX",
    "C2B_URL_FORBIDDEN_WORDS",
    "OCCASION_MAX",
    "ORIGINATOR_CONVERSATION_ID_MAX",
    "REMARKS_MAX",
    "REMARKS_MIN",
    "TRANSACTION_DESC_MAX",
    "Msisdn",
    "check_storable_text",
    "normalize_msisdn",
    "validate_account_reference",
    "validate_amount",
    "validate_c2b_url",
    "validate_occasion",
    "validate_remarks",
    "validate_shortcode",
    "validate_text",
    "validate_transaction_desc",
    "validate_url",
]

# Field lengths of REFERENCE §11 ("Field length summary").
ACCOUNT_REFERENCE_MAX: Final = 12
TRANSACTION_DESC_MAX: Final = 13
REMARKS_MIN: Final = 2
REMARKS_MAX: Final = 100
OCCASION_MAX: Final = 100
BILL_REF_MAX: Final = 20
ORIGINATOR_CONVERSATION_ID_MAX: Final = 100

_ACCEPTED_PHONES: Final = (
    "a Safaricom number as 07XXXXXXXX, 01XXXXXXXX, 7XXXXXXXX, 1XXXXXXXX, "
    "+2547XXXXXXXX, 2547XXXXXXXX or 2541XXXXXXXX (spaces and dashes allowed)"
)
# After removing spaces and dashes: optional +254 / 254 / 0 prefix, then 7 or 1 and 8 digits.
# ASCII digits only: ``\d`` would also take Arabic-Indic (U+0660...) and other Unicode digits,
# which Daraja and every later comparison treat as different characters.
_MSISDN: Final = re.compile(r"(?:\+254|254|0)?([17][0-9]{8})")
_SEPARATORS: Final = re.compile(r"[ \t\-]")
_SHORTCODE: Final = re.compile(r"[0-9]{5,7}")


def _shown(text: str) -> str:
    """What an error may show of a rejected phone: masked when it could be a real number."""
    digits = sum(ch.isdigit() for ch in text)
    return mask_phone(text) if digits >= 7 else text


def normalize_msisdn(value: str | int, *, field: str = "phone") -> str:
    """Normalise a Kenyan Safaricom phone number to Daraja's 12-digit form.

    Accepts ``07XXXXXXXX``, ``01XXXXXXXX``, ``7XXXXXXXX``, ``1XXXXXXXX``, ``+2547…``,
    ``2547…`` and ``2541…``, with spaces or dashes anywhere.

    Example:
        >>> normalize_msisdn("0708 374 149")
        '254708374149'

    Raises:
        ValidationError: anything else; the message says what was given (masked) and
            what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(field, f"must be {_ACCEPTED_PHONES}", type(value).__name__)
    text = str(value).strip()
    if not text.isascii():
        raise ValidationError(
            field, f"must be written with ASCII digits 0-9: {_ACCEPTED_PHONES}", _shown(text)
        )
    compact = _SEPARATORS.sub("", text)
    match = _MSISDN.fullmatch(compact)
    if match is None:
        raise ValidationError(field, f"must be {_ACCEPTED_PHONES}", _shown(text))
    return "254" + match.group(1)


def _msisdn_validator(value: Any) -> str:
    return normalize_msisdn(value)


Msisdn = Annotated[str, BeforeValidator(_msisdn_validator)]
"""A phone number field for pydantic models: any accepted format in, 12 digits out."""


def validate_amount(
    value: Any,
    *,
    field: str = "amount",
    minimum: int = DEFAULT_STK_MIN_AMOUNT,
    maximum: int = DEFAULT_STK_MAX_AMOUNT,
) -> int:
    """Check an amount of whole shillings and return it as an ``int``.

    ``int`` and ``Decimal`` without a fraction are accepted; ``bool``, ``float``, strings
    and fractional amounts are refused (M-Pesa moves whole shillings only, and a float
    cannot be trusted to hold money).

    Example:
        >>> validate_amount(Decimal("100.00"), minimum=1, maximum=250_000)
        100

    Raises:
        ValidationError: naming ``field`` and the rule broken.
    """
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValidationError(
            field, "must be whole shillings as an int or a Decimal (not float or str)", value
        )
    if isinstance(value, Decimal):
        try:
            if not value.is_finite() or value != value.to_integral_value():
                raise ValidationError(field, "must be whole shillings, without a fraction", value)
            amount = int(value)
        except InvalidOperation as err:  # pragma: no cover - is_finite guards this
            raise ValidationError(field, "must be a number", value) from err
    else:
        amount = value
    if amount < minimum or amount > maximum:
        raise ValidationError(field, f"must be between {minimum} and {maximum} shillings", value)
    return amount


def validate_text(
    value: Any,
    *,
    field: str,
    max_length: int,
    min_length: int = 1,
) -> str:
    """Check a free-text field's type and length; too long is an error, never truncated.

    Raises:
        ValidationError: naming ``field`` and the allowed length.
    """
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string", value)
    if len(value) > max_length:
        # Checked first, and the value not echoed: never scan or repeat a huge value.
        raise ValidationError(field, f"{_length_rule(min_length, max_length)}, got {len(value)}")
    if not value.isprintable():
        raise ValidationError(
            field,
            "must contain only printable characters (no control characters such as NUL or "
            "newline, no lone surrogates)",
            value,
        )
    if value != value.strip():
        raise ValidationError(field, "must not start or end with whitespace", value)
    if len(value) < min_length:
        raise ValidationError(
            field, f"{_length_rule(min_length, max_length)}, got {len(value)}", value
        )
    return value


def _length_rule(min_length: int, max_length: int) -> str:
    if min_length == 0:
        return f"must be at most {max_length} characters"
    return f"must be {min_length} to {max_length} characters"


def validate_account_reference(value: Any, *, field: str = "account_reference") -> str:
    """STK ``AccountReference``: 1 to 12 characters (shown to the customer in the prompt)."""
    return validate_text(value, field=field, max_length=ACCOUNT_REFERENCE_MAX)


def validate_transaction_desc(value: Any, *, field: str = "description") -> str:
    """STK ``TransactionDesc``: 1 to 13 characters."""
    return validate_text(value, field=field, max_length=TRANSACTION_DESC_MAX)


def validate_remarks(value: Any, *, field: str = "remarks") -> str:
    """Initiator-API ``Remarks``: 2 to 100 characters."""
    return validate_text(value, field=field, min_length=REMARKS_MIN, max_length=REMARKS_MAX)


def validate_occasion(value: Any, *, field: str = "occasion") -> str:
    """Initiator-API ``Occasion``: at most 100 characters (may be empty)."""
    return validate_text(value, field=field, min_length=0, max_length=OCCASION_MAX)


def check_storable_text(value: str, *, field: str) -> str:
    """Refuse text that a database cannot store or that no client can encode.

    NUL (PostgreSQL's text types refuse it) and lone surrogates (not encodable as UTF-8)
    are refused anywhere, even where other control characters are fine (JSON metadata).

    Raises:
        ValidationError: naming ``field``.
    """
    if "\x00" in value:
        raise ValidationError(field, "must not contain the NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValidationError(
            field, "must be valid Unicode text (a lone surrogate cannot be stored)"
        ) from err
    return value


def validate_shortcode(value: Any, *, field: str = "shortcode") -> str:
    """A PayBill, till or organisation shortcode: 5 to 7 digits, returned as a string."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(field, "must be a shortcode of 5 to 7 digits", value)
    text = str(value).strip()
    if _SHORTCODE.fullmatch(text) is None:
        raise ValidationError(field, "must be a shortcode of 5 to 7 digits", text)
    return text


C2B_URL_FORBIDDEN_WORDS: Final = (
    "m-pesa",
    "mpesa",
    "safaricom",
    "exe",
    "exec",
    "cmd",
    "sql",
    "query",
)
"""Words Daraja refuses anywhere in a C2B URL, host included, in any case (REFERENCE §11)."""


def validate_c2b_url(value: Any, *, field: str = "confirmation_url") -> str:
    """A C2B confirmation or validation URL: a callback URL without the words Daraja
    refuses in C2B URLs (``mpesa``, ``safaricom``, ``exe``, ``cmd``, ``sql``, ``query``...).

    Raises:
        ValidationError: naming the word found (the URL itself may hold a secret: not shown).
    """
    url = validate_url(value, field=field)
    lowered = url.lower()
    for word in C2B_URL_FORBIDDEN_WORDS:
        if word in lowered:
            raise ValidationError(
                field, f"must not contain the word {word!r} (Daraja refuses C2B URLs with it)"
            )
    return url


def validate_url(value: Any, *, field: str = "callback_url") -> str:
    """A callback URL: absolute ``http``/``https``, no whitespace (Daraja rejects both)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(field, "must be an absolute http(s) URL", value)
    if any(ch.isspace() for ch in value):
        raise ValidationError(field, "must not contain whitespace", value)
    if not re.fullmatch(r"https?://[^/?#]+.*", value, flags=re.IGNORECASE):
        raise ValidationError(field, "must be an absolute http(s) URL", value)
    return value
