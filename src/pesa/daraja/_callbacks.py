"""Parsers for what Daraja POSTs to us: STK callbacks, ``{"Result": ...}`` envelopes, C2B payloads.

Parse defensively (REFERENCE §4): ints, strings and floats drift; lists may be single
objects; optional items may lack a ``Value``. Anything that is not the shape Daraja sends
raises :class:`pesa.InvalidCallbackError`, never a ``KeyError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa._logging import mask_phone
from pesa.daraja._codes import ResultCode, lookup_code
from pesa.daraja._models import is_success_code
from pesa.daraja._time import parse_daraja_timestamp

__all__ = [
    "C2B_REJECT_CODES",
    "CALLBACK_ACCEPTED",
    "MAX_AMOUNT",
    "MAX_CALLBACK_DEPTH",
    "MAX_CODE_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_ITEMS",
    "MAX_PHONE_DIGITS",
    "MAX_RECEIPT_LENGTH",
    "MAX_TEXT_LENGTH",
    "AccountBalance",
    "C2BPayment",
    "ResultEnvelope",
    "StkCallback",
    "StkOutcome",
    "c2b_confirmation_reply",
    "c2b_validation_reply",
    "parse_account_balances",
    "parse_c2b_payment",
    "parse_result",
    "parse_stk_callback",
]

CALLBACK_ACCEPTED: Final[dict[str, Any]] = {"ResultCode": 0, "ResultDesc": "Accepted"}
"""The body to answer an STK callback or a ``Result`` POST with (HTTP 200)."""

C2B_REJECT_CODES: Final[dict[str, str]] = {
    "C2B00011": "Invalid MSISDN",
    "C2B00012": "Invalid Account Number",
    "C2B00013": "Invalid Amount",
    "C2B00014": "Invalid KYC Details",
    "C2B00015": "Invalid Shortcode",
    "C2B00016": "Other Error",
}

_Frozen = ConfigDict(frozen=True)

# Bounds on what a callback may carry (REFERENCE §6.3, §7, §8; real values are far below):
# anything beyond is not from Daraja, and must not reach a database column or a log.
MAX_CALLBACK_DEPTH: Final = 16
"""Deepest JSON nesting accepted in a callback body (Daraja's own go 7 levels deep)."""
MAX_ID_LENGTH: Final = 100
"""Longest CheckoutRequestID, MerchantRequestID, ConversationID... (printable ASCII)."""
MAX_RECEIPT_LENGTH: Final = 32
"""Longest M-Pesa receipt / TransID (letters and digits; real ones have 10)."""
MAX_CODE_LENGTH: Final = 32
"""Longest ResultCode / ResultType."""
MAX_TEXT_LENGTH: Final = 1024
"""Longest free text (ResultDesc, names, account references, parameter values)."""
MAX_PHONE_DIGITS: Final = 15
"""Most digits (or ``*`` masks) in a PhoneNumber: E.164 allows 15."""
MAX_AMOUNT: Final = Decimal("999999999999.99")
"""Largest amount accepted in a callback (what the ledger's NUMERIC(14, 2) columns hold)."""
MAX_ITEMS: Final = 64
"""Most items in a CallbackMetadata / ResultParameters / ReferenceData list."""
_CENTS = Decimal("0.01")


def _load(body: bytes | str | Mapping[str, Any], what: str) -> Mapping[str, Any]:
    if isinstance(body, Mapping):
        _check_depth(body, what)
        return body
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidCallbackError(f"{what}: body is not UTF-8") from err
    if not isinstance(body, str):
        raise InvalidCallbackError(f"{what}: body must be bytes, str or a mapping")
    try:
        data = json.loads(body)
    except RecursionError as err:
        # 30,000 nested arrays: json.loads gives up on its own recursion limit.
        raise InvalidCallbackError(
            f"{what}: body is nested more than {MAX_CALLBACK_DEPTH} levels deep"
        ) from err
    except ValueError as err:
        raise InvalidCallbackError(f"{what}: body is not JSON") from err
    if not isinstance(data, dict):
        raise InvalidCallbackError(f"{what}: body must be a JSON object")
    _check_depth(data, what)
    return data


def _check_depth(data: Any, what: str) -> None:
    # Breadth-first, so a deep body costs at most MAX_CALLBACK_DEPTH levels of work.
    level: list[Any] = [data]
    for _ in range(MAX_CALLBACK_DEPTH):
        children: list[Any] = []
        for value in level:
            if isinstance(value, Mapping):
                children.extend(v for v in value.values() if isinstance(v, Mapping | list))
            elif isinstance(value, list):
                children.extend(v for v in value if isinstance(v, Mapping | list))
        if not children:
            return
        level = children
    raise InvalidCallbackError(f"{what}: body is nested more than {MAX_CALLBACK_DEPTH} levels deep")


def _bounded(value: str, key: str, what: str, max_length: int, *, ascii_only: bool) -> str:
    """``value`` if it is storable text within ``max_length``, else InvalidCallbackError."""
    if len(value) > max_length:
        raise InvalidCallbackError(
            f"{what}: {key!r} is longer than {max_length} characters ({len(value)})"
        )
    if ascii_only:
        if not (value.isascii() and value.isprintable()):
            raise InvalidCallbackError(f"{what}: {key!r} must be printable ASCII")
    elif "\x00" in value or not _encodable(value):
        raise InvalidCallbackError(f"{what}: {key!r} contains NUL or invalid Unicode")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _mapping(parent: Mapping[str, Any], key: str, what: str) -> Mapping[str, Any]:
    value = parent.get(key)
    if not isinstance(value, Mapping):
        raise InvalidCallbackError(f"{what}: missing object {key!r}")
    return value


def _text(
    parent: Mapping[str, Any],
    key: str,
    what: str,
    *,
    required: bool = True,
    max_length: int = MAX_TEXT_LENGTH,
    ascii_only: bool = False,
) -> str:
    value = parent.get(key)
    if isinstance(value, str) and value.strip():
        return _bounded(value, key, what, max_length, ascii_only=ascii_only)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or value >= 10**max_length:
            raise InvalidCallbackError(f"{what}: {key!r} is out of range")
        return str(value)
    if not required and value in (None, ""):
        return ""
    raise InvalidCallbackError(f"{what}: {key!r} must be a non-empty string")


def _id(parent: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str:
    """An identifier Daraja issued: printable ASCII of at most :data:`MAX_ID_LENGTH`."""
    return _text(parent, key, what, required=required, max_length=MAX_ID_LENGTH, ascii_only=True)


def _code(parent: Mapping[str, Any], key: str, what: str) -> str:
    value = parent.get(key)
    if isinstance(value, bool):
        raise InvalidCallbackError(f"{what}: {key!r} must be a code, not a boolean")
    if isinstance(value, float) and value.is_integer() and abs(value) < 10**MAX_CODE_LENGTH:
        return str(int(value))
    if isinstance(value, int):
        if abs(value) >= 10**MAX_CODE_LENGTH:
            raise InvalidCallbackError(f"{what}: {key!r} is longer than {MAX_CODE_LENGTH} digits")
        return str(value)
    if isinstance(value, str) and value.strip():
        return _bounded(value.strip(), key, what, MAX_CODE_LENGTH, ascii_only=True)
    raise InvalidCallbackError(f"{what}: {key!r} is missing or not a code")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _items(value: Any, key_name: str, what: str) -> dict[str, Any]:
    """``[{"Name": k, "Value": v}, ...]`` (or one such object) as ``{k: v}``; no Value -> None."""
    result: dict[str, Any] = {}
    items = _as_list(value)
    if len(items) > MAX_ITEMS:
        raise InvalidCallbackError(f"{what}: more than {MAX_ITEMS} items")
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get(key_name), str):
            raise InvalidCallbackError(f"{what}: every item needs a string {key_name!r}")
        name = _bounded(item[key_name], key_name, what, MAX_ID_LENGTH, ascii_only=True)
        item_value = item.get("Value")
        if isinstance(item_value, str):
            item_value = _bounded(item_value, name, what, MAX_TEXT_LENGTH, ascii_only=False)
        result[name] = item_value
    return result


def _decimal(value: Any, what: str, *, signed: bool = False) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise InvalidCallbackError(f"{what} must be a number")
    text = str(value).strip()
    if len(text) > 40:
        raise InvalidCallbackError(f"{what} must be a number of at most 40 characters")
    try:
        # str() first: Decimal(1.1) would carry the float's binary error.
        amount = Decimal(text)
    except InvalidOperation as err:
        raise InvalidCallbackError(f"{what} must be a number") from err
    if not amount.is_finite():
        raise InvalidCallbackError(f"{what} must be a finite number")
    if not (-MAX_AMOUNT if signed else 0) <= amount <= MAX_AMOUNT:
        low = f"-{MAX_AMOUNT}" if signed else "0"
        raise InvalidCallbackError(f"{what} must be between {low} and {MAX_AMOUNT}")
    if amount != amount.quantize(_CENTS):
        raise InvalidCallbackError(f"{what} must have at most 2 decimal places")
    return amount


def _timestamp(value: Any, what: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return parse_daraja_timestamp(value, field=what)
    except ValidationError as err:
        raise InvalidCallbackError(f"{what} must be YYYYMMDDHHMMSS") from err


def _phone(value: Any) -> str | None:
    what = "STK callback: 'PhoneNumber'"
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidCallbackError(f"{what} must be a number or a string")
    if isinstance(value, float):
        if not value.is_integer() or not 0 < value < 10**MAX_PHONE_DIGITS:
            raise InvalidCallbackError(f"{what} must be at most {MAX_PHONE_DIGITS} digits")
        value = int(value)
    if isinstance(value, int) and not 0 < value < 10**MAX_PHONE_DIGITS:
        raise InvalidCallbackError(f"{what} must be at most {MAX_PHONE_DIGITS} digits")
    text = str(value).strip()
    # ASCII digits, maybe masked with '*' (2547****149), maybe spaced (2547 ***** 126).
    compact = text.replace(" ", "").removeprefix("+")
    if len(text) > 2 * MAX_PHONE_DIGITS or not _PHONE_CHARS.fullmatch(compact):
        raise InvalidCallbackError(
            f"{what} must be at most {MAX_PHONE_DIGITS} ASCII digits (or '*' masks)"
        )
    return text or None


_PHONE_CHARS: Final = re.compile(rf"[0-9*]{{1,{MAX_PHONE_DIGITS}}}")


StkOutcome = Literal["succeeded", "failed", "unverified"]
"""What an STK callback shows on its own: see :attr:`StkCallback.outcome`."""


class StkCallback(BaseModel):
    """A parsed STK callback (``{"Body": {"stkCallback": ...}}``).

    A callback has no signature (REFERENCE §6.3): whoever knows your callback URL can post
    one. :attr:`outcome` says what this one shows on its own; before you ship goods, check
    ``amount`` against your order, and settle anything ``unverified`` with an STK query
    (``Daraja.stk_query``), whose answer comes from Daraja itself.

    Attributes:
        merchant_request_id: ``MerchantRequestID``.
        checkout_request_id: ``CheckoutRequestID``, the key to match our request.
        result_code: ``ResultCode`` as a string (``"0"`` paid).
        result_desc: ``ResultDesc`` (wording varies: switch on the code).
        amount: ``Amount`` as a Decimal, on success.
        receipt: ``MpesaReceiptNumber``, on success.
        transaction_date: ``TransactionDate`` as an aware Nairobi datetime.
        phone: ``PhoneNumber`` as text (may be masked or absent).
        balance: ``Balance`` when it has a value (rare).
        metadata: every ``CallbackMetadata`` item, by name.
    """

    model_config = _Frozen

    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: Decimal | None = None
    receipt: str | None = None
    transaction_date: datetime | None = None
    phone: str | None = None
    balance: str | None = None
    metadata: dict[str, Any] = {}

    @property
    def reported_success(self) -> bool:
        """``ResultCode`` is 0: the callback *says* the customer paid (see :attr:`succeeded`)."""
        return self.result_code == "0"

    @property
    def succeeded(self) -> bool:
        """The customer paid: ``ResultCode`` 0 with a receipt and an amount.

        A "success" without ``MpesaReceiptNumber`` or ``Amount`` is not what Daraja sends
        for a payment: it is ``unverified`` (:attr:`outcome`), never ``succeeded``.
        """
        return self.reported_success and bool(self.receipt) and self.amount is not None

    @property
    def outcome(self) -> StkOutcome:
        """``succeeded`` (paid, with a receipt and an amount), ``failed`` (a final non-zero
        code: cancelled, insufficient funds...) or ``unverified`` (a "success" missing its
        receipt or amount, or a code not known to be final: ask Daraja by STK query)."""
        if self.succeeded:
            return "succeeded"
        if not self.reported_success and self.code.final:
            return "failed"
        return "unverified"

    @property
    def code(self) -> ResultCode:
        """The catalogue entry of ``result_code``."""
        return lookup_code(self.result_code, "stk")

    def __repr__(self) -> str:
        phone = mask_phone(self.phone) if self.phone else None
        return (
            f"StkCallback(checkout_request_id={self.checkout_request_id!r}, "
            f"result_code={self.result_code!r}, outcome={self.outcome!r}, "
            f"amount={self.amount!r}, receipt={self.receipt!r}, phone={phone!r})"
        )


def parse_stk_callback(body: bytes | str | Mapping[str, Any]) -> StkCallback:
    """Parse the body Daraja POSTs to an STK ``CallBackURL``.

    Example:
        >>> cb = parse_stk_callback(request_body)
        >>> if cb.succeeded and cb.amount == order.amount:
        ...     mark_paid(cb.checkout_request_id, cb.receipt, cb.amount)
        ... elif cb.outcome == "unverified":
        ...     schedule_stk_query(cb.checkout_request_id)

    Raises:
        InvalidCallbackError: not JSON, or not the shape of an STK callback.
    """
    what = "STK callback"
    data = _load(body, what)
    callback = _mapping(_mapping(data, "Body", what), "stkCallback", what)
    metadata_obj = callback.get("CallbackMetadata")
    if metadata_obj is not None and not isinstance(metadata_obj, Mapping):
        raise InvalidCallbackError(f"{what}: 'CallbackMetadata' must be an object")
    metadata = _items((metadata_obj or {}).get("Item"), "Name", what)
    receipt = metadata.get("MpesaReceiptNumber")
    if receipt is not None and not isinstance(receipt, str):
        raise InvalidCallbackError(f"{what}: 'MpesaReceiptNumber' must be a string")
    if receipt:
        _receipt(receipt, "MpesaReceiptNumber", what)
    balance = metadata.get("Balance")
    if balance is not None and not isinstance(balance, str | int | float):
        raise InvalidCallbackError(f"{what}: 'Balance' must be text or a number")
    return StkCallback(
        merchant_request_id=_id(callback, "MerchantRequestID", what),
        checkout_request_id=_id(callback, "CheckoutRequestID", what),
        result_code=_code(callback, "ResultCode", what),
        result_desc=_text(callback, "ResultDesc", what, required=False),
        amount=_decimal(metadata.get("Amount"), f"{what}: 'Amount'"),
        receipt=receipt or None,
        transaction_date=_timestamp(metadata.get("TransactionDate"), f"{what}: 'TransactionDate'"),
        phone=_phone(metadata.get("PhoneNumber")),
        balance=None if balance in (None, "") else str(balance),
        metadata=metadata,
    )


def _receipt(value: str, key: str, what: str) -> str:
    if len(value) > MAX_RECEIPT_LENGTH or not (value.isascii() and value.isalnum()):
        raise InvalidCallbackError(
            f"{what}: {key!r} must be at most {MAX_RECEIPT_LENGTH} ASCII letters and digits"
        )
    return value


class AccountBalance(BaseModel):
    """One account of an Account Balance result (``Name|Currency|Available|...``)."""

    model_config = _Frozen

    name: str
    currency: str
    available: Decimal
    uncleared: Decimal | None = None
    reserved: Decimal | None = None
    unknown_columns: tuple[str, ...] = ()


def parse_account_balances(text: str) -> list[AccountBalance]:
    """Parse ``Working Account|KES|700000.00|700000.00|0.00|0.00&Utility Account|KES|...``.

    Only the first three columns have a documented meaning; the fourth and fifth are
    read as uncleared and reserved (REFERENCE §4 marks these unverified) and everything
    after is kept in ``unknown_columns``.

    Raises:
        InvalidCallbackError: an account without a name, a currency and an available amount.
    """
    what = "AccountBalance"
    if not isinstance(text, str):
        raise InvalidCallbackError(f"{what} must be a string")
    accounts = []
    for chunk in text.split("&"):
        if not chunk.strip():
            continue
        cols = [c.strip() for c in chunk.split("|")]
        if len(cols) < 3 or not cols[0] or not cols[1]:
            raise InvalidCallbackError(f"{what}: account {chunk!r} needs name|currency|available")
        available = _decimal(cols[2], f"{what}: available of {cols[0]!r}", signed=True)
        if available is None:
            raise InvalidCallbackError(f"{what}: account {cols[0]!r} has no available amount")
        accounts.append(
            AccountBalance(
                name=cols[0],
                currency=cols[1],
                available=available,
                uncleared=_decimal(cols[3], what, signed=True) if len(cols) > 3 else None,
                reserved=_decimal(cols[4], what, signed=True) if len(cols) > 4 else None,
                unknown_columns=tuple(cols[5:]),
            )
        )
    return accounts


class ResultEnvelope(BaseModel):
    """A parsed ``{"Result": {...}}`` POST of an initiator API (B2C, status, balance, reversal).

    ``parameters`` and ``reference_data`` are ``{Key: Value}`` dicts whatever the wire
    shape (list, single object, or absent); an item without ``Value`` maps to ``None``.
    """

    model_config = _Frozen

    result_type: str | None
    result_code: str
    result_desc: str
    originator_conversation_id: str | None
    conversation_id: str | None
    transaction_id: str | None
    parameters: dict[str, Any] = {}
    reference_data: dict[str, Any] = {}

    @property
    def succeeded(self) -> bool:
        """The request was carried out (``ResultCode`` 0)."""
        return is_success_code(self.result_code)

    @property
    def code(self) -> ResultCode:
        """The catalogue entry of ``result_code``."""
        return lookup_code(self.result_code, "initiator")

    def account_balances(self) -> list[AccountBalance]:
        """The ``AccountBalance`` parameter parsed into accounts (empty if absent)."""
        raw = self.parameters.get("AccountBalance")
        return parse_account_balances(raw) if isinstance(raw, str) else []


def _optional_id(parent: Mapping[str, Any], key: str, what: str) -> str | None:
    value = parent.get(key)
    if value is None or value == "" or isinstance(value, bool):
        return None
    if not isinstance(value, str | int):
        raise InvalidCallbackError(f"{what}: {key!r} must be a string")
    return _id(parent, key, what)


def parse_result(body: bytes | str | Mapping[str, Any]) -> ResultEnvelope:
    """Parse the ``{"Result": {...}}`` body POSTed to a ``ResultURL``.

    Raises:
        InvalidCallbackError: not JSON, no ``Result`` object, or no ``ResultCode``.
    """
    what = "Result"
    result = _mapping(_load(body, what), "Result", what)
    params = result.get("ResultParameters")
    refs = result.get("ReferenceData")
    if params is not None and not isinstance(params, Mapping):
        raise InvalidCallbackError(f"{what}: 'ResultParameters' must be an object")
    if refs is not None and not isinstance(refs, Mapping):
        raise InvalidCallbackError(f"{what}: 'ReferenceData' must be an object")
    result_type = result.get("ResultType")
    return ResultEnvelope(
        result_type=None if result_type is None else _code(result, "ResultType", what),
        result_code=_code(result, "ResultCode", what),
        result_desc=_text(result, "ResultDesc", what, required=False),
        originator_conversation_id=_optional_id(result, "OriginatorConversationID", what),
        conversation_id=_optional_id(result, "ConversationID", what),
        transaction_id=_optional_id(result, "TransactionID", what),
        parameters=_items((params or {}).get("ResultParameter"), "Key", what),
        reference_data=_items((refs or {}).get("ReferenceItem"), "Key", what),
    )


class C2BPayment(BaseModel):
    """A C2B validation or confirmation request (same shape for both).

    ``msisdn`` is what Daraja sends: masked (v2) or a SHA-256 hash (v1), never a full number.
    """

    model_config = _Frozen

    transaction_type: str
    trans_id: str
    trans_time: datetime
    trans_amount: Decimal
    business_short_code: str
    bill_ref_number: str
    invoice_number: str
    org_account_balance: Decimal | None
    third_party_trans_id: str
    msisdn: str
    first_name: str
    middle_name: str
    last_name: str


def parse_c2b_payment(body: bytes | str | Mapping[str, Any]) -> C2BPayment:
    """Parse a C2B validation or confirmation body.

    Raises:
        InvalidCallbackError: not JSON, or missing ``TransID``/``TransTime``/``TransAmount``/
            ``BusinessShortCode``.
    """
    what = "C2B payment"
    data = _load(body, what)
    amount = _decimal(data.get("TransAmount"), f"{what}: 'TransAmount'")
    trans_time = _timestamp(data.get("TransTime"), f"{what}: 'TransTime'")
    if amount is None:
        raise InvalidCallbackError(f"{what}: 'TransAmount' is missing")
    if trans_time is None:
        raise InvalidCallbackError(f"{what}: 'TransTime' is missing")
    return C2BPayment(
        transaction_type=_text(data, "TransactionType", what, required=False, max_length=64),
        trans_id=_receipt(_id(data, "TransID", what), "TransID", what),
        trans_time=trans_time,
        trans_amount=amount,
        business_short_code=_id(data, "BusinessShortCode", what),
        bill_ref_number=_text(data, "BillRefNumber", what, required=False),
        invoice_number=_text(data, "InvoiceNumber", what, required=False),
        org_account_balance=_decimal(
            data.get("OrgAccountBalance"), f"{what}: balance", signed=True
        ),
        third_party_trans_id=_id(data, "ThirdPartyTransID", what, required=False),
        # A masked number (2547 ***** 126) or a SHA-256 hex digest: 64 characters at most.
        msisdn=_text(data, "MSISDN", what, required=False, max_length=64, ascii_only=True),
        first_name=_text(data, "FirstName", what, required=False),
        middle_name=_text(data, "MiddleName", what, required=False),
        last_name=_text(data, "LastName", what, required=False),
    )


def c2b_validation_reply(
    reject: Literal["C2B00011", "C2B00012", "C2B00013", "C2B00014", "C2B00015", "C2B00016"]
    | None = None,
    *,
    third_party_trans_id: str | None = None,
) -> dict[str, str]:
    """The body answering a C2B validation request: accept (default) or reject with a code.

    Example:
        >>> c2b_validation_reply()
        {'ResultCode': '0', 'ResultDesc': 'Accepted'}
        >>> c2b_validation_reply("C2B00012")
        {'ResultCode': 'C2B00012', 'ResultDesc': 'Rejected'}
    """
    if reject is not None:
        if reject not in C2B_REJECT_CODES:
            raise ValidationError("reject", "must be one of C2B00011 to C2B00016", reject)
        return {"ResultCode": reject, "ResultDesc": "Rejected"}
    reply = {"ResultCode": "0", "ResultDesc": "Accepted"}
    if third_party_trans_id:
        reply["ThirdPartyTransID"] = third_party_trans_id
    return reply


def c2b_confirmation_reply() -> dict[str, Any]:
    """The body acknowledging a C2B confirmation: ``{"ResultCode": 0, "ResultDesc": "Success"}``."""
    return {"ResultCode": 0, "ResultDesc": "Success"}
