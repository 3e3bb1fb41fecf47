"""The entry point of the ``pesa`` script."""

from __future__ import annotations

import sys

from pesa._exceptions import PesaError
from pesa.cli._app import app, err_console

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``pesa`` script: one clear line and exit 1 on any pesa error."""
    try:
        app()
    except PesaError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False)
        sys.exit(1)
