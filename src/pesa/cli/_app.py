"""The ``pesa`` command: the Typer app every subcommand module registers on."""

from __future__ import annotations

import json
from contextvars import ContextVar
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from pesa._exceptions import PesaError
from pesa._version import __version__

__all__ = [
    "app",
    "console",
    "err_console",
    "fail",
    "json_output",
    "print_json",
    "require_server",
]

# What `pip install 'pesa[server]'` adds, as import names.
_SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "aiosqlite")

# Set while a command runs with --json: its errors are JSON too.
_JSON_ERRORS: ContextVar[bool] = ContextVar("pesa_cli_json_errors", default=False)


class _PesaGroup(TyperGroup):
    """The root command group: a :class:`pesa.PesaError` anywhere is one line and exit 1."""

    def invoke(self, ctx: Any) -> Any:
        if ctx.parent is None:
            # Before the subcommand parses its options: any --json on the line counts.
            protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
            _JSON_ERRORS.set("--json" in [*protected, *ctx.args])
        try:
            return super().invoke(ctx)
        except PesaError as err:
            fail(str(err), kind=type(err).__name__)


app = typer.Typer(
    name="pesa",
    cls=_PesaGroup,
    help="M-Pesa payments you can trust: Daraja client, gateway and emulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain click help: readable at 80 columns, no truncated option names.
    rich_markup_mode=None,
)
console = Console()
# Errors are one line whatever the terminal width: never wrapped (logs, CI, pipes).
err_console = Console(stderr=True, soft_wrap=True)


def json_output(enabled: bool) -> None:
    """Mark the running command as ``--json``: :func:`fail` then prints JSON."""
    _JSON_ERRORS.set(enabled)


def fail(message: str, code: int = 1, *, kind: str = "error") -> NoReturn:
    """Print one clear error line on stderr and exit non-zero (never a traceback).

    With ``--json`` the error is a JSON object on stdout instead:
    ``{"error": {"type": ..., "message": ...}}``, so that scripts parse one stream.
    """
    if _JSON_ERRORS.get():
        print_json({"error": {"type": kind, "message": message, "exit_code": code}})
    else:
        # Escaped: messages carry brackets ("[400.002.02]", "pesa[server]") that are not markup.
        err_console.print(
            f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True
        )
    raise typer.Exit(code)


def require_server(command: str) -> None:
    """Exit with one line if the ``[server]`` extra is not installed (``pesa serve`` etc.)."""
    from importlib.util import find_spec

    missing = [name for name in _SERVER_MODULES if find_spec(name) is None]
    if missing:
        fail(
            f"`pesa {command}` needs the server extra (missing: {', '.join(missing)}): "
            "pip install 'pesa[server]'",
            kind="MissingExtraError",
        )


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout, for ``--json`` output and scripts."""
    console.print_json(json.dumps(data, default=str))


def _show_version(value: bool) -> None:
    if value:
        console.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="print pesa's version and exit",
        ),
    ] = False,
) -> None:
    """M-Pesa payments you can trust: Daraja client, gateway and emulator."""
    del version


@app.command()
def version() -> None:
    """Print pesa's version."""
    console.print(__version__, highlight=False)
