"""Helpers for testing code that uses pesa: frozen clocks, payload builders, a local emulator.

Shipped with the package because users' own test suites need them too.
"""

__all__: list[str] = []
