"""A faithful local Daraja: its endpoints, callbacks, scenarios, faults and control API.

Example:
    >>> from pesa.emulator import Emulator, EmulatorConfig
    >>> emulator = Emulator(EmulatorConfig(stk_delay=0.1, seed=42))
    >>> # async with emulator: serve or mount emulator.app; see docs/emulator.md
"""

from pesa.emulator._control import AsyncEmulatorControl, EmulatorControl, EmulatorControlError
from pesa.emulator._crypto import CredentialKeys, TlsFiles, credential_keys, tls_files
from pesa.emulator._emulator import Emulator, create_app, nairobi_now
from pesa.emulator._models import (
    SANDBOX_PASSKEY,
    SANDBOX_STK_SHORTCODE,
    C2BPay,
    C2BPayment,
    DeliveryAttempt,
    EmulatorConfig,
    Fault,
    ReceivedRequest,
    Rule,
    SentCallback,
    config_from_settings,
)
from pesa.emulator._rules import Scenario
from pesa.emulator._stk import SCENARIOS

__all__ = [
    "SANDBOX_PASSKEY",
    "SANDBOX_STK_SHORTCODE",
    "SCENARIOS",
    "AsyncEmulatorControl",
    "C2BPay",
    "C2BPayment",
    "CredentialKeys",
    "DeliveryAttempt",
    "Emulator",
    "EmulatorConfig",
    "EmulatorControl",
    "EmulatorControlError",
    "Fault",
    "ReceivedRequest",
    "Rule",
    "Scenario",
    "SentCallback",
    "TlsFiles",
    "config_from_settings",
    "create_app",
    "credential_keys",
    "nairobi_now",
    "tls_files",
]
