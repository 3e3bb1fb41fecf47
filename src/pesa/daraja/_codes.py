"""The result-code catalogue: meaning, finality and a customer message for each Daraja code.

Kinds (REFERENCE §7.3, §8.8, §8.9, §9, §10): ``stk`` (STK callback / query ``ResultCode``),
``c2b`` (validation replies), ``initiator`` (``{"Result": ...}`` of B2C, Pochi, B2B, tax,
status, balance, reversal), ``gateway`` (synchronous ``errorCode`` of an error response),
``b2b_express`` (B2B Express Checkout callbacks' ``resultCode``), ``ratiba`` (M-Pesa Ratiba
callbacks' ``responseCode``), ``bill_manager`` (Bill Manager's ``rescode``) and ``pull``
(Pull Transactions' ``ResponseStatus`` / ``ResponseCode``). Switch on codes, never on
``ResultDesc`` text, whose wording varies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["CodeKind", "ResultCode", "lookup_code"]

CodeKind = Literal[
    "stk", "c2b", "initiator", "gateway", "b2b_express", "ratiba", "bill_manager", "pull"
]


@dataclass(frozen=True, slots=True)
class ResultCode:
    """One entry of the catalogue.

    Attributes:
        code: the code as a string (``"0"``, ``"1032"``, ``"C2B00012"``, ``"500.003.02"``).
        kind: which catalogue it belongs to.
        meaning: what it means, for developers and logs.
        final: for results, the transaction's outcome will not change; for gateway codes,
            re-sending the same request unchanged will not help.
        success: the money moved (only ``0`` / all zeros).
        customer_message: a short message fit to show the paying customer.
        action: what the integrator should do next.
        known: ``False`` for a code not in the catalogue.
    """

    code: str
    kind: CodeKind
    meaning: str
    final: bool
    success: bool
    customer_message: str
    action: str
    known: bool = True


_GENERIC_FAIL: Final = "The payment did not go through. Please try again."
_RETRY_LATER: Final = "M-Pesa is busy right now. Please try again in a few minutes."
_CONTACT: Final = "We could not complete this payment. Please contact the merchant."

# code: (meaning, final, success, customer_message, action)
_Row = tuple[str, bool, bool, str, str]

_STK: Final[dict[str, _Row]] = {
    "0": ("paid", True, True, "Payment received. Thank you.", "fulfil"),
    "1": (
        "insufficient balance (or Fuliza declined)",
        True,
        False,
        "Your M-Pesa balance is not enough for this payment.",
        "customer may top up and retry",
    ),
    "2": ("declined: below the minimum amount", True, False, _GENERIC_FAIL, "fix the amount"),
    "3": ("declined: above the maximum amount", True, False, _GENERIC_FAIL, "fix the amount"),
    "4": (
        "would exceed the customer's daily transfer limit",
        True,
        False,
        "This payment would exceed your daily M-Pesa limit.",
        "customer pays later or less",
    ),
    "8": (
        "would exceed the receiving account's maximum balance",
        True,
        False,
        _CONTACT,
        "contact Safaricom",
    ),
    "17": (
        "rule limited: same amount to the same customer within 2 minutes",
        True,
        False,
        "Please wait two minutes before trying again.",
        "wait at least 2 minutes before re-initiating",
    ),
    "26": ("M-Pesa system busy", True, False, _RETRY_LATER, "re-initiate after ~30 s"),
    "1001": (
        "unable to lock subscriber: another M-Pesa session is open on the phone",
        True,
        False,
        "Please finish or cancel the other M-Pesa request on your phone, then try again.",
        "re-initiate after 1-3 minutes",
    ),
    "1019": (
        "transaction expired before the customer completed it",
        True,
        False,
        "The payment request expired. Please try again.",
        "re-initiate",
    ),
    "1025": (
        "error sending the push request (prompt text too long, or transient)",
        True,
        False,
        _GENERIC_FAIL,
        "shorten the account reference, then retry",
    ),
    "1032": (
        "request cancelled by the customer",
        True,
        False,
        "You cancelled the payment.",
        "customer may retry",
    ),
    "1037": (
        "customer unreachable or did not respond (phone off, ignored prompt)",
        True,
        False,
        "We could not reach your phone. Make sure it is on and try again.",
        "customer may retry",
    ),
    "1101": (
        "prompt message prefix too long (organisation or account name)",
        True,
        False,
        _GENERIC_FAIL,
        "shorten the account reference",
    ),
    "2001": (
        "wrong M-Pesa PIN entered",
        True,
        False,
        "The M-Pesa PIN was wrong. Please try again.",
        "customer may retry",
    ),
    "2028": (
        "not permitted by product assignment (wrong TransactionType / PartyB)",
        True,
        False,
        _CONTACT,
        "fix till vs PayBill configuration",
    ),
    "8006": (
        "the customer's M-Pesa PIN is locked",
        True,
        False,
        "Your M-Pesa PIN is locked. Please call Safaricom customer care.",
        "customer contacts Safaricom",
    ),
    "9999": ("error sending the push request", True, False, _GENERIC_FAIL, "retry later"),
    "SFC_IC0003": (
        "operator does not exist (wrong TransactionType / PartyB, or invalid number)",
        True,
        False,
        _CONTACT,
        "fix till vs PayBill configuration or the phone number",
    ),
}

_C2B: Final[dict[str, _Row]] = {
    "0": ("accepted", True, True, "Payment accepted.", "none"),
    "C2B00011": ("rejected: invalid MSISDN", True, False, _CONTACT, "none"),
    "C2B00012": (
        "rejected: invalid account number",
        True,
        False,
        "The account number is not valid. Please check it and pay again.",
        "none",
    ),
    "C2B00013": ("rejected: invalid amount", True, False, _CONTACT, "none"),
    "C2B00014": ("rejected: invalid KYC details", True, False, _CONTACT, "none"),
    "C2B00015": ("rejected: invalid shortcode", True, False, _CONTACT, "none"),
    "C2B00016": ("rejected: other error", True, False, _CONTACT, "none"),
}

_INITIATOR: Final[dict[str, _Row]] = {
    "0": ("processed successfully", True, True, "Done.", "none"),
    "1": (
        "insufficient balance in the shortcode's account (Utility for B2C)",
        True,
        False,
        _CONTACT,
        "fund the Utility/Working account, then pay again",
    ),
    "2": ("declined: below the minimum amount", True, False, _CONTACT, "fix the amount"),
    "3": ("declined: above the maximum amount", True, False, _CONTACT, "fix the amount"),
    "4": ("would exceed the customer's daily limit", True, False, _CONTACT, "pay later"),
    "8": ("would exceed the customer's maximum balance", True, False, _CONTACT, "pay less"),
    "11": ("the debit party is in an invalid state", True, False, _CONTACT, "contact Safaricom"),
    "15": ("duplicate detected", True, False, _CONTACT, "check status before resending"),
    "17": ("M-Pesa internal failure", True, False, _CONTACT, "check status, then retry"),
    "18": ("initiator credential check failure", True, False, _CONTACT, "fix credentials"),
    "20": ("unresolved initiator", True, False, _CONTACT, "fix the initiator name"),
    "21": (
        "the initiator is not allowed to initiate this request",
        True,
        False,
        _CONTACT,
        "give the API user the role",
    ),
    "22": ("initiator not active", True, False, _CONTACT, "activate the API user"),
    "24": ("missing mandatory fields", True, False, _CONTACT, "fix the request"),
    "25": ("invalid request parameters", True, False, _CONTACT, "fix the request"),
    "26": ("traffic blocking: system too busy", True, False, _RETRY_LATER, "retry later"),
    "2001": (
        "initiator information invalid (name, password or certificate)",
        True,
        False,
        _CONTACT,
        "fix initiator name, password or certificate",
    ),
    "2006": ("declined due to account rule", True, False, _CONTACT, "check the account"),
    "2028": (
        "not permitted according to product assignment",
        True,
        False,
        _CONTACT,
        "enable the product on the shortcode",
    ),
    "2032": ("the transaction receipt number does not exist", True, False, _CONTACT, "check id"),
    "2040": (
        "recipient is not a registered M-Pesa customer",
        True,
        False,
        "This number cannot receive M-Pesa payments.",
        "pay another way",
    ),
    "8006": ("the security credential is locked", True, False, _CONTACT, "unlock the API user"),
    "R000001": ("the transaction has already been reversed", True, False, _CONTACT, "none"),
    "R000002": ("the original transaction id is invalid", True, False, _CONTACT, "check id"),
    "SFC_IC0003": ("the operator does not exist", True, False, _CONTACT, "check the number"),
    "100000000": ("request cached, waiting for resend", False, False, _RETRY_LATER, "wait"),
    "100000001": ("system overload", True, False, _RETRY_LATER, "retry later"),
    "100000002": ("throttling", True, False, _RETRY_LATER, "retry later"),
    "100000004": ("internal error", True, False, _CONTACT, "check status, then retry"),
    "100000005": ("invalid input value", True, False, _CONTACT, "fix the request"),
    "100000007": ("service status abnormal", True, False, _RETRY_LATER, "retry later"),
    "100000009": ("API status abnormal", True, False, _RETRY_LATER, "retry later"),
    "100000010": ("insufficient permissions", True, False, _CONTACT, "fix permissions"),
    "100000011": ("request rate limit exceeded", True, False, _RETRY_LATER, "back off"),
}

# For gateway codes, ``final`` means re-sending the same request unchanged will not help.
_GATEWAY: Final[dict[str, _Row]] = {
    "400.002.02": ("bad request: a field failed validation", True, False, _CONTACT, "fix"),
    "400.002.05": ("invalid request payload", True, False, _CONTACT, "fix the body"),
    "400.003.01": ("invalid access token", False, False, _RETRY_LATER, "refresh token once"),
    "400.003.02": ("bad request (C2B URL validation)", True, False, _CONTACT, "fix the URL"),
    "400.008.01": ("invalid authentication passed", True, False, _CONTACT, "fix key/secret"),
    "400.008.02": ("invalid grant type passed", True, False, _CONTACT, "fix grant_type"),
    "401.002.01": ("invalid access token", False, False, _RETRY_LATER, "refresh token once"),
    "401.003.01": (
        "no API product match (product or version not on the app)",
        True,
        False,
        _CONTACT,
        "enable the product / use the other API version",
    ),
    "404.001.01": ("resource not found", True, False, _CONTACT, "fix the path"),
    "404.001.03": ("invalid access token", False, False, _RETRY_LATER, "refresh token once"),
    "404.001.04": ("invalid authentication header", True, False, _CONTACT, "fix method/header"),
    "405.001": ("method not allowed", True, False, _CONTACT, "use POST"),
    "500.001.1001": (
        "merchant/credential error, subscriber locked, or (STK query) still processing",
        False,
        False,
        _RETRY_LATER,
        "read errorMessage: pending -> poll; lock -> wait 60 s; otherwise fix",
    ),
    "500.002.1001": (
        "duplicate OriginatorConversationID, or system internal error",
        True,
        False,
        _CONTACT,
        "check transaction status; never resend a duplicate",
    ),
    "500.003.1001": ("internal server error / C2B URL state", False, False, _RETRY_LATER, "retry"),
    "500.003.02": ("spike arrest: TPS limit exceeded", False, False, _RETRY_LATER, "back off"),
    "500.003.03": ("quota violation", False, False, _RETRY_LATER, "back off"),
    "00.002.1001": ("service under maintenance", False, False, _RETRY_LATER, "retry later"),
}

# B2B Express Checkout (USSD push to a till): the till operator's answer (REFERENCE §8.8).
_B2B_EXPRESS: Final[dict[str, _Row]] = {
    "0": ("paid: the till operator approved the payment", True, True, "Payment received.", "none"),
    "4001": (
        "cancelled by the till operator",
        True,
        False,
        "The payment was cancelled on the till.",
        "the merchant may retry",
    ),
}

# M-Pesa Ratiba callbacks reuse STK-like customer codes (REFERENCE §9, §10.3); 3001 is
# mentioned by the docs without a meaning (REFERENCE §14.7), so it is never called final.
_RATIBA: Final[dict[str, _Row]] = {
    **{code: _STK[code] for code in ("0", "1", "17", "1001", "1019", "1032", "1037", "2001")},
    "0": (
        "standing order accepted by the customer",
        True,
        True,
        "Your standing order is set up.",
        "none",
    ),
    "3001": (
        "mentioned by the Ratiba docs without a documented meaning [U]",
        False,
        False,
        "We are confirming your standing order. Please wait.",
        "verify",
    ),
}

# Bill Manager answers ``rescode`` (REFERENCE §9): "200" success, "409" the invoice is paid.
_BILL_MANAGER: Final[dict[str, _Row]] = {
    "200": ("success", True, True, "Done.", "none"),
    "409": (
        "conflict: the invoice is already paid (it cannot be cancelled)",
        True,
        False,
        _CONTACT,
        "reconcile the payment instead of cancelling",
    ),
}

# Pull Transactions (REFERENCE §8.9): register answers ResponseStatus 1000 (registered) or
# 1001 (already registered); query answers ResponseCode 1000 (records) or 1001 (none).
_PULL: Final[dict[str, _Row]] = {
    "1000": ("success: registered, or records found", True, True, "Done.", "none"),
    "1001": (
        "register: already registered; query: no records found (or no organisation name)",
        True,
        True,
        "Done.",
        "none",
    ),
}

_TABLES: Final[dict[str, dict[str, _Row]]] = {
    "stk": _STK,
    "c2b": _C2B,
    "initiator": _INITIATOR,
    "gateway": _GATEWAY,
    "b2b_express": _B2B_EXPRESS,
    "ratiba": _RATIBA,
    "bill_manager": _BILL_MANAGER,
    "pull": _PULL,
}


def _normalise(code: str | int | float) -> str:
    if isinstance(code, float) and code.is_integer():
        return str(int(code))
    text = str(code).strip()
    # "00000000" (C2B register v2) and "00" (QR) mean success like "0".
    if text and set(text) == {"0"}:
        return "0"
    return text


def lookup_code(code: str | int, kind: CodeKind = "stk") -> ResultCode:
    """Look a code up in the catalogue of ``kind``.

    Unknown codes are never treated as success: they come back with ``final=False``,
    ``known=False`` and the action ``"verify"`` (settle with a status query before telling
    the customer anything).

    Example:
        >>> lookup_code(1032).customer_message
        'You cancelled the payment.'
    """
    text = _normalise(code)
    row = _TABLES[kind].get(text)
    if row is None:
        return ResultCode(
            code=text,
            kind=kind,
            meaning=f"unknown {kind} code {text!r}",
            final=False,
            success=False,
            customer_message="We are confirming your payment status. Please wait.",
            action="verify",
            known=False,
        )
    meaning, final, success, message, action = row
    return ResultCode(text, kind, meaning, final, success, message, action)
