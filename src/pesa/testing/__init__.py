"""Helpers for testing code that uses pesa: frozen clocks, payload builders, a local emulator.

Shipped with the package because users' own test suites need them too.
"""

from pesa.testing._emulator import RunningEmulator, run_emulator, serve_emulator

__all__: list[str] = ["RunningEmulator", "run_emulator", "serve_emulator"]
