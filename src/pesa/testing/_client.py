"""Test helpers for code built on the Daraja client: a frozen clock and Daraja payload builders.

The builders produce the literal shapes of REFERENCE §6.3, §4 and §7.3, so a test can feed
a handler exactly what Daraja would POST.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pesa._exceptions import ValidationError
from pesa.daraja._time import NAIROBI

__all__ = [
    "FrozenClock",
    "c2b_payment_payload",
    "result_payload",
    "stk_callback_payload",
    "stk_failure_payload",
]


class FrozenClock:
    """A clock that stands still until told to move; thread-safe.

    Its two readings move together: :meth:`advance` moves both the wall time and the
    monotonic seconds, so leases, rate budgets and token lifetimes in every layer that
    shares the clock see the same time pass. :meth:`set` jumps the wall time anywhere; the
    monotonic seconds move only by a forward jump (a wall clock set back does not make a
    lease last longer).

    Example:
        >>> clock = FrozenClock(datetime(2016, 2, 16, 16, 56, 27, tzinfo=NAIROBI))
        >>> daraja_timestamp(clock)
        '20160216165627'
        >>> clock.advance(seconds=60)
    """

    def __init__(self, at: datetime | None = None) -> None:
        if at is not None and at.tzinfo is None:
            raise ValidationError("at", "FrozenClock needs a timezone-aware datetime", at)
        self._now = at or datetime(2026, 1, 1, 9, 0, 0, tzinfo=NAIROBI)
        self._monotonic = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The frozen time."""
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        """The frozen monotonic seconds (start at 1000; only differences mean anything)."""
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float = 0.0, **kwargs: float) -> None:
        """Move the clock forward (``timedelta`` keyword arguments)."""
        step = timedelta(seconds=seconds, **kwargs)
        if step < timedelta(0):
            raise ValidationError("seconds", "FrozenClock only moves forward", step)
        with self._lock:
            self._now += step
            self._monotonic += step.total_seconds()

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (aware); the monotonic seconds move only if ``at`` is later."""
        if at.tzinfo is None:
            raise ValidationError("at", "FrozenClock needs a timezone-aware datetime", at)
        with self._lock:
            self._monotonic += max(0.0, (at - self._now).total_seconds())
            self._now = at

    def __repr__(self) -> str:
        return f"FrozenClock({self._now.astimezone(UTC).isoformat()})"


def stk_callback_payload(
    *,
    checkout_request_id: str = "ws_CO_191220191020363925",
    merchant_request_id: str = "29115-34620561-1",
    amount: int | float | Decimal = 1.00,
    receipt: str = "NLJ7RT61SV",
    transaction_date: int | str = 20191219102115,
    phone: int | str | None = 254708374149,
    balance: Any = None,
) -> dict[str, Any]:
    """A successful STK callback, shaped as REFERENCE §6.3 (``Balance`` without a value)."""
    items: list[dict[str, Any]] = [
        {"Name": "Amount", "Value": float(amount) if isinstance(amount, Decimal) else amount},
        {"Name": "MpesaReceiptNumber", "Value": receipt},
        {"Name": "Balance"} if balance is None else {"Name": "Balance", "Value": balance},
        {"Name": "TransactionDate", "Value": transaction_date},
    ]
    if phone is not None:
        items.append({"Name": "PhoneNumber", "Value": phone})
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": merchant_request_id,
                "CheckoutRequestID": checkout_request_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {"Item": items},
            }
        }
    }


def stk_failure_payload(
    result_code: int | str = 1032,
    result_desc: str = "Request cancelled by user",
    *,
    checkout_request_id: str = "ws_CO_21072024125243250722943992",
    merchant_request_id: str = "f1e2-4b95-a71d-b30d3cdbb7a7942864",
) -> dict[str, Any]:
    """A failed STK callback (no ``CallbackMetadata``), shaped as REFERENCE §6.3."""
    return {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": merchant_request_id,
                "CheckoutRequestID": checkout_request_id,
                "ResultCode": result_code,
                "ResultDesc": result_desc,
            }
        }
    }


def result_payload(
    *,
    result_code: int | str = 0,
    result_desc: str = "The service request is processed successfully.",
    originator_conversation_id: str = "53e3-4aa8-9fe0-8fb5e4092cdd3533373",
    conversation_id: str = "AG_20240706_2010364430d9bbdaf872",
    transaction_id: str = "SG632NMUAB",
    parameters: dict[str, Any] | None = None,
    reference_data: dict[str, Any] | None = None,
    single_objects: bool = False,
) -> dict[str, Any]:
    """A ``{"Result": ...}`` envelope (REFERENCE §4, §8.1).

    ``parameters=None`` omits ``ResultParameters`` (as on failures); ``single_objects``
    sends one-item lists as a bare object, as Daraja sometimes does.
    """

    def items(values: dict[str, Any]) -> Any:
        out = [{"Key": k} if v is None else {"Key": k, "Value": v} for k, v in values.items()]
        return out[0] if single_objects and len(out) == 1 else out

    result: dict[str, Any] = {
        "ResultType": 0,
        "ResultCode": result_code,
        "ResultDesc": result_desc,
        "OriginatorConversationID": originator_conversation_id,
        "ConversationID": conversation_id,
        "TransactionID": transaction_id,
    }
    if parameters is not None:
        result["ResultParameters"] = {"ResultParameter": items(parameters)}
    refs = (
        reference_data
        if reference_data is not None
        else {
            "QueueTimeoutURL": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit"
        }
    )
    result["ReferenceData"] = {"ReferenceItem": items(refs)}
    return {"Result": result}


def c2b_payment_payload(
    *,
    trans_id: str = "RKL51ZDR4F",
    amount: str = "5.00",
    shortcode: str = "600966",
    bill_ref_number: str = "Sample Transaction",
    trans_time: str = "20231121121325",
    msisdn: str = "2547 ***** 126",
    org_account_balance: str = "25.00",
) -> dict[str, Any]:
    """A C2B validation/confirmation body, shaped as REFERENCE §7.3."""
    return {
        "TransactionType": "Pay Bill",
        "TransID": trans_id,
        "TransTime": trans_time,
        "TransAmount": amount,
        "BusinessShortCode": shortcode,
        "BillRefNumber": bill_ref_number,
        "InvoiceNumber": "",
        "OrgAccountBalance": org_account_balance,
        "ThirdPartyTransID": "",
        "MSISDN": msisdn,
        "FirstName": "JOHN",
        "MiddleName": "",
        "LastName": "",
    }


def transaction_status_payload(
    *,
    trans_id: str = "RKL51ZDR4F",
    amount: float | int | str = 5.0,
    result_code: int | str = 0,
    transaction_status: str = "Completed",
    credit_party: str = "600966 - Safaricom Test Org",
    debit_party: str = "254708374149 - John Doe",
    conversation_id: str = "AG_20240706_2010364430d9bbdaf872",
    finalised_time: int = 20231121121325,
) -> dict[str, Any]:
    """A Transaction Status ``{"Result": ...}`` about one receipt (REFERENCE §8.5).

    ``result_code`` 2032 gives Daraja's "The transaction receipt number does not exist."
    with no parameters.
    """
    code = str(result_code)
    if code != "0":
        desc = (
            "The transaction receipt number does not exist."
            if code == "2032"
            else "The service request failed."
        )
        return result_payload(
            result_code=result_code,
            result_desc=desc,
            conversation_id=conversation_id,
            transaction_id="",
        )
    return result_payload(
        conversation_id=conversation_id,
        transaction_id=trans_id,
        parameters={
            "DebitPartyName": debit_party,
            "CreditPartyName": credit_party,
            "OriginatorConversationID": "",
            "InitiatedTime": finalised_time,
            "DebitAccountType": "MMF Account",
            "DebitPartyCharges": "",
            "TransactionReason": "",
            "ReasonType": "Pay Bill Online",
            "TransactionStatus": transaction_status,
            "FinalisedTime": finalised_time,
            "Amount": amount,
            "ConversationID": conversation_id,
            "ReceiptNo": trans_id,
        },
    )


def b2b_express_callback_payload(
    *,
    request_id: str = "404e1aec-19e0-4ce3-973d-bd92e94c8021",
    result_code: str = "0",
    amount: str = "71.0",
    transaction_id: str | None = "RDQ01NFT1Q",
    conversation_id: str = "AG_20230426_2010434680d9f5a73766",
) -> dict[str, Any]:
    """A B2B Express Checkout callback, lower-camel as REFERENCE §8.8 (``4001``: cancelled)."""
    cancelled = result_code != "0"
    payload: dict[str, Any] = {
        "resultCode": result_code,
        "resultDesc": (
            "User cancelled transaction"
            if result_code == "4001"
            else "The service request is processed successfully."
        ),
        "amount": amount,
        "requestId": request_id,
        "resultType": "0",
        "conversationID": conversation_id,
        "status": "FAILED" if cancelled else "SUCCESS",
    }
    if transaction_id is not None and not cancelled:
        payload["transactionId"] = transaction_id
    return payload


def ratiba_callback_payload(
    *,
    response_ref_id: str = "0acc3200-3ccf-4a0a-a4b4-b9a4d4df7d2d",
    result_code: str = "0",
    transaction_id: str = "SC8F2IQMH5",
    msisdn: str = "254******867",
    camel_case: bool = False,
) -> dict[str, Any]:
    """An M-Pesa Ratiba callback (REFERENCE §9): header and ``ResponseData`` items.

    ``camel_case`` spells the keys ``responseHeader``/``name`` as some of Daraja's examples do.
    """
    ok = result_code == "0"
    desc = "The service request is processed successfully" if ok else "The request failed"
    header = {
        "responseRefID": response_ref_id,
        "responseCode": result_code,
        "responseDescription": desc,
        "ResultDesc": desc,
    }
    items = [
        ("TransactionID", transaction_id if ok else ""),
        ("responseCode", result_code),
        ("Status", "OKAY" if ok else "ERROR"),
        ("Msisdn", msisdn),
    ]
    if camel_case:
        return {
            "responseHeader": {k[:1].lower() + k[1:]: v for k, v in header.items()},
            "responseBody": {"responseData": [{"name": n, "value": v} for n, v in items]},
        }
    return {
        "ResponseHeader": header,
        "ResponseBody": {"ResponseData": [{"Name": n, "Value": v} for n, v in items]},
    }


def bill_payment_payload(
    *,
    transaction_id: str = "RJB53MYR1N",
    paid_amount: str = "5000",
    msisdn: str = "254722000000",
    date_created: str = "2021-09-15",
    account_reference: str = "LGHJIO789",
    short_code: str = "718003",
) -> dict[str, Any]:
    """A Bill Manager payment notification, shaped as REFERENCE §9."""
    return {
        "transactionId": transaction_id,
        "paidAmount": paid_amount,
        "msisdn": msisdn,
        "dateCreated": date_created,
        "accountReference": account_reference,
        "shortCode": short_code,
    }
