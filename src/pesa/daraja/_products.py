"""Request and response models of the business products: Pochi, B2B, tax, Express Checkout,
Pull Transactions, Dynamic QR, M-Pesa Ratiba and Bill Manager (REFERENCE §8.2-§8.9, §9).

Same conventions as :mod:`pesa.daraja._models`: snake_case in Python, Daraja's own spellings
as aliases (``RecieverIdentifierType``, ``Occassion``, lower-camel ``primaryShortCode``,
Bill Manager's ``rescode``); requests forbid unknown fields, responses keep them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from pesa._constants import NAIROBI_TZ
from pesa.daraja._models import CodeText, DarajaRequest, DarajaResponse
from pesa.daraja._validation import Msisdn

__all__ = [
    "B2B_COMMANDS",
    "KRA_SHORTCODE",
    "RATIBA_FREQUENCIES",
    "B2BCommand",
    "B2BExpressCheckoutRequest",
    "B2BExpressCheckoutResponse",
    "B2BPaymentRequest",
    "B2PochiPaymentRequest",
    "BillManagerOptInRequest",
    "BillManagerOptInResponse",
    "BillManagerResponse",
    "BulkInvoiceCancelRequest",
    "BulkInvoiceRequest",
    "Invoice",
    "InvoiceCancelRequest",
    "InvoiceItem",
    "InvoiceReconciliationRequest",
    "InvoiceRequest",
    "PullQueryRequest",
    "PullQueryResponse",
    "PullRegisterRequest",
    "PullRegisterResponse",
    "PulledTransaction",
    "QRCodeRequest",
    "QRCodeResponse",
    "QRTransactionCode",
    "RatibaHeader",
    "StandingOrderRequest",
    "StandingOrderResponse",
    "TaxRemittanceRequest",
]

B2BCommand = Literal[
    "BusinessPayBill",
    "BusinessBuyGoods",
    "BusinessPayToBulk",
    "BusinessTransferFromMMFToUtility",
]
B2B_COMMANDS: Final[tuple[str, ...]] = (
    "BusinessPayBill",
    "BusinessBuyGoods",
    "BusinessPayToBulk",
    "BusinessTransferFromMMFToUtility",
)
KRA_SHORTCODE: Final = "572572"
"""The only ``PartyB`` tax remittance accepts: the Kenya Revenue Authority (REFERENCE §8.4)."""

QRTransactionCode = Literal["BG", "WA", "PB", "SM", "SB"]

RATIBA_FREQUENCIES: Final[dict[str, str]] = {
    "one-off": "1",
    "daily": "2",
    "weekly": "3",
    "monthly": "4",
    "bi-monthly": "5",
    "quarterly": "6",
    "half-yearly": "7",
    "yearly": "8",
}
"""M-Pesa Ratiba's ``Frequency`` codes by name (REFERENCE §9)."""


# -- Business to Pochi, the B2B family, tax (initiator APIs) --------------------------------


class B2PochiPaymentRequest(DarajaRequest):
    """``POST /mpesa/b2pochi/v1/paymentrequest``: B2C v3's body paying a Pochi la Biashara."""

    originator_conversation_id: str = Field(alias="OriginatorConversationID")
    initiator_name: str = Field(alias="InitiatorName")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: Literal["BusinessPayToPochi"] = Field("BusinessPayToPochi", alias="CommandID")
    amount: int = Field(alias="Amount")
    party_a: str = Field(alias="PartyA")
    party_b: Msisdn = Field(alias="PartyB")
    remarks: str = Field(alias="Remarks")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    result_url: str = Field(alias="ResultURL")
    occasion: str | None = Field(None, alias="Occassion")


class B2BPaymentRequest(DarajaRequest):
    """``POST /mpesa/b2b/v1/paymentrequest``: Business PayBill, Buy Goods, B2C top-up, MMF.

    ``RecieverIdentifierType`` is Daraja's spelling; only ``4`` (shortcode) is accepted.
    """

    initiator: str = Field(alias="Initiator")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: B2BCommand = Field(alias="CommandID")
    sender_identifier_type: Literal["4"] = Field("4", alias="SenderIdentifierType")
    receiver_identifier_type: Literal["4"] = Field("4", alias="RecieverIdentifierType")
    amount: int = Field(alias="Amount")
    party_a: str = Field(alias="PartyA")
    party_b: str = Field(alias="PartyB")
    account_reference: str | None = Field(None, alias="AccountReference")
    requester: Msisdn | None = Field(None, alias="Requester")
    remarks: str = Field(alias="Remarks")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    result_url: str = Field(alias="ResultURL")
    occasion: str | None = Field(None, alias="Occassion")


class TaxRemittanceRequest(DarajaRequest):
    """``POST /mpesa/b2b/v1/remittax``: pay KRA; ``AccountReference`` is the PRN."""

    initiator: str = Field(alias="Initiator")
    security_credential: str = Field(alias="SecurityCredential", repr=False)
    command_id: Literal["PayTaxToKRA"] = Field("PayTaxToKRA", alias="CommandID")
    sender_identifier_type: Literal["4"] = Field("4", alias="SenderIdentifierType")
    receiver_identifier_type: Literal["4"] = Field("4", alias="RecieverIdentifierType")
    amount: int = Field(alias="Amount")
    party_a: str = Field(alias="PartyA")
    party_b: str = Field(KRA_SHORTCODE, alias="PartyB")
    account_reference: str = Field(alias="AccountReference")
    remarks: str = Field(alias="Remarks")
    queue_timeout_url: str = Field(alias="QueueTimeOutURL")
    result_url: str = Field(alias="ResultURL")


# -- B2B Express Checkout (USSD push to a till) ------------------------------------------


class B2BExpressCheckoutRequest(DarajaRequest):
    """``POST /v1/ussdpush/get-msisdn``: lower-camel names (``RequestRefID`` aside)."""

    primary_short_code: str = Field(alias="primaryShortCode")
    receiver_short_code: str = Field(alias="receiverShortCode")
    amount: int = Field(alias="amount")
    payment_ref: str = Field(alias="paymentRef")
    callback_url: str = Field(alias="callbackUrl")
    partner_name: str = Field(alias="partnerName")
    request_ref_id: str = Field(alias="RequestRefID")


class B2BExpressCheckoutResponse(DarajaResponse):
    """``{"code": "0", "status": "USSD Initiated Successfully"}``: the prompt went out.

    Daraja's answer carries no id: ``request_ref_id`` is the ``RequestRefID`` that was
    sent, the ``requestId`` of the callback that will report the outcome.
    """

    response_code: CodeText = Field(alias="code")
    status: str = ""
    request_ref_id: str | None = None

    @property
    def response_description(self) -> str:
        """Daraja's ``status`` text."""
        return self.status


# -- Pull Transactions ---------------------------------------------------------------------


class PullRegisterRequest(DarajaRequest):
    """``POST /pulltransactions/v1/register`` (once per live shortcode)."""

    short_code: str = Field(alias="ShortCode")
    request_type: Literal["Pull"] = Field("Pull", alias="RequestType")
    nominated_number: Msisdn = Field(alias="NominatedNumber")
    callback_url: str = Field(alias="CallBackURL")


class PullRegisterResponse(DarajaResponse):
    """``ResponseStatus`` ``1000`` registered, ``1001`` already registered (both fine)."""

    response_ref_id: str | None = Field(None, alias="ResponseRefID")
    response_code: CodeText = Field(alias="ResponseStatus")
    short_code: str | None = Field(None, alias="ShortCode")
    response_description: str = Field("", alias="ResponseDescription")

    @field_validator("short_code", mode="before")
    @classmethod
    def _short_code_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @property
    def already_registered(self) -> bool:
        """The shortcode was registered before (``1001``)."""
        return self.response_code == "1001"


class PullQueryRequest(DarajaRequest):
    """``POST /pulltransactions/v1/query``: dates ``YYYY-MM-DD HH:MM:SS`` in Nairobi time."""

    short_code: str = Field(alias="ShortCode")
    start_date: str = Field(alias="StartDate")
    end_date: str = Field(alias="EndDate")
    offset_value: str = Field("0", alias="OffSetValue")


class PulledTransaction(BaseModel):
    """One transaction of a Pull Transactions answer (Daraja's lower-case keys as aliases).

    ``msisdn`` is text whatever the wire type (a number, a masked or hashed string);
    ``trx_date`` is an aware datetime (naive ISO-8601 values are read as Nairobi time).
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    transaction_id: str = Field(alias="transactionId", min_length=1, max_length=32)
    trx_date: datetime | None = Field(None, alias="trxDate")
    msisdn: str = Field("", alias="msisdn", max_length=64)
    sender: str = Field("", alias="sender", max_length=256)
    transaction_type: str = Field("", alias="transactiontype", max_length=64)
    bill_reference: str = Field("", alias="billreference", max_length=64)
    amount: Decimal = Field(alias="amount")
    organization_name: str = Field("", alias="organizationname", max_length=256)

    @field_validator("transaction_id")
    @classmethod
    def _receipt(cls, value: str) -> str:
        if not (value.isascii() and value.isalnum()):
            raise ValueError("must be ASCII letters and digits (an M-Pesa receipt)")
        return value

    @field_validator("msisdn", "sender", "bill_reference", "organization_name", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(int(value)) if float(value).is_integer() else str(value)
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, float):
            value = str(value)  # never a float's binary error in money
        try:
            amount = Decimal(str(value).strip())
        except InvalidOperation as err:
            raise ValueError("must be a number") from err
        if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
            raise ValueError("must be a non-negative amount with at most 2 decimals")
        return amount

    @field_validator("trx_date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        if isinstance(value, str):
            text = value.strip().replace("Z", "+00:00")
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                from zoneinfo import ZoneInfo

                parsed = parsed.replace(tzinfo=ZoneInfo(NAIROBI_TZ))
            return parsed
        return value


class PullQueryResponse(DarajaResponse):
    """A page of Pull Transactions: ``ResponseCode`` ``1000`` (records) or ``1001`` (none).

    Daraja nests the list (``Response: [[{...}, ...]]``); :attr:`transactions` is flat.
    """

    response_ref_id: str | None = Field(None, alias="ResponseRefID")
    response_code: CodeText = Field(alias="ResponseCode")
    response_description: str = Field(
        "",
        validation_alias=AliasChoices("ResponseMessage", "ResponseDescription"),
        serialization_alias="ResponseMessage",
    )
    transactions: list[PulledTransaction] = Field(default_factory=list, alias="Response")

    @field_validator("transactions", mode="before")
    @classmethod
    def _flatten(cls, value: Any) -> Any:
        # [[{...}, {...}]] in the docs and captures; tolerate a flat list or nothing too.
        if value in (None, ""):
            return []
        if isinstance(value, Mapping):
            return [value]
        if isinstance(value, list):
            flat: list[Any] = []
            for item in value:
                if isinstance(item, list):
                    flat.extend(item)
                else:
                    flat.append(item)
            return flat
        return value

    @property
    def found(self) -> bool:
        """Records were found (``1000``); ``1001`` means none in the window."""
        return self.response_code == "1000" and bool(self.transactions)


# -- Dynamic QR ---------------------------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class QRCodeRequest(DarajaRequest):
    """``POST /mpesa/qrcode/v1/generate``."""

    merchant_name: str = Field(alias="MerchantName")
    ref_no: str = Field(alias="RefNo")
    amount: int = Field(alias="Amount")
    trx_code: QRTransactionCode = Field(alias="TrxCode")
    cpi: str = Field(alias="CPI")
    size: str = Field(alias="Size")


class QRCodeResponse(DarajaResponse):
    """``ResponseCode`` ``"00"`` and the image as base64 (``QRCode``); see :attr:`image`."""

    response_code: CodeText = Field(alias="ResponseCode")
    response_description: str = Field("", alias="ResponseDescription")
    request_id: str | None = Field(None, alias="RequestID")
    qr_code: str = Field(alias="QRCode", repr=False, min_length=1)

    @field_validator("qr_code")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as err:
            raise ValueError("QRCode must be base64") from err
        return value

    @property
    def image(self) -> bytes:
        """The decoded image bytes (a PNG)."""
        return base64.b64decode(self.qr_code)

    @property
    def is_png(self) -> bool:
        """The image starts with the PNG signature."""
        return self.image.startswith(_PNG_SIGNATURE)


# -- M-Pesa Ratiba (standing orders) -----------------------------------------------------


class StandingOrderRequest(DarajaRequest):
    """``POST /standingorder/v1/createStandingOrderExternal``; dates ``yyyymmdd``."""

    standing_order_name: str = Field(alias="StandingOrderName")
    start_date: str = Field(alias="StartDate")
    end_date: str = Field(alias="EndDate")
    business_short_code: str = Field(alias="BusinessShortCode")
    transaction_type: str = Field(alias="TransactionType")
    receiver_party_identifier_type: Literal["2", "4"] = Field(alias="ReceiverPartyIdentifierType")
    amount: str = Field(alias="Amount")
    party_a: Msisdn = Field(alias="PartyA")
    callback_url: str = Field(alias="CallBackURL")
    account_reference: str = Field(alias="AccountReference")
    transaction_desc: str = Field(alias="TransactionDesc")
    frequency: Literal["1", "2", "3", "4", "5", "6", "7", "8"] = Field(alias="Frequency")


def lower_keys(value: Any) -> Any:
    """``value`` with every mapping key lower-cased, at any depth (Ratiba's keys vary in case)."""
    if isinstance(value, Mapping):
        return {str(k).lower(): lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [lower_keys(v) for v in value]
    return value


class RatibaHeader(BaseModel):
    """Ratiba's ``ResponseHeader`` (keys read in any case)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    response_ref_id: str | None = Field(None, alias="responserefid")
    response_code: CodeText = Field(alias="responsecode")
    response_description: str = Field("", alias="responsedescription")
    result_desc: str = Field("", alias="resultdesc")


class StandingOrderResponse(DarajaResponse):
    """Ratiba's acknowledgement: ``ResponseHeader`` (``responseCode`` ``"200"``) and a body.

    Keys are matched case-insensitively: Daraja's examples disagree on their casing.
    """

    response_header: RatibaHeader = Field(alias="responseheader")
    response_body: dict[str, Any] = Field(default_factory=dict, alias="responsebody")

    @model_validator(mode="before")
    @classmethod
    def _any_case(cls, data: Any) -> Any:
        return lower_keys(data)

    @property
    def response_code(self) -> str:
        """``responseCode`` of the header."""
        return self.response_header.response_code

    @property
    def response_description(self) -> str:
        """``responseDescription`` of the header."""
        return self.response_header.response_description


# -- Bill Manager --------------------------------------------------------------------------


class BillManagerOptInRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/optin`` (and ``change-optin-details``)."""

    shortcode: str = Field(alias="shortcode")
    email: str = Field(alias="email")
    official_contact: str = Field(alias="officialContact")
    send_reminders: Literal[0, 1] = Field(alias="sendReminders")
    logo: str | None = Field(None, alias="logo")
    callback_url: str = Field(alias="callbackurl")


class BillManagerResponse(DarajaResponse):
    """Bill Manager's answer: ``rescode`` ``"200"`` success (``"409"``: the invoice is paid)."""

    response_code: CodeText = Field(alias="rescode")
    response_description: str = Field("", alias="resmsg")
    status_message: str | None = Field(None, alias="Status_Message")


class BillManagerOptInResponse(BillManagerResponse):
    """Opt-in's answer, with the ``app_key`` Bill Manager issued."""

    app_key: str | None = Field(None, alias="app_key", repr=False)


class InvoiceItem(DarajaRequest):
    """One line of an invoice: ``{"itemName", "amount"}``."""

    item_name: str = Field(alias="itemName")
    amount: int = Field(alias="amount")


class InvoiceRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/single-invoicing``; ``dueDate`` ``YYYY-MM-DD``."""

    external_reference: str = Field(alias="externalReference")
    billed_full_name: str = Field(alias="billedFullName")
    billed_phone_number: Msisdn = Field(alias="billedPhoneNumber")
    billed_period: str = Field(alias="billedPeriod")
    invoice_name: str = Field(alias="invoiceName")
    due_date: str = Field(alias="dueDate")
    account_reference: str = Field(alias="accountReference")
    amount: int = Field(alias="amount")
    invoice_items: list[InvoiceItem] | None = Field(None, alias="invoiceItems")


class BulkInvoiceRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/bulk-invoicing``: a JSON array of invoices (≤ 1000)."""

    invoices: list[InvoiceRequest]

    def to_wire(self) -> Any:
        """The JSON array Daraja expects."""
        return [invoice.to_wire() for invoice in self.invoices]


class InvoiceReconciliationRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/reconciliation``: acknowledge a payment received."""

    payment_date: str = Field(alias="paymentDate")
    paid_amount: int = Field(alias="paidAmount")
    account_reference: str = Field(alias="accountReference")
    transaction_id: str = Field(alias="transactionId")
    phone_number: str = Field(alias="phoneNumber")
    full_name: str = Field(alias="fullName")
    invoice_name: str = Field(alias="invoiceName")
    external_reference: str = Field(alias="externalReference")


class InvoiceCancelRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/cancel-single-invoice``."""

    external_reference: str = Field(alias="externalReference")


class BulkInvoiceCancelRequest(DarajaRequest):
    """``POST /v1/billmanager-invoice/cancel-bulk-invoices``: a JSON array."""

    invoices: list[InvoiceCancelRequest]

    def to_wire(self) -> Any:
        """The JSON array Daraja expects."""
        return [invoice.to_wire() for invoice in self.invoices]


# -- what callers give (validated by the clients into the wire models above) --------------


@dataclass(frozen=True, slots=True)
class Invoice:
    """A Bill Manager invoice as a caller describes it (validated when sent).

    Example:
        >>> Invoice("INV-42", "Jane Doe", "0708374149", 1500, "ACC42", "School fees",
        ...         "August 2021", date(2021, 10, 12), items=[("Tuition", 1500)])

    Attributes:
        external_reference: your unique id of the invoice (``externalReference``).
        billed_full_name: the customer's name.
        billed_phone_number: the customer's phone (any Safaricom format).
        amount: whole shillings.
        account_reference: the account number the customer pays with (``BillRefNumber``).
        invoice_name: what the invoice is for.
        billed_period: e.g. ``"August 2021"``.
        due_date: the due date (``YYYY-MM-DD`` on the wire).
        items: optional lines ``(name, amount)``.
    """

    external_reference: str
    billed_full_name: str
    billed_phone_number: str | int
    amount: Any
    account_reference: str
    invoice_name: str
    billed_period: str
    due_date: date
    items: Sequence[tuple[str, Any]] | None = None
