"""Parsers for the business products' callbacks: B2B Express Checkout, M-Pesa Ratiba and
Bill Manager payment notifications (REFERENCE §8.8, §9).

Their shapes differ from the STK and ``Result`` callbacks: lower-camel keys (Express
Checkout), keys whose case varies between Daraja's own examples (Ratiba), and Bill
Manager's ``rescode``/``resmsg`` reply. As everywhere, anything that is not the shape
Daraja sends raises :class:`pesa.InvalidCallbackError`, never a ``KeyError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from pesa._exceptions import InvalidCallbackError
from pesa._logging import mask_phone
from pesa.daraja._callbacks import (
    MAX_ITEMS,
    _bounded,
    _code,
    _decimal,
    _id,
    _load,
    _receipt,
    _text,
)
from pesa.daraja._codes import ResultCode, lookup_code
from pesa.daraja._models import is_success_code
from pesa.daraja._products import lower_keys

__all__ = [
    "BILL_MANAGER_ACCEPTED",
    "B2BExpressCallback",
    "BillPayment",
    "RatibaCallback",
    "parse_b2b_express_callback",
    "parse_bill_payment",
    "parse_ratiba_callback",
]

BILL_MANAGER_ACCEPTED: Final[dict[str, str]] = {"resmsg": "Success", "rescode": "200"}
"""The body to answer a Bill Manager payment notification with (else it is re-sent, 5 times)."""

_Frozen = ConfigDict(frozen=True)


class B2BExpressCallback(BaseModel):
    """A parsed B2B Express Checkout callback (lower-camel keys, REFERENCE §8.8).

    Attributes:
        result_code: ``resultCode`` as a string: ``"0"`` paid, ``"4001"`` cancelled.
        result_desc: ``resultDesc``.
        request_id: ``requestId``, the ``RequestRefID`` you sent: the key to match it.
        amount: ``amount`` as a Decimal (``"71.0"`` on the wire).
        conversation_id: ``conversationID``.
        transaction_id: ``transactionId``, the M-Pesa receipt, on success.
        status: ``status`` (``SUCCESS``, ...).
        result_type: ``resultType``.
    """

    model_config = _Frozen

    result_code: str
    result_desc: str
    request_id: str
    amount: Decimal | None = None
    conversation_id: str | None = None
    transaction_id: str | None = None
    status: str = ""
    result_type: str | None = None

    @property
    def succeeded(self) -> bool:
        """The till operator approved and the money moved (``resultCode`` 0 with a receipt)."""
        return is_success_code(self.result_code) and bool(self.transaction_id)

    @property
    def code(self) -> ResultCode:
        """The catalogue entry of ``result_code``."""
        return lookup_code(self.result_code, "b2b_express")


def parse_b2b_express_callback(body: bytes | str | Mapping[str, Any]) -> B2BExpressCallback:
    """Parse the body B2B Express Checkout POSTs to ``callbackUrl``.

    Example:
        >>> cb = parse_b2b_express_callback(request_body)
        >>> if cb.succeeded:
        ...     mark_paid(cb.request_id, cb.transaction_id, cb.amount)

    Raises:
        InvalidCallbackError: not JSON, or no ``resultCode`` / ``requestId``.
    """
    what = "B2B Express Checkout callback"
    data = _load(body, what)
    transaction_id = _id(data, "transactionId", what, required=False)
    if transaction_id:
        _receipt(transaction_id, "transactionId", what)
    result_type = data.get("resultType")
    return B2BExpressCallback(
        result_code=_code(data, "resultCode", what),
        result_desc=_text(data, "resultDesc", what, required=False),
        request_id=_id(data, "requestId", what),
        amount=_decimal(data.get("amount"), f"{what}: 'amount'"),
        conversation_id=_id(data, "conversationID", what, required=False) or None,
        transaction_id=transaction_id or None,
        status=_text(data, "status", what, required=False, max_length=64),
        result_type=None if result_type in (None, "") else _code(data, "resultType", what),
    )


class RatibaCallback(BaseModel):
    """A parsed M-Pesa Ratiba callback: its header and ``ResponseData`` items.

    Keys are read case-insensitively (Daraja's examples spell ``ResponseHeader`` and
    ``responseHeader``, ``Name`` and ``name``); ``data`` keeps the items by their names as
    sent.

    Attributes:
        response_ref_id: the header's ``responseRefID``.
        header_code: the header's ``responseCode``.
        header_description: the header's ``responseDescription``.
        result_desc: the header's ``ResultDesc``.
        data: every ``ResponseData`` item, ``{Name: Value}``.
    """

    model_config = _Frozen

    response_ref_id: str | None
    header_code: str | None
    header_description: str
    result_desc: str
    data: dict[str, Any] = {}

    def _item(self, name: str) -> Any:
        wanted = name.lower()
        for key, value in self.data.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def result_code(self) -> str:
        """The ``responseCode`` item (``"0"`` accepted, ``"1037"`` unreachable...), else the
        header's code."""
        value = self._item("responseCode")
        if value in (None, ""):
            value = self.header_code
        return "" if value is None else str(value).strip()

    @property
    def transaction_id(self) -> str | None:
        """The ``TransactionID`` item."""
        value = self._item("TransactionID")
        return None if value in (None, "") else str(value)

    @property
    def status(self) -> str:
        """The ``Status`` item: ``OKAY`` or ``ERROR``."""
        value = self._item("Status")
        return "" if value is None else str(value)

    @property
    def msisdn(self) -> str | None:
        """The ``Msisdn`` item (masked by Daraja)."""
        value = self._item("Msisdn")
        return None if value in (None, "") else str(value)

    @property
    def succeeded(self) -> bool:
        """The customer accepted the standing order (``responseCode`` 0, not ``ERROR``)."""
        return is_success_code(self.result_code) and self.status.upper() != "ERROR"

    @property
    def code(self) -> ResultCode:
        """The catalogue entry of :attr:`result_code`."""
        return lookup_code(self.result_code or "unknown", "ratiba")

    def __repr__(self) -> str:
        msisdn = mask_phone(self.msisdn) if self.msisdn else None
        return (
            f"RatibaCallback(response_ref_id={self.response_ref_id!r}, "
            f"result_code={self.result_code!r}, status={self.status!r}, msisdn={msisdn!r})"
        )


def parse_ratiba_callback(body: bytes | str | Mapping[str, Any]) -> RatibaCallback:
    """Parse the body M-Pesa Ratiba POSTs to a standing order's ``CallBackURL``.

    Raises:
        InvalidCallbackError: not JSON, or no ``ResponseHeader`` / ``ResponseBody`` objects.
    """
    what = "Ratiba callback"
    raw = _load(body, what)
    data = lower_keys(raw)
    header = data.get("responseheader")
    response_body = data.get("responsebody")
    if not isinstance(header, Mapping):
        raise InvalidCallbackError(f"{what}: missing object 'ResponseHeader'")
    if not isinstance(response_body, Mapping):
        raise InvalidCallbackError(f"{what}: missing object 'ResponseBody'")
    items = response_body.get("responsedata")
    if isinstance(items, Mapping):
        items = [items]
    if items is None:
        items = []
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise InvalidCallbackError(f"{what}: 'ResponseData' must be a list of {MAX_ITEMS} items")
    values: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise InvalidCallbackError(f"{what}: every ResponseData item needs a string 'Name'")
        name = _bounded(item["name"], "Name", what, 100, ascii_only=True)
        value = item.get("value")
        if isinstance(value, str):
            value = _bounded(value, name, what, 1024, ascii_only=False)
        elif value is not None and not isinstance(value, int | float):
            raise InvalidCallbackError(f"{what}: item {name!r} must have a text or number Value")
        values[name] = value  # lower_keys changed the keys only: the Name is as sent
    code = header.get("responsecode")
    return RatibaCallback(
        response_ref_id=_id(header, "responserefid", what, required=False) or None,
        header_code=None if code in (None, "") else _code(header, "responsecode", what),
        header_description=_text(header, "responsedescription", what, required=False),
        result_desc=_text(header, "resultdesc", what, required=False),
        data=values,
    )


class BillPayment(BaseModel):
    """A Bill Manager payment notification (REFERENCE §9).

    Attributes:
        transaction_id: ``transactionId``, the M-Pesa receipt.
        paid_amount: ``paidAmount`` as a Decimal.
        msisdn: ``msisdn`` as text (as Daraja sent it).
        date_created: ``dateCreated`` as text (its format is not documented).
        account_reference: ``accountReference``: which invoice was paid.
        short_code: ``shortCode``.
    """

    model_config = _Frozen

    transaction_id: str
    paid_amount: Decimal
    msisdn: str
    date_created: str
    account_reference: str
    short_code: str

    @property
    def paid_at(self) -> datetime | None:
        """``date_created`` as a datetime when it is ISO-8601 or ``YYYY-MM-DD HH:MM:SS``."""
        try:
            return datetime.fromisoformat(self.date_created)
        except ValueError:
            return None


def parse_bill_payment(body: bytes | str | Mapping[str, Any]) -> BillPayment:
    """Parse a Bill Manager payment notification; answer it with :data:`BILL_MANAGER_ACCEPTED`.

    Raises:
        InvalidCallbackError: not JSON, or no ``transactionId`` / ``paidAmount``.
    """
    what = "Bill Manager payment"
    data = _load(body, what)
    amount = _decimal(data.get("paidAmount"), f"{what}: 'paidAmount'")
    if amount is None:
        raise InvalidCallbackError(f"{what}: 'paidAmount' is missing")
    msisdn = data.get("msisdn")
    if isinstance(msisdn, int) and not isinstance(msisdn, bool):
        msisdn = str(msisdn)
    return BillPayment(
        transaction_id=_receipt(_id(data, "transactionId", what), "transactionId", what),
        paid_amount=amount,
        msisdn=_bounded(msisdn, "msisdn", what, 64, ascii_only=True)
        if isinstance(msisdn, str)
        else "",
        date_created=_text(data, "dateCreated", what, required=False, max_length=64),
        account_reference=_text(data, "accountReference", what, required=False, max_length=64),
        short_code=_id(data, "shortCode", what, required=False),
    )
