"""Request and response models of the Daraja operations, with Daraja's spellings as aliases.

Python names are snake_case; the wire names (``BusinessShortCode``, ``Occassion``,
``RecieverIdentifierType``) are aliases. Requests forbid unknown fields, responses tolerate
them. Secrets (passkey, initiator password) are never fields: only what Daraja receives
(the derived ``Password`` and ``SecurityCredential``), hidden from ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from pesa.daraja._codes import ResultCode, lookup_code
from pesa.daraja._validation import Msisdn

__all__ = [
    "SECRET_FIELDS",
    "AccountBalanceRequest",
    "B2CCommand",
    "B2CPaymentRequest",
    "C2BRegisterUrlRequest",
    "C2BRegisterUrlResponse",
    "C2BSimulateRequest",
    "C2BSimulateResponse",
    "CodeText",
    "DarajaRequest",
    "DarajaResponse",
    "InitiatorResponse",
    "ReversalRequest",
    "StkPushRequest",
    "StkPushResponse",
    "StkQueryRequest",
    "StkQueryResponse",
    "TokenResponse",
    "TransactionStatusRequest",
    "is_success_code",
    "redact_secrets",
]

B2CCommand = Literal["BusinessPayment", "SalaryPayment", "PromotionPayment"]


def is_success_code(code: str | int | None) -> bool:
    """``True`` for ``0``, ``"0"``, ``"00"``, ``"00000000"``: Daraja's several spellings of OK."""
    if code is None or isinstance(code, bool):
        return False
    text = str(code).strip()
    return bool(text) and set(text) == {"0"}


SECRET_FIELDS: Final = frozenset({"Password", "SecurityCredential"})
"""Wire fields of request bodies that hold secrets (the STK password, the credential)."""


def redact_secrets(body: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a request body with every :data:`SECRET_FIELDS` value ``[redacted]``."""
    return {k: ("[redacted]" if k in SECRET_FIELDS else v) for k, v in body.items()}


class DarajaRequest(BaseModel):
    """Base of request bodies: unknown fields are an error, serialised with Daraja's names."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body Daraja expects (aliases, no ``None`` fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class DarajaResponse(BaseModel):
    """Base of response bodies: unknown fields are kept, never an error."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


def _code_text(value: Any) -> Any:
    # Daraja drifts between ints and strings for codes; store them as strings.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


CodeText = Annotated[str, BeforeValidator(_code_text)]
"""A Daraja code, int or string on the wire, always a string here."""


class TokenResponse(DarajaResponse):
    """``GET /oauth/v1/generate``: ``{"access_token": "...", "expires_in": "3599"}``."""

    access_token: str = Field(repr=False, min_length=1)
    expires_in: int = Field(gt=0)

    @field_validator("expires_in", mode="before")
    @classmethod
    def _expires_in_text(cls, value: Any) -> Any:
        # A string ("3599") in real traffic, a number in the docs.
        if isinstance(value, str):
            return int(value.strip())
        return value


class StkPushRequest(DarajaRequest):
    """``POST /mpesa/stkpush/v1/processrequest`` (M-Pesa Express)."""

    business_short_code: str = Field(alias="BusinessShortCode")
    password: str = Field(alias="Password", repr=False)
    timestamp: str = Field(alias="Timestamp")
    transaction_type: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] = Field(
        alias="TransactionType"
    )
    amount: int = Field(alias="Amount")
    party_a: Msisdn = Field(alias="PartyA")
    party_b: str = Field(alias="PartyB")
    phone_number: Msisdn = Field(alias="PhoneNumber")
    callback_url: str = Field(alias="CallBackURL")
    account_reference: str = Field(alias="AccountReference")
    transaction_desc: str = Field(alias="TransactionDesc")


class StkPushResponse(DarajaResponse):
    """The acknowledgement of an STK push: accepted for processing, **not** paid."""

    merchant_request_id: str = Field(alias="MerchantRequestID")
    checkout_request_id: str = Field(alias="CheckoutRequestID")
    response_code: CodeText = Field(alias="ResponseCode")
    response_description: str = Field("", alias="ResponseDescription")
    customer_message: str = Field("", alias="CustomerMessage")


class StkQueryRequest(DarajaRequest):
    """``POST /mpesa/stkpushquery/v1/query``."""

    business_short_code: str = Field(alias="BusinessShortCode")
    password: str = Field(alias="Password", repr=False)
    timestamp: str = Field(alias="Timestamp")
    checkout_request_id: str = Field(alias="CheckoutRequestID", min_length=1)


class StkQueryResponse(DarajaResponse):
    """The state of an STK push as the query sees it.

    ``pending`` is ``True`` while the prompt is still open (Daraja's ``500.001.1001 The
    transaction is being processed``); then ``result_code`` is ``None``. Otherwise
    ``result_code`` is final: ``"0"`` paid, anything else not paid (see :attr:`code`).
    The query never returns the receipt number.
    """

    response_code: CodeText | None = Field(None, alias="ResponseCode")
    response_description: str = Field("", alias="ResponseDescription")
    merchant_request_id: str | None = Field(None, alias="MerchantRequestID")
    checkout_request_id: str = Field(alias="CheckoutRequestID")
    result_code: CodeText | None = Field(None, alias="ResultCode")
    result_desc: str = Field("", alias="ResultDesc")
    pending: bool = False

    @property
    def succeeded(self) -> bool:
        """The customer paid."""
        return not self.pending and self.result_code == "0"

    @property
    def code(self) -> ResultCode | None:
        """The catalogue entry of ``result_code`` (``None`` while pending)."""
        return None if self.result_code is None else lookup_code(self.result_code, "stk")


class C2BRegisterUrlRequest(DarajaRequest):
    """``POST /mpesa/c2b/v{1,2}/registerurl``."""

    short_code: str = Field(alias="ShortCode")
    response_type: Literal["Completed", "Cancelled"] = Field(alias="ResponseType")
    confirmation_url: str = Field(alias="ConfirmationURL")
    validation_url: str = Field(alias="ValidationURL")


class C2BRegisterUrlResponse(DarajaResponse):
    """C2B register acknowledgement (``OriginatorCoversationID`` is Daraja's spelling)."""

    originator_conversation_id: str | None = Field(
        None,
        validation_alias=AliasChoices("OriginatorCoversationID", "OriginatorConversationID"),
        serialization_alias="OriginatorCoversationID",
    )
    response_code: CodeText = Field(alias="ResponseCode")
    response_description: str = Field("", alias="ResponseDescription")


class C2BSimulateRequest(DarajaRequest):
    """``POST /mpesa/c2b/v{1,2}/simulate`` (sandbox and emulator only)."""

    short_code: str = Field(alias="ShortCode")
    command_id: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"] = Field(
        alias="CommandID"
    )
    amount: int = Field(alias="Amount")
    msisdn: Msisdn = Field(alias="Msisdn")
    bill_ref_number: str | None = Field(None, alias="BillRefNumber")


class C2BSimulateResponse(C2BRegisterUrlResponse):
    """C2B simulate acknowledgement."""


class InitiatorResponse(DarajaResponse):
    """Acknowledgement of an initiator API (B2C, status, balance, reversal): accepted, not done.

    The outcome arrives later at ``ResultURL`` as a ``{"Result": ...}`` envelope.
    """

    originator_conversation_id: str | None = Field(None, alias="OriginatorConversationID")
    conversation_id: str | None = Field(None, alias="ConversationID")
    response_code: CodeText = Field(alias="ResponseCode")
    response_description: str = Field("", alias="ResponseDescription")


class B2CPaymentRequest(DarajaRequest):
    """``POST /mpesa/b2c/v3/paymentrequest``; ``OriginatorConversationID`` is the caller's key."""

    originator_conversation_id: str = Field(alias="OriginatorConversationID")
    initiator_name: str = Field(alias="InitiatorName")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: B2CCommand = Field(alias="CommandID")
    amount: int = Field(alias="Amount")
    party_a: str = Field(alias="PartyA")
    party_b: Msisdn = Field(alias="PartyB")
    remarks: str = Field(alias="Remarks")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    result_url: str = Field(alias="ResultURL")
    occasion: str | None = Field(None, alias="Occassion")


class TransactionStatusRequest(DarajaRequest):
    """``POST /mpesa/transactionstatus/v1/query`` by receipt and/or OriginatorConversationID."""

    initiator: str = Field(alias="Initiator")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: Literal["TransactionStatusQuery"] = Field(
        "TransactionStatusQuery", alias="CommandID"
    )
    transaction_id: str | None = Field(None, alias="TransactionID")
    original_conversation_id: str | None = Field(None, alias="OriginalConversationID")
    party_a: str = Field(alias="PartyA")
    identifier_type: Literal["1", "2", "4"] = Field("4", alias="IdentifierType")
    result_url: str = Field(alias="ResultURL")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    remarks: str = Field(alias="Remarks")
    occasion: str | None = Field(None, alias="Occasion")


class AccountBalanceRequest(DarajaRequest):
    """``POST /mpesa/accountbalance/v1/query``."""

    initiator: str = Field(alias="Initiator")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: Literal["AccountBalance"] = Field("AccountBalance", alias="CommandID")
    party_a: str = Field(alias="PartyA")
    identifier_type: Literal["1", "2", "4"] = Field("4", alias="IdentifierType")
    remarks: str = Field(alias="Remarks")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    result_url: str = Field(alias="ResultURL")


class ReversalRequest(DarajaRequest):
    """``POST /mpesa/reversal/v1/request`` (``RecieverIdentifierType`` is Daraja's spelling)."""

    initiator: str = Field(alias="Initiator")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: Literal["TransactionReversal"] = Field("TransactionReversal", alias="CommandID")
    transaction_id: str = Field(alias="TransactionID")
    amount: str = Field(alias="Amount")
    receiver_party: str = Field(alias="ReceiverParty")
    receiver_identifier_type: str = Field("11", alias="RecieverIdentifierType")
    result_url: str = Field(alias="ResultURL")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    remarks: str = Field(alias="Remarks")
    occasion: str | None = Field(None, alias="Occasion")
