"""Helpers for testing code that uses pesa: frozen clocks, payload builders, a local emulator.

Shipped with the package because users' own test suites need them too.
"""

from pesa.testing._client import (
    FrozenClock,
    c2b_payment_payload,
    result_payload,
    stk_callback_payload,
    stk_failure_payload,
)

__all__ = [
    "FrozenClock",
    "c2b_payment_payload",
    "result_payload",
    "stk_callback_payload",
    "stk_failure_payload",
]
