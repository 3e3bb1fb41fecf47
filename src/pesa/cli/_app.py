"""The ``pesa`` command: the Typer app every subcommand module registers on."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import typer
from rich.console import Console

from pesa._version import __version__

__all__ = ["app", "console", "err_console", "fail", "print_json"]

app = typer.Typer(
    name="pesa",
    help="M-Pesa payments you can trust: Daraja client, gateway and emulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
# Errors are one line whatever the terminal width: never wrapped (logs, CI, pipes).
err_console = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear error line on stderr and exit non-zero (never a traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout, for ``--json`` output and scripts."""
    console.print_json(json.dumps(data, default=str))


@app.callback()
def _root() -> None:
    """M-Pesa payments you can trust: Daraja client, gateway and emulator."""


@app.command()
def version() -> None:
    """Print pesa's version."""
    console.print(__version__)
