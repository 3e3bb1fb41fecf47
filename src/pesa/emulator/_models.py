"""The emulator's configuration, its control-API objects (rules, faults) and its records."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pesa._constants import (
    DEFAULT_B2C_MAX_AMOUNT,
    DEFAULT_B2C_MIN_AMOUNT,
    DEFAULT_STK_MAX_AMOUNT,
    DEFAULT_STK_MIN_AMOUNT,
)
from pesa.config import Settings
from pesa.daraja import (
    SANDBOX_INITIATOR,
    SANDBOX_INITIATOR_PASSWORD,
    SANDBOX_PASSKEY,
    SANDBOX_STK_SHORTCODE,
)

__all__ = [
    "SANDBOX_PASSKEY",
    "SANDBOX_STK_SHORTCODE",
    "CallbackAction",
    "CallbackKind",
    "DeliveryAttempt",
    "EmulatorConfig",
    "C2BPay",
    "C2BPayment",
    "C2BPaymentStatus",
    "Fault",
    "FaultKind",
    "Operation",
    "ReceivedRequest",
    "Rule",
    "SentCallback",
    "config_from_settings",
]

SANDBOX_SHORTCODES = ("600000", "600978", "600984", "600992", "600997", "600999")

# The operations rules match and the kinds of callbacks sent are those of the registered
# products ("stk", "c2b", "b2c", "transaction_status", "account_balance", "reversal"; "stk",
# "c2b_validation", "c2b_confirmation", "result", "queue_timeout"): plain strings, checked by
# the emulator, so that a new product needs no change here.
Operation = str
CallbackKind = str
CallbackAction = Literal["deliver", "drop", "duplicate", "delay", "timeout"]
FaultKind = Literal["http_500", "http_503", "spike_arrest", "slow", "invalid_token", "lost_answer"]


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


class EmulatorConfig(BaseModel):
    """Everything the emulator does, independent of the host and port it listens on.

    Defaults reproduce the public sandbox: shortcode 174379 with its public passkey, the
    600xxx organisation shortcodes, initiator ``testapi`` and any consumer key/secret.

    Example:
        >>> EmulatorConfig(stk_delay=0.05, seed=7).token_lifetime
        3599
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strict: bool = Field(
        False,
        description=(
            "check consumer key/secret exactly and decrypt SecurityCredentials with the "
            "emulator's own key (lenient mode only checks their shape)"
        ),
    )
    consumer_key: str | None = Field(None, description="the only key accepted in strict mode")
    consumer_secret: str | None = Field(None, description="the only secret accepted in strict mode")
    passkeys: dict[str, str] = Field(
        default_factory=lambda: {SANDBOX_STK_SHORTCODE: SANDBOX_PASSKEY},
        description="STK shortcodes (BusinessShortCode) and their passkeys",
    )
    shortcodes: tuple[str, ...] = Field(
        SANDBOX_SHORTCODES,
        description=(
            "organisation shortcodes (C2B, B2C, balance, ...); strict mode accepts only these "
            "and the STK shortcodes, lenient mode any well-formed shortcode"
        ),
    )
    stk_only_shortcodes: tuple[str, ...] = Field(
        (SANDBOX_STK_SHORTCODE,),
        description="shortcodes that cannot register C2B URLs (the sandbox's STK shortcode)",
    )
    initiators: dict[str, str] = Field(
        default_factory=lambda: {SANDBOX_INITIATOR: SANDBOX_INITIATOR_PASSWORD},
        description="initiator names and their passwords (checked in strict mode)",
    )
    token_lifetime: int = Field(3599, ge=1, description="expires_in of issued tokens, seconds")
    invalidate_old_tokens: bool = Field(
        False, description="a new token invalidates the app's older ones (Daraja FAQ, unverified)"
    )
    timestamp_tolerance: float | None = Field(
        1800.0,
        gt=0,
        description="seconds a Timestamp may differ from Nairobi time; None accepts any",
    )
    stk_delay: float = Field(1.0, ge=0, description="seconds before the customer answers")
    result_delay: float = Field(0.2, ge=0, description="seconds before an initiator Result")
    callback_timeout: float = Field(5.0, gt=0, description="seconds per callback delivery")
    callback_retries: int = Field(0, ge=0, description="re-deliveries of a failed callback")
    callback_retry_delay: float = Field(1.0, ge=0, description="seconds between re-deliveries")
    c2b_validation: bool = Field(True, description="call the registered ValidationURL")
    c2b_validation_timeout: float = Field(
        8.0, gt=0, description="seconds to wait for a validation answer before ResponseType"
    )
    c2b_customer_names: tuple[str, str, str] = Field(
        ("John", "", "Doe"),
        description="FirstName, MiddleName and LastName of simulated C2B customers",
    )
    c2b_url_keyword_check: bool = Field(
        True, description="refuse C2B URLs containing mpesa, safaricom, sql, query, ..."
    )
    queue_timeout_result_code: str = Field(
        "1",
        min_length=1,
        description="ResultCode of the undocumented QueueTimeOutURL payload (REFERENCE 14.5)",
    )
    queue_timeout_result_desc: str = Field(
        "The request timed out in the queue.",
        description="ResultDesc of the QueueTimeOutURL payload",
    )
    reversal_partial: bool = Field(
        True,
        description=(
            "accept reversing part of a payment, up to what remains unreversed (undocumented); "
            "False: only the whole amount"
        ),
    )
    reversal_of_b2c: bool = Field(
        False,
        description="B2C receipts can be reversed by the API (REFERENCE 8.1: no, portal only)",
    )
    b2b_min_amount: int = Field(
        1, ge=1, description="smallest B2B, tax or Express Checkout amount (undocumented [U])"
    )
    b2b_max_amount: int = Field(
        250_000, ge=1, description="largest B2B, tax or Express Checkout amount (undocumented [U])"
    )
    kra_shortcode: str = Field(
        "572572", description="the only PartyB tax remittance accepts (KRA, REFERENCE 8.4)"
    )
    pull_page_size: int = Field(
        100,
        ge=1,
        description="transactions per Pull Transactions page (undocumented [U]); OffSetValue pages",
    )
    qr_max_size: int = Field(
        1000, ge=1, description="largest Dynamic QR Size in pixels (undocumented [U])"
    )
    ratiba_till_transaction_types: tuple[str, ...] = Field(
        ("Standing Order Customer Pay Marchant", "Standing Order Customer Pay Merchant"),
        description=(
            "Ratiba till TransactionType spellings accepted (the docs say 'Marchant', an SDK "
            "'Merchant', REFERENCE 14.13 [U])"
        ),
    )
    ratiba_callback_keys: Literal["pascal", "camel"] = Field(
        "pascal",
        description=(
            "casing of Ratiba callback keys: ResponseHeader/Name (pascal) or responseHeader/name "
            "(camel); Daraja's examples disagree"
        ),
    )
    bill_manager_retries: int = Field(
        5, ge=0, description="re-sends of an unacknowledged Bill Manager payment (REFERENCE 11)"
    )
    bill_manager_retry_delay: float = Field(
        1.0, ge=0, description="seconds between Bill Manager payment re-sends (undocumented [U])"
    )
    latency_ms: float = Field(0.0, ge=0, description="delay added to every Daraja response")
    rate_limit: float | None = Field(
        None, gt=0, description="requests per second per app before spike arrest"
    )
    seed: int | None = Field(None, description="seed for ids, receipts and fault draws")
    max_records: int = Field(10_000, ge=1, description="requests/callbacks kept for listing")
    initial_utility_balance: Decimal = Field(
        Decimal("1000000.00"), ge=0, description="Utility account of each shortcode, KES"
    )
    initial_working_balance: Decimal = Field(
        Decimal("700000.00"), ge=0, description="Working account of each shortcode, KES"
    )
    stk_min_amount: int = Field(DEFAULT_STK_MIN_AMOUNT, ge=1)
    stk_max_amount: int = Field(DEFAULT_STK_MAX_AMOUNT, ge=1)
    b2c_min_amount: int = Field(DEFAULT_B2C_MIN_AMOUNT, ge=1)
    b2c_max_amount: int = Field(DEFAULT_B2C_MAX_AMOUNT, ge=1)
    wrong_method_error: Literal["405.001", "404.001.04"] = Field(
        "405.001", description="Daraja's answer to a wrong HTTP verb (sources disagree)"
    )
    oauth_bad_credentials: Literal["400.008.01", "empty"] = Field(
        "400.008.01",
        description="strict-mode answer to a wrong key/secret: the JSON error or an empty 400",
    )
    key_dir: Path | None = Field(
        None, description="directory keeping the emulator's RSA key and certificates"
    )

    @model_validator(mode="after")
    def _check(self) -> EmulatorConfig:
        if self.strict and (not self.consumer_key or not self.consumer_secret):
            raise ValueError("strict mode needs consumer_key and consumer_secret")
        for code in [*self.passkeys, *self.shortcodes]:
            if not (code.isdigit() and 5 <= len(code) <= 7):
                raise ValueError(f"shortcode {code!r} must be 5 to 7 digits")
        return self


class Rule(BaseModel):
    """How the emulated customer or M-Pesa answers a matching request.

    Every matcher given must match (``phone`` the customer MSISDN, ``amount``,
    ``account_reference``, ``operation``); a rule with no matcher matches everything. Rules
    are tried newest first and beat the scenario phone table.

    Example:
        >>> Rule(phone="254711000001", result_code=1032, callback="duplicate").callback
        'duplicate'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    operation: Operation | None = Field(
        None, description="stk, c2b, b2c, transaction_status, account_balance, reversal, ..."
    )
    phone: str | None = None
    amount: int | None = None
    account_reference: str | None = None
    result_code: int | str | None = Field(None, description="the outcome; None keeps the default")
    result_desc: str | None = None
    delay: float | None = Field(None, ge=0, description="seconds before the outcome is decided")
    callback: CallbackAction = "deliver"
    callback_delay: float = Field(0.0, ge=0, description="extra seconds for callback='delay'")
    callback_first: bool = Field(
        False, description="deliver the callback before the STK query turns final"
    )
    processed: bool = Field(
        False,
        description=(
            "callback='timeout' on an initiator API: M-Pesa processed the request anyway "
            "(the money moved; Transaction Status finds it) although the queue timed out"
        ),
    )
    times: int | None = Field(None, ge=1, description="uses left; None is unlimited")


class Fault(BaseModel):
    """A fault injected into a share of Daraja requests (never into the control API).

    Example:
        >>> Fault(kind="http_503", rate=0.25).rate
        0.25
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    kind: FaultKind
    rate: float = Field(1.0, ge=0, le=1, description="share of requests affected")
    delay: float = Field(0.0, ge=0, description="seconds added by a 'slow' fault")
    path: str | None = Field(None, description="only paths starting with this")
    times: int | None = Field(None, ge=1, description="uses left; None is unlimited")


class ReceivedRequest(BaseModel):
    """One request the emulator received, and what it answered.

    ``answer_lost``: a ``lost_answer`` fault processed the request (``status_code`` and
    ``response`` are Daraja's real answer) but the caller got a 504 instead.
    """

    id: int
    received_at: datetime
    method: str
    path: str
    body: Any
    status_code: int
    response: Any
    answer_lost: bool = False


class DeliveryAttempt(BaseModel):
    """One attempt to POST a callback."""

    at: datetime
    status_code: int | None
    error: str | None
    duration: float


class SentCallback(BaseModel):
    """A callback the emulator delivered (or tried to), with every attempt's result."""

    id: int
    kind: CallbackKind
    url: str
    payload: Any
    attempts: list[DeliveryAttempt] = Field(default_factory=list)
    delivered: bool = False
    response: Any = None


def config_from_settings(settings: Settings, **overrides: Any) -> EmulatorConfig:
    """Build an :class:`EmulatorConfig` from :class:`pesa.Settings` (``PESA_EMULATOR_*``).

    In strict mode the emulator expects the consumer key/secret the client is configured
    with (``PESA_CONSUMER_KEY`` / ``PESA_CONSUMER_SECRET``).

    Example:
        >>> from pesa import Settings
        >>> config_from_settings(Settings(emulator_stk_delay=0.1)).stk_delay
        0.1
    """
    key = settings.consumer_key.get_secret_value() if settings.consumer_key else None
    secret = settings.consumer_secret.get_secret_value() if settings.consumer_secret else None
    fields: dict[str, Any] = {
        "strict": settings.emulator_strict,
        "consumer_key": key,
        "consumer_secret": secret,
        "stk_delay": settings.emulator_stk_delay,
        "result_delay": settings.emulator_result_delay,
        "latency_ms": settings.emulator_latency_ms,
        "rate_limit": settings.emulator_rate_limit,
        "seed": settings.emulator_seed,
        "key_dir": settings.emulator_key_dir,
        "callback_retries": settings.emulator_callback_retries,
    }
    if settings.shortcode and settings.passkey:
        passkeys = {
            SANDBOX_STK_SHORTCODE: SANDBOX_PASSKEY,
            settings.shortcode: settings.passkey.get_secret_value(),
        }
        fields["passkeys"] = passkeys
    fields.update(overrides)
    return EmulatorConfig(**fields)


C2BPaymentStatus = Literal["pending", "completed", "rejected", "cancelled", "failed"]


class C2BPayment(BaseModel):
    """A customer's C2B payment to a PayBill or Till, from the phone menu or ``simulate``.

    ``status``: ``pending`` until M-Pesa decided; ``completed`` (the money moved; a
    confirmation was sent to the registered URL if any), ``rejected`` (the ValidationURL
    answered a non-zero ResultCode, in ``result_code``), ``cancelled`` (validation unanswered
    and the registration's ResponseType is ``Cancelled``) or ``failed`` (a rule's ResultCode:
    the customer's payment failed, nothing was notified). ``validation``: what the
    ValidationURL said (None when it was not called). ``notified``: a confirmation reached
    the ConfirmationURL.
    """

    trans_id: str
    shortcode: str
    command: Literal["CustomerPayBillOnline", "CustomerBuyGoodsOnline"]
    amount: int
    phone: str
    account_reference: str
    status: C2BPaymentStatus = "pending"
    validation: Literal["accepted", "rejected", "unanswered"] | None = None
    result_code: str | None = None
    third_party_trans_id: str = ""
    notified: bool = False


class C2BPay(BaseModel):
    """A customer paying a PayBill (with an account number) or a Till from the phone menu.

    Example:
        >>> C2BPay(shortcode="600997", account_reference="INV-1", amount=150).till
        False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shortcode: str = Field(pattern=r"^\d{5,7}$", description="the PayBill or Till number")
    amount: int = Field(ge=1, description="whole shillings")
    account_reference: str = Field(
        "", max_length=20, description="the PayBill account number (BillRefNumber)"
    )
    phone: str = Field(
        "254708374149", pattern=r"^254[17]\d{8}$", description="the paying customer, 2547/2541..."
    )
    till: bool = Field(False, description="Buy Goods (a Till) instead of Pay Bill")
    first_name: str | None = Field(None, max_length=50)
    middle_name: str | None = Field(None, max_length=50)
    last_name: str | None = Field(None, max_length=50)
