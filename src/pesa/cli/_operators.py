"""``pesa operator add|list|remove``: who may sign in to the dashboard at ``/dashboard``."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
import typer

from pesa._exceptions import ValidationError
from pesa.cli._app import app, console, fail, require_server
from pesa.cli._gateway import load_settings

if TYPE_CHECKING:
    from pesa.config import Settings
    from pesa.ledger import OperatorStore

__all__ = ["operator_app"]

operator_app = typer.Typer(
    help="Dashboard operators: who may sign in to /dashboard.", no_args_is_help=True
)
app.add_typer(operator_app, name="operator")

_T = TypeVar("_T")


def _with_store(settings: Settings, work: Callable[[OperatorStore], Awaitable[_T]]) -> _T:
    require_server("operator")
    from pesa.ledger import Ledger, OperatorStore

    async def run() -> _T:
        ledger = await Ledger.open(settings.database_url)
        try:
            if settings.auto_migrate:
                await ledger.migrate()
            return await work(OperatorStore(ledger.engine))
        finally:
            await ledger.close()

    return anyio.run(run)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        # One line, as `docker login --password-stdin` reads it; the newline is not part of it.
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@operator_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="the name to sign in with")],
    role: Annotated[
        str, typer.Option(help="viewer (reads everything) or operator (also acts)")
    ] = "viewer",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(help="reset an existing operator's role and password (signs them out)"),
    ] = False,
) -> None:
    """Add a dashboard operator (the password is asked for, or read from stdin)."""
    from pesa.ledger import OperatorExistsError

    if role not in ("viewer", "operator"):
        fail(f"--role must be viewer or operator, not {role!r}")
    settings = load_settings()
    password = _read_password(password_stdin)
    try:
        operator = _with_store(
            settings,
            lambda store: store.add_operator(
                name,
                "operator" if role == "operator" else "viewer",
                password,
                replace=replace,
            ),
        )
    except ValidationError as err:
        fail(str(err))
    except OperatorExistsError as err:
        fail(f"{err}; pass --replace to reset their role and password")
    console.print(
        f"operator {operator.name} ({operator.role}) can sign in at /dashboard", highlight=False
    )


@operator_app.command("list")
def list_operators() -> None:
    """List the dashboard operators."""
    settings = load_settings()
    operators = _with_store(settings, lambda store: store.list_operators())
    if not operators:
        console.print("no operators yet: pesa operator add NAME --role operator", highlight=False)
        return
    for operator in operators:
        state = " (disabled)" if operator.disabled else ""
        console.print(
            f"{operator.name}\t{operator.role}{state}\tsince {operator.created_at:%Y-%m-%d}",
            highlight=False,
        )


@operator_app.command("remove")
def remove(name: Annotated[str, typer.Argument(help="the operator to remove")]) -> None:
    """Remove a dashboard operator (their sessions end at once)."""
    settings = load_settings()
    if not _with_store(settings, lambda store: store.remove_operator(name)):
        fail(f"no operator named {name!r}")
    console.print(f"operator {name} removed", highlight=False)
