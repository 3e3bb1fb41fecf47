"""Helpers for testing code that uses pesa: frozen clocks, payload builders, a local emulator.

Shipped with the package because users' own test suites need them too. The client-side
helpers (the frozen clock, payload builders, signed webhooks) need nothing beyond
``pip install pesa``; the servers (:func:`run_emulator`, :func:`run_gateway`, ...) need
``pip install 'pesa[server]'`` and are imported when first used.
"""

from __future__ import annotations

import typing as _typing

from pesa.testing._client import (
    FrozenClock,
    c2b_payment_payload,
    result_payload,
    stk_callback_payload,
    stk_failure_payload,
    transaction_status_payload,
)
from pesa.testing._errors import StartupError
from pesa.testing._webhooks import signed_webhook, webhook_event

if _typing.TYPE_CHECKING:
    from pesa.testing._emulator import RunningEmulator, run_emulator, serve_emulator
    from pesa.testing._gateway import RunningGateway, run_gateway, serve_gateway

__all__ = [
    "FrozenClock",
    "RunningEmulator",
    "RunningGateway",
    "StartupError",
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

_SERVERS = {
    "RunningEmulator": "pesa.testing._emulator",
    "run_emulator": "pesa.testing._emulator",
    "serve_emulator": "pesa.testing._emulator",
    "RunningGateway": "pesa.testing._gateway",
    "run_gateway": "pesa.testing._gateway",
    "serve_gateway": "pesa.testing._gateway",
}


def __getattr__(name: str) -> _typing.Any:
    # The server helpers need the [server] extra: imported on first use, so that the
    # client-side helpers work with `pip install pesa` alone.
    module = _SERVERS.get(name)
    if module is None:
        raise AttributeError(f"module 'pesa.testing' has no attribute {name!r}")
    from importlib import import_module

    try:
        value = getattr(import_module(module), name)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"pesa.testing.{name} runs a server and needs the server extra "
            f"(missing module {err.name!r}): pip install 'pesa[server]'"
        ) from err
    globals()[name] = value
    return value
