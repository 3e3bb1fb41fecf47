"""What the ledger reads from ``{"Result": ...}`` POSTs: B2C, reversal and Transaction Status.

Built on :func:`pesa.daraja.parse_result` (which tolerates Daraja's shape drift), these
reduce a Result to a :class:`~pesa.ledger.TransferResult` for the payout and refund state
machines. A failure Result carries a placeholder ``TransactionID`` (``OAK0000000``): it is
never taken for a receipt. Queue-timeout payloads are undocumented (REFERENCE §14.5): only
their ids are read, when they have any.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pesa._exceptions import InvalidCallbackError, ValidationError
from pesa.daraja import (
    NAIROBI,
    ResultCode,
    ResultEnvelope,
    lookup_code,
    parse_daraja_timestamp,
    parse_result,
)
from pesa.ledger._payout_states import TransferResult, is_placeholder_receipt

__all__ = [
    "ParsedResult",
    "initiator_code",
    "parse_payout_result",
    "parse_reversal_result",
    "parse_status_result",
    "parse_timeout",
]

_MAX_ID = 128
_MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class ParsedResult:
    """A Result reduced to its ids (to find what it answers) and its content.

    Attributes:
        conversation_id: the ``ConversationID`` of the request the Result answers.
        originator_conversation_id: its ``OriginatorConversationID``.
        result: the content, for the state machine.
        envelope: the whole parsed envelope (parameters kept for the record).
    """

    conversation_id: str | None
    originator_conversation_id: str | None
    result: TransferResult
    envelope: ResultEnvelope


def initiator_code(code: str) -> ResultCode:
    """The initiator result-code catalogue entry of ``code`` (B2C, reversal, status)."""
    return lookup_code(code, "initiator")


def _bounded_id(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_ID or _clean(value) != value:
        raise InvalidCallbackError(f"Result: {what} is not a Daraja id")
    return value


def _clean(text: str) -> str:
    # What the database can store on both engines: no NUL or other control characters,
    # no lone surrogates (PostgreSQL refuses both; SQLite would keep them).
    return "".join(ch for ch in text if ch.isprintable() and not "\ud800" <= ch <= "\udfff")


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = _clean(str(value)).strip()
    return text[:_MAX_TEXT] if text else None


def _amount(value: Any, what: str) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InvalidCallbackError(f"Result: {what} must be a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as err:
        raise InvalidCallbackError(f"Result: {what} must be a number") from err
    if not amount.is_finite() or amount < 0 or amount >= Decimal(10) ** 12:
        raise InvalidCallbackError(f"Result: {what} is out of range")
    return amount


def _daraja_time(value: Any, what: str) -> datetime | None:
    """``YYYYMMDDHHMMSS`` (number or string); ``None`` if absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return parse_daraja_timestamp(value, field=what)
    except ValidationError:
        return None


def _b2c_time(value: Any) -> datetime | None:
    """``TransactionCompletedDateTime``: ``dd.MM.yyyy HH:mm:ss``, Nairobi time."""
    text = _text(value)
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%d.%m.%Y %H:%M:%S").replace(tzinfo=NAIROBI)
    except ValueError:
        return None


def _receipt(value: Any) -> str | None:
    text = _text(value)
    if text is None or is_placeholder_receipt(text):
        return None
    if len(text) > 64 or not text.isalnum():
        raise InvalidCallbackError("Result: a receipt must be at most 64 letters and digits")
    return text


def _envelope(body: bytes | str | Mapping[str, Any]) -> ResultEnvelope:
    envelope = parse_result(body)
    _bounded_id(envelope.conversation_id, "ConversationID")
    _bounded_id(envelope.originator_conversation_id, "OriginatorConversationID")
    code = envelope.result_code
    if len(code) > 32 or not code.isprintable() or _clean(code) != code:
        raise InvalidCallbackError("Result: ResultCode is not a code")
    return envelope.model_copy(update={"result_desc": _clean(envelope.result_desc or "")})


def parse_payout_result(body: bytes | str | Mapping[str, Any]) -> ParsedResult:
    """Parse the Result of a B2C payment (REFERENCE §8.1).

    Raises:
        InvalidCallbackError: not a ``{"Result": ...}`` envelope, or out-of-range values.
    """
    envelope = _envelope(body)
    params = envelope.parameters
    receipt = _receipt(params.get("TransactionReceipt")) or _receipt(envelope.transaction_id)
    result = TransferResult(
        result_code=envelope.result_code,
        result_desc=(envelope.result_desc or "")[:_MAX_TEXT],
        conversation_id=_bounded_id(envelope.conversation_id, "ConversationID"),
        originator_conversation_id=_bounded_id(
            envelope.originator_conversation_id, "OriginatorConversationID"
        ),
        receipt=receipt if envelope.succeeded else None,
        amount=_amount(params.get("TransactionAmount"), "TransactionAmount"),
        counterparty=_text(params.get("ReceiverPartyPublicName")),
        completed_at=_b2c_time(params.get("TransactionCompletedDateTime")),
        source="callback",
    )
    return ParsedResult(result.conversation_id, result.originator_conversation_id, result, envelope)


def parse_reversal_result(body: bytes | str | Mapping[str, Any]) -> ParsedResult:
    """Parse the Result of a reversal (REFERENCE §8.7).

    Raises:
        InvalidCallbackError: not a ``{"Result": ...}`` envelope, or out-of-range values.
    """
    envelope = _envelope(body)
    params = envelope.parameters
    original = _text(params.get("OriginalTransactionID"))
    result = TransferResult(
        result_code=envelope.result_code,
        result_desc=(envelope.result_desc or "")[:_MAX_TEXT],
        conversation_id=_bounded_id(envelope.conversation_id, "ConversationID"),
        originator_conversation_id=_bounded_id(
            envelope.originator_conversation_id, "OriginatorConversationID"
        ),
        receipt=_receipt(envelope.transaction_id) if envelope.succeeded else None,
        amount=_amount(params.get("Amount"), "Amount"),
        counterparty=_text(params.get("CreditPartyPublicName")),
        completed_at=_daraja_time(params.get("TransCompletedTime"), "TransCompletedTime"),
        original_receipt=None if original is None else original[:64],
        source="callback",
    )
    return ParsedResult(result.conversation_id, result.originator_conversation_id, result, envelope)


def parse_status_result(body: bytes | str | Mapping[str, Any]) -> ParsedResult:
    """Parse a Transaction Status Result (REFERENCE §8.5).

    ``conversation_id``/``originator_conversation_id`` are the *query's* ids (what the
    Result is matched by); ``result`` describes the transaction found, with its own ids.
    Older captures spell some keys with spaces (``"Originator Conversation ID"``).

    Raises:
        InvalidCallbackError: not a ``{"Result": ...}`` envelope, or out-of-range values.
    """
    envelope = _envelope(body)
    params = envelope.parameters

    def param(*names: str) -> Any:
        for name in names:
            if params.get(name) not in (None, ""):
                return params[name]
        return None

    ocid = _text(param("OriginatorConversationID", "Originator Conversation ID"))
    conversation = _text(param("ConversationID", "Conversation ID"))
    result = TransferResult(
        result_code=envelope.result_code,
        result_desc=(envelope.result_desc or "")[:_MAX_TEXT],
        conversation_id=None if conversation is None else conversation[:_MAX_ID],
        originator_conversation_id=None if ocid is None else ocid[:_MAX_ID],
        receipt=_receipt(param("ReceiptNo", "Receipt No")) if envelope.succeeded else None,
        amount=_amount(param("Amount"), "Amount"),
        counterparty=_text(param("CreditPartyName", "Credit Party Name")),
        completed_at=_daraja_time(param("FinalisedTime", "Finalised Time"), "FinalisedTime"),
        transaction_status=_text(param("TransactionStatus", "Transaction Status")),
        source="status",
    )
    return ParsedResult(
        _bounded_id(envelope.conversation_id, "ConversationID"),
        _bounded_id(envelope.originator_conversation_id, "OriginatorConversationID"),
        result,
        envelope,
    )


def parse_timeout(body: bytes | str | Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The ``(ConversationID, OriginatorConversationID)`` a QueueTimeOutURL call names.

    The payload is undocumented (REFERENCE §14.5); SDKs expect the ``Result`` shape. Read
    the ids wherever they are: under ``Result`` or at the top level.

    Raises:
        InvalidCallbackError: not a JSON object, or no id at all.
    """
    try:
        envelope = parse_result(body)
    except InvalidCallbackError:
        envelope = None
    if envelope is not None:
        ids = (envelope.conversation_id, envelope.originator_conversation_id)
    else:
        try:
            data = json.loads(body) if not isinstance(body, Mapping) else body
        except (ValueError, TypeError) as err:
            raise InvalidCallbackError("queue timeout: body is not JSON") from err
        if not isinstance(data, Mapping):
            raise InvalidCallbackError("queue timeout: body must be a JSON object")
        nested = data.get("Result")
        inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else data
        ids = (_text(inner.get("ConversationID")), _text(inner.get("OriginatorConversationID")))
    conversation = _bounded_id(ids[0], "ConversationID")
    originator = _bounded_id(ids[1], "OriginatorConversationID")
    if conversation is None and originator is None:
        raise InvalidCallbackError("queue timeout: names no ConversationID")
    return conversation, originator
