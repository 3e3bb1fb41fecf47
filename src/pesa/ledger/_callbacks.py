"""The ledger's default STK callback parser (raw bytes → :class:`ParsedStkCallback`).

The ledger takes the parser as a parameter so that it never depends on how the wire layer
models callbacks; this default reads Daraja's literal shape (REFERENCE §6.3)::

    {"Body": {"stkCallback": {"MerchantRequestID", "CheckoutRequestID", "ResultCode",
              "ResultDesc", "CallbackMetadata": {"Item": [{"Name", "Value"}, ...]}}}}

Items are read by ``Name``, never position; ``ResultCode`` is compared as a string; an
``Amount`` sent as ``1.00`` becomes ``Decimal("1.00")``, never a float.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pesa._constants import NAIROBI_TZ
from pesa._exceptions import InvalidCallbackError
from pesa.ledger._states import StkResult
from pesa.ledger._types import ParsedStkCallback

__all__ = ["parse_stk_callback_body"]

_NAIROBI = ZoneInfo(NAIROBI_TZ)


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidCallbackError(f"stkCallback.{name} must be a string or an integer")
    text = str(value).strip()
    if not text:
        raise InvalidCallbackError(f"stkCallback.{name} must not be empty")
    return text


def _amount(value: Any) -> int | Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidCallbackError("CallbackMetadata Amount must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal):
        return value
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except ArithmeticError as err:
            raise InvalidCallbackError("CallbackMetadata Amount must be a number") from err
    raise InvalidCallbackError("CallbackMetadata Amount must be a number")


def _transaction_date(value: Any) -> datetime | None:
    # A number like 20191219102115, in East Africa Time.
    if value is None:
        return None
    try:
        naive = datetime.strptime(str(value).split(".")[0], "%Y%m%d%H%M%S")
    except ValueError as err:
        raise InvalidCallbackError(
            "CallbackMetadata TransactionDate is not YYYYMMDDHHMMSS"
        ) from err
    return naive.replace(tzinfo=_NAIROBI)


def parse_stk_callback_body(body: bytes) -> ParsedStkCallback:
    """Parse a raw STK callback body.

    Raises:
        InvalidCallbackError: not JSON, or not the shape of an STK callback.
    """
    try:
        # parse_float=Decimal: "Amount": 1.00 must not pass through a float.
        document = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidCallbackError("callback body is not JSON") from err
    if not isinstance(document, dict):
        raise InvalidCallbackError("callback body is not a JSON object")
    envelope = document.get("Body")
    callback = envelope.get("stkCallback") if isinstance(envelope, dict) else None
    if not isinstance(callback, dict):
        raise InvalidCallbackError("callback body has no Body.stkCallback object")
    checkout_request_id = _text(callback.get("CheckoutRequestID"), "CheckoutRequestID")
    merchant = callback.get("MerchantRequestID")
    merchant_request_id = None if merchant is None else _text(merchant, "MerchantRequestID")
    result_code = _text(callback.get("ResultCode"), "ResultCode")
    desc = callback.get("ResultDesc")
    result_desc = desc if isinstance(desc, str) else ""

    items: dict[str, Any] = {}
    meta = callback.get("CallbackMetadata")
    if meta is not None:
        raw_items = meta.get("Item") if isinstance(meta, dict) else None
        if not isinstance(raw_items, list):
            raise InvalidCallbackError("CallbackMetadata.Item must be a list")
        for item in raw_items:
            if isinstance(item, dict) and isinstance(item.get("Name"), str):
                items[item["Name"]] = item.get("Value")

    receipt = items.get("MpesaReceiptNumber")
    phone = items.get("PhoneNumber")
    result = StkResult(
        result_code=result_code,
        result_desc=result_desc,
        receipt=None if receipt is None else _text(receipt, "MpesaReceiptNumber"),
        amount=_amount(items.get("Amount")),
        phone=None if phone is None else _text(phone, "PhoneNumber"),
        transaction_date=_transaction_date(items.get("TransactionDate")),
        source="callback",
    )
    if result.is_success and result.receipt is None:
        raise InvalidCallbackError("a successful stkCallback must carry MpesaReceiptNumber")
    return ParsedStkCallback(checkout_request_id, merchant_request_id, result)
