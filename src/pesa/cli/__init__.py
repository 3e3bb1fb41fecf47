"""The ``pesa`` command line: ``pesa --help`` lists every subcommand."""

from __future__ import annotations

import sys

from pesa._exceptions import PesaError
from pesa.cli import (
    _client,  # noqa: F401  (registers `pesa token`, `pesa stk`)
    _emulator,  # noqa: F401  (registers `pesa emulator`)
    _gateway,  # noqa: F401  (registers `pesa serve|worker|db|demo`)
    _payouts,  # noqa: F401  (registers `pesa payouts send`)
)
from pesa.cli._app import app, err_console

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``pesa`` script: one clear line and exit 1 on any pesa error."""
    try:
        app()
    except PesaError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(1)
