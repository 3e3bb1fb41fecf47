"""``pesa c2b register``: register the gateway's C2B URLs with Daraja, on demand.

The URLs are the gateway's own (``<PESA_PUBLIC_URL>/callbacks/<PESA_CALLBACK_TOKEN>/c2b/...``),
so the command needs the same settings as ``pesa serve``. Errors are one clear line (or one
line per account) and a non-zero exit, never a traceback.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import typer
from rich.table import Table

from pesa._exceptions import ConfigurationError, PesaError
from pesa._logging import configure_logging
from pesa.cli._app import app, console, fail, print_json
from pesa.cli._gateway import load_settings

__all__ = ["c2b_app", "register"]

c2b_app = typer.Typer(
    help="C2B: customers paying your PayBill or Till from the phone's menu.",
    no_args_is_help=True,
)
app.add_typer(c2b_app, name="c2b")


@c2b_app.command()
def register(
    account: Annotated[
        list[str] | None,
        typer.Option(
            "--account",
            "-a",
            help="account to register (repeatable); default: every account with "
            "c2b_register, else the default account",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Register the gateway's C2B confirmation and validation URLs with Daraja.

    Uses each account's shortcode, C2B version (c2b_version) and ResponseType
    (c2b_response_type). Production registers once: "already registered" counts as done.
    """
    from pesa.gateway._accounts import AccountClients, effective_accounts
    from pesa.gateway._app import gateway_urls

    settings = load_settings()
    configure_logging(settings.log)
    try:
        accounts = effective_accounts(settings)
        token = settings.callback_token
        if token is None or not token.get_secret_value().strip():
            raise ConfigurationError(
                "callback_token is required: the C2B URLs carry it (set PESA_CALLBACK_TOKEN "
                "to the gateway's; in emulator `pesa serve` makes a random one otherwise)"
            )
        secret = token.get_secret_value()
        if settings.env != "emulator":
            settings.require("public_url")
        names = (
            account
            or [name for name, a in accounts.items() if a.c2b_register]
            or [accounts.default_name]
        )
        chosen = [accounts.resolve(name) for name in names]
    except PesaError as err:
        fail(str(err))
    urls = gateway_urls(settings, secret)

    async def run() -> list[dict[str, Any]]:
        from pesa.gateway._receipts import register_c2b_urls

        clients = AccountClients.build(settings, accounts)
        results = []
        try:
            for item in chosen:
                row: dict[str, Any] = {
                    "account": item.name,
                    "shortcode": item.shortcode,
                    "version": item.c2b_version,
                    "response_type": item.c2b_response_type,
                }
                try:
                    done, detail = await register_c2b_urls(clients, item, urls)
                except PesaError as err:
                    done, detail = False, str(err)
                row.update(registered=done, detail=detail)
                results.append(row)
        finally:
            await clients.aclose()
        return results

    results = anyio.run(run)
    shown = urls.c2b_confirmation.replace(secret, "<token>")
    if json_output:
        print_json({"confirmation_url": shown, "results": results})
    else:
        table = Table(title=f"C2B URLs ({shown.rsplit('/', 1)[0]}/...)", title_justify="left")
        for column in ("account", "shortcode", "version", "result"):
            table.add_column(column, no_wrap=column != "result")
        for row in results:
            mark = "[green]registered[/]" if row["registered"] else "[red]failed[/]"
            table.add_row(
                row["account"],
                str(row["shortcode"]),
                f"v{row['version']}",
                f"{mark}: {row['detail']}",
            )
        console.print(table)
    failed = [r["account"] for r in results if not r["registered"]]
    if failed:
        fail(f"not registered: {', '.join(failed)}")
