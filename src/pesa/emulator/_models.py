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
from pesa.daraja import SANDBOX_PASSKEY, SANDBOX_STK_SHORTCODE

__all__ = [
    "SANDBOX_PASSKEY",
    "SANDBOX_STK_SHORTCODE",
    "CallbackAction",
    "CallbackKind",
    "DeliveryAttempt",
    "EmulatorConfig",
    "Fault",
    "FaultKind",
    "Operation",
    "ReceivedRequest",
    "Rule",
    "SentCallback",
    "config_from_settings",
]

SANDBOX_SHORTCODES = ("600000", "600978", "600984", "600992", "600997", "600999")

Operation = Literal["stk", "b2c", "c2b", "transaction_status", "account_balance", "reversal"]
CallbackAction = Literal["deliver", "drop", "duplicate", "delay", "timeout"]
CallbackKind = Literal["stk", "c2b_validation", "c2b_confirmation", "result", "queue_timeout"]
FaultKind = Literal["http_500", "http_503", "spike_arrest", "slow", "invalid_token"]


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
        SANDBOX_SHORTCODES, description="organisation shortcodes (C2B, B2C, balance, ...)"
    )
    initiators: dict[str, str] = Field(
        default_factory=lambda: {"testapi": "Safaricom999!*!"},
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
    c2b_url_keyword_check: bool = Field(
        True, description="refuse C2B URLs containing mpesa, safaricom, sql, query, ..."
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
    operation: Operation | None = None
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
    """One request the emulator received, and what it answered."""

    id: int
    received_at: datetime
    method: str
    path: str
    body: Any
    status_code: int
    response: Any


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
