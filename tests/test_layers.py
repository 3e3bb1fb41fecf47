"""The layers import downwards only: the gateway needs neither the emulator nor pesa.testing."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("pesa.gateway", ("pesa.emulator", "pesa.testing", "pesa.cli")),
        ("pesa.ledger", ("pesa.emulator", "pesa.testing", "pesa.gateway", "pesa.client")),
        ("pesa.client", ("pesa.emulator", "pesa.testing", "pesa.gateway", "pesa.ledger")),
        ("pesa.daraja", ("pesa.client", "pesa.emulator", "pesa.gateway", "pesa.ledger")),
        ("pesa.gateway_client", ("pesa.gateway.", "pesa.ledger", "fastapi", "sqlalchemy")),
        ("pesa", ("pesa.emulator", "pesa.gateway.", "pesa.ledger", "fastapi", "sqlalchemy")),
    ],
)
def test_importing_a_layer_does_not_import_what_sits_above_it(
    module: str, forbidden: tuple[str, ...]
) -> None:
    # ``import pesa`` comes first whatever is imported: its own imports are checked by the
    # ``pesa`` case, the others look at what the layer adds.
    code = (
        "import sys, importlib\n"
        "import pesa\n"
        f"before = set(sys.modules) if {module!r} != 'pesa' else set()\n"
        f"importlib.import_module({module!r})\n"
        f"bad = sorted(m for m in set(sys.modules) - before if m.startswith({forbidden!r}))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert out == "", f"importing {module} imported {out}"
