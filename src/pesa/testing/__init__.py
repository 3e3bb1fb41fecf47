"""Helpers for testing code that uses pesa: frozen clocks, payload builders, a local emulator.

Shipped with the package because users' own test suites need them too.
"""

from pesa.testing._client import (
    FrozenClock,
    c2b_payment_payload,
    result_payload,
    stk_callback_payload,
    stk_failure_payload,
    transaction_status_payload,
)
from pesa.testing._emulator import RunningEmulator, run_emulator, serve_emulator
from pesa.testing._gateway import RunningGateway, run_gateway, serve_gateway
from pesa.testing._webhooks import signed_webhook, webhook_event

__all__ = [
    "FrozenClock",
    "RunningEmulator",
    "RunningGateway",
    "c2b_payment_payload",
    "result_payload",
    "run_emulator",
    "run_gateway",
    "serve_emulator",
    "serve_gateway",
    "signed_webhook",
    "stk_callback_payload",
    "stk_failure_payload",
    "transaction_status_payload",
    "webhook_event",
]
