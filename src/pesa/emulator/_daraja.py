"""What Daraja says: its literal error messages, result descriptions and id formats.

The emulator owns these tables on purpose (DESIGN.md): if pesa's client models were wrong,
the emulator must not be wrong the same way. Every string here is copied from the offline
reference (``shared/daraja/REFERENCE.md``, sections 3, 6, 7, 8 and 10).
"""

from __future__ import annotations

import random
import string
from datetime import datetime
from typing import Final

# -- Synchronous (gateway) errors, REFERENCE 10.1: (HTTP status, errorCode, errorMessage) --

ErrorSpec = tuple[int, str, str]

INVALID_PAYLOAD: Final[ErrorSpec] = (400, "400.002.05", "Invalid Request Payload")
RESOURCE_NOT_FOUND: Final[ErrorSpec] = (404, "404.001.01", "Resource not found")
INVALID_AUTH_HEADER: Final[ErrorSpec] = (404, "404.001.04", "Invalid Authentication Header")
OAUTH_INVALID_AUTHENTICATION: Final[ErrorSpec] = (
    400,
    "400.008.01",
    "Invalid Authentication passed",
)
OAUTH_INVALID_GRANT: Final[ErrorSpec] = (400, "400.008.02", "Invalid grant type passed")
TOKEN_INVALID_404: Final[ErrorSpec] = (404, "404.001.03", "Invalid Access Token")
TOKEN_INVALID_C2B: Final[ErrorSpec] = (400, "400.003.01", "Invalid Access Token")
MERCHANT_NOT_FOUND: Final[ErrorSpec] = (500, "500.001.1001", "Merchant does not exist")
WRONG_CREDENTIALS: Final[ErrorSpec] = (500, "500.001.1001", "Wrong credentials")
SUBSCRIBER_LOCKED: Final[ErrorSpec] = (
    500,
    "500.001.1001",
    "Unable to lock subscriber, a transaction is already in process for the current subscriber",
)
STK_PENDING: Final[ErrorSpec] = (500, "500.001.1001", "The transaction is being processed")
DUPLICATE_ORIGINATOR: Final[ErrorSpec] = (
    500,
    "500.002.1001",
    "Duplicate OriginatorConversationID.",
)
INTERNAL_SERVER_ERROR: Final[ErrorSpec] = (500, "500.003.1001", "Internal Server Error")
SPIKE_ARREST: Final[ErrorSpec] = (500, "500.003.02", "Error Occurred: Spike Arrest Violation")
C2B_URL_KEYWORD: Final = "400.003.02"


def bad_request(field: str) -> ErrorSpec:
    """Daraja's answer to a field that fails validation: ``400.002.02 Bad Request - Invalid X``."""
    return (400, "400.002.02", f"Bad Request - Invalid {field}")


def method_not_allowed(method: str) -> ErrorSpec:
    """Daraja's ``405.001`` answer to the wrong HTTP verb."""
    return (405, "405.001", f"{method} Method Not Allowed")


# -- Customer outcomes of an STK push (callback ResultCode), REFERENCE 10.2 -------------------

STK_RESULT_DESCRIPTIONS: Final[dict[str, str]] = {
    "0": "The service request is processed successfully.",
    "1": "The balance is insufficient for the transaction.",
    "2": "Declined due to limit rule.",
    "17": "Rule limited.",
    "26": "System busy",
    "1001": "Unable to lock subscriber",
    "1019": "Transaction has expired.",
    "1025": "An error occurred while sending a push request.",
    "1032": "Request cancelled by user.",
    "1037": "DS timeout user cannot be reached.",
    "2001": "The initiator information is invalid.",
    "2028": "The request is not permitted according to product assignment.",
    "8006": "The security credential is locked.",
    "SFC_IC0003": "The operator does not exist.",
}
STK_QUERY_ACCEPTED: Final = "The service request has been accepted successfully"
STK_PUSH_ACCEPTED: Final = "Success. Request accepted for processing"

# -- Initiator API results (B2C, status, balance, reversal), REFERENCE 10.3 -------------------

RESULT_DESCRIPTIONS: Final[dict[str, str]] = {
    "0": "The service request is processed successfully.",
    "1": "The balance is insufficient for the transaction.",
    "2": "Declined due to limit rule.",
    "11": "The DebitParty is in an invalid state.",
    "17": "System internal error.",
    "21": "The initiator is not allowed to initiate this request.",
    "2001": "The initiator information is invalid.",
    "2006": "Declined due to account rule.",
    "2028": "The request is not permitted according to product assignment.",
    "2032": "The transaction receipt number does not exist.",
    "2040": (
        "Credit Party customer type (Unregistered or Registered Customer) can't be "
        "supported by the service."
    ),
    "8006": "The security credential is locked.",
    "R000001": "The transaction has already been reversed",
    "R000002": "The OriginalTransactionID is invalid.",
    "SFC_IC0003": "The operator does not exist.",
}
INITIATOR_ACCEPTED: Final = "Accept the service request successfully."
FAILED_TRANSACTION_ID: Final = "OAK0000000"
DAYS_CHARS: Final = "123456789ABCDEFGHIJKLMNOPQRSTUV"

# -- C2B, REFERENCE 7 -----------------------------------------------------------------------

C2B_REGISTERED: Final = "Success"
C2B_SIMULATE_ACCEPTED: Final = "Accept the service request successfully."
C2B_RESPONSE_TYPES: Final = ("Completed", "Cancelled")
C2B_BANNED_WORDS: Final = (
    "m-pesa",
    "mpesa",
    "safaricom",
    "exe",
    "exec",
    "cmd",
    "sql",
    "query",
)

_ALNUM_UPPER: Final = string.ascii_uppercase + string.digits


class IdFactory:
    """Daraja's id formats, drawn from one seeded random source (deterministic under a seed)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def _hex(self, n: int) -> str:
        return f"{self._rng.getrandbits(4 * n):0{n}x}"

    def _digits(self, n: int) -> str:
        return f"{self._rng.randrange(10**n):0{n}d}"

    def request_id(self) -> str:
        """A gateway id like ``ac7b-470b-8df7-23ab3cef38271071873`` (also MerchantRequestID)."""
        return f"{self._hex(4)}-{self._hex(4)}-{self._hex(4)}-{self._hex(12)}{self._digits(7)}"

    def checkout_request_id(self, now: datetime) -> str:
        """``ws_CO_`` + DDMMYYYYHHMMSS + milliseconds + nine digits.

        Daraja's ids appear to end with the customer's number; ours end with random digits
        so that logging a CheckoutRequestID never logs a phone number.
        """
        millis = f"{now.microsecond // 1000:03d}"
        return f"ws_CO_{now:%d%m%Y%H%M%S}{millis}{self._digits(9)}"

    def conversation_id(self, now: datetime) -> str:
        """``AG_YYYYMMDD_`` and twenty hex digits: ``AG_20240706_2010364430d9bbdaf872``."""
        return f"AG_{now:%Y%m%d}_2010{self._hex(16)}"

    def originator_conversation_id(self) -> str:
        """A gateway-made OriginatorConversationID like ``5118-111210482-1``."""
        return f"{self._digits(4)}-{self._digits(9)}-{self._rng.randint(1, 9)}"

    def receipt(self, now: datetime) -> str:
        """An M-Pesa receipt like ``SG632NMUAB``: year, month and day letters, then seven.

        The first three characters encode the date as real receipts do (``N`` is 2019, ``S``
        2024; ``A`` is January; days run ``1``-``9`` then ``A``-``V``).
        """
        year = string.ascii_uppercase[(now.year - 2006) % 26]
        month = string.ascii_uppercase[now.month - 1]
        day = DAYS_CHARS[now.day - 1]
        rest = "".join(self._rng.choice(_ALNUM_UPPER) for _ in range(7))
        return f"{year}{month}{day}{rest}"

    def token(self) -> str:
        """An opaque access token like ``c9SQxWWhmdVRlyh0zh8gZDTkubVF`` (28 characters)."""
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(28))
