"""The error of the testing helpers."""

from __future__ import annotations

from pesa._exceptions import PesaError

__all__ = ["StartupError"]


class StartupError(PesaError, RuntimeError):
    """A server started by a testing helper (emulator, gateway) did not come up in time."""
