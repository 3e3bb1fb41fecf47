"""What a C2B confirmation (or validation request) says, read within storable bounds (pure).

The gateway's receipt book and the Django app parse C2B bodies the same way: here, once.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa.daraja import normalize_msisdn, parse_c2b_payment
from pesa.ledger._receipts import Confirmation

__all__ = ["parse_confirmation", "payer_facts", "phone_hashes"]

_TRANS_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_SHORTCODE = re.compile(r"[0-9]{3,16}")
_HASH = re.compile(r"[0-9a-fA-F]{64}")
_AMOUNT_LIMIT = Decimal("1e12")


def phone_hashes(phone: str) -> list[str]:
    """SHA-256 hashes of a Safaricom number in the forms C2B v1 may have hashed.

    REFERENCE §7.1 says v1 sends "a SHA-256 hash" of the MSISDN without saying of which
    form; the 12-digit ``2547XXXXXXXX`` is the one seen, the others cost nothing to match.
    """
    number = normalize_msisdn(phone)
    local = number[3:]
    forms = (number, f"+{number}", f"0{local}", local)
    return [hashlib.sha256(form.encode("ascii")).hexdigest() for form in forms]


def payer_facts(msisdn: str | None) -> dict[str, str | None]:
    """What a C2B ``MSISDN`` tells about the payer, for phone filters.

    A SHA-256 hash (v1) is kept as ``phone_hash``; a masked number (v2, ``2547 ***** 126``)
    gives its visible leading and trailing digits; a full number (seen in some sandboxes)
    gives ``phone`` and its hash.
    """
    facts: dict[str, str | None] = {
        "phone": None,
        "phone_hash": None,
        "msisdn_prefix": None,
        "msisdn_suffix": None,
    }
    if not msisdn:
        return facts
    text = msisdn.strip()
    if _HASH.fullmatch(text):
        facts["phone_hash"] = text.lower()
        return facts
    if "*" in text:
        head, _, rest = text.partition("*")
        tail = rest.rsplit("*", 1)[-1]
        facts["msisdn_prefix"] = re.sub(r"\D", "", head)[:16] or None
        facts["msisdn_suffix"] = re.sub(r"\D", "", tail)[:16] or None
        return facts
    try:
        number = normalize_msisdn(text)
    except ValidationError:
        return facts
    facts["phone"] = number
    facts["phone_hash"] = phone_hashes(number)[0]
    return facts


def _clean(value: str | None, name: str, limit: int) -> str | None:
    """A text field of a confirmation: ``None`` when empty; refused when not Daraja's."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit:
        raise InvalidCallbackError(f"C2B confirmation: {name!r} is longer than {limit}")
    if "\x00" in text:
        raise InvalidCallbackError(f"C2B confirmation: {name!r} contains NUL")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidCallbackError(f"C2B confirmation: {name!r} is not valid text") from err
    return text


def parse_confirmation(body: bytes) -> Confirmation:
    """Parse a C2B confirmation body into a :class:`Confirmation`, within storable bounds.

    Raises:
        InvalidCallbackError: not a C2B confirmation, or a field Daraja never sends (a
            ``TransID`` that is not 1-32 letters and digits, a non-numeric shortcode, an
            amount that is not positive with at most two decimals, over-long text).
    """
    payment = parse_c2b_payment(body)
    trans_id = payment.trans_id.strip()
    if _TRANS_ID.fullmatch(trans_id) is None:
        raise InvalidCallbackError("C2B confirmation: 'TransID' must be 1-32 letters and digits")
    shortcode = payment.business_short_code.strip()
    if _SHORTCODE.fullmatch(shortcode) is None:
        raise InvalidCallbackError("C2B confirmation: 'BusinessShortCode' must be digits")
    amount = payment.trans_amount
    if not (0 < amount < _AMOUNT_LIMIT) or amount != amount.quantize(Decimal("0.01")):
        raise InvalidCallbackError(
            "C2B confirmation: 'TransAmount' must be a positive amount in shillings and cents"
        )
    names = " ".join(
        part.strip()
        for part in (payment.first_name, payment.middle_name, payment.last_name)
        if part.strip()
    )
    balance = payment.org_account_balance
    if balance is not None and not abs(balance) < Decimal("1e14"):
        balance = None
    return Confirmation(
        trans_id=trans_id,
        amount=amount,
        shortcode=shortcode,
        account_reference=_clean(payment.bill_ref_number, "BillRefNumber", 64),
        msisdn=_clean(payment.msisdn, "MSISDN", 80),
        trans_time=payment.trans_time,
        transaction_type=_clean(payment.transaction_type, "TransactionType", 32),
        invoice_number=_clean(payment.invoice_number, "InvoiceNumber", 64),
        third_party_trans_id=_clean(payment.third_party_trans_id, "ThirdPartyTransID", 64),
        payer_name=_clean(names, "FirstName/MiddleName/LastName", 255),
        org_account_balance=balance,
    )
