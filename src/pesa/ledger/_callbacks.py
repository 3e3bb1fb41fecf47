"""The ledger's default STK callback parser: :func:`pesa.daraja.parse_stk_callback`, adapted.

The ledger takes its parser as a parameter (``Ledger.open(..., parse=...)``) so that it
never depends on how the wire layer models callbacks; this default reduces the wire
layer's :class:`pesa.daraja.StkCallback` to a :class:`ParsedStkCallback`. A "success"
missing its receipt, amount or phone is still parsed: the state machine keeps it as
evidence and the reconciler's query settles the payment (it is never trusted alone).
"""

from __future__ import annotations

from pesa.daraja import CodeKind, ResultCode, lookup_code, parse_stk_callback
from pesa.ledger._states import StkResult
from pesa.ledger._types import ParsedStkCallback

__all__ = ["parse_stk_callback_body", "stk_code"]

_STK: CodeKind = "stk"


def parse_stk_callback_body(body: bytes) -> ParsedStkCallback:
    """Parse a raw STK callback body (REFERENCE §6.3).

    Raises:
        InvalidCallbackError: not JSON, or not the shape of an STK callback.
    """
    callback = parse_stk_callback(body)
    result = StkResult(
        result_code=callback.result_code,
        result_desc=callback.result_desc,
        receipt=callback.receipt,
        amount=callback.amount,
        phone=callback.phone,
        transaction_date=callback.transaction_date,
        source="callback",
    )
    return ParsedStkCallback(
        checkout_request_id=callback.checkout_request_id,
        merchant_request_id=callback.merchant_request_id,
        result=result,
        extra=dict(callback.metadata),
    )


def stk_code(code: str) -> ResultCode:
    """The STK result-code catalogue entry of ``code`` (the ledger's default ``lookup``)."""
    return lookup_code(code, _STK)
