"""``pesa serve``, ``pesa worker``, ``pesa db upgrade`` and ``pesa demo``: running the gateway."""

from __future__ import annotations

import logging
import signal
import socket
import sys
from typing import Annotated, Any

import anyio
import typer
from pydantic import ValidationError as PydanticValidationError

from pesa._exceptions import ConfigurationError, PesaError
from pesa._logging import configure_logging
from pesa._net import listen_socket
from pesa.cli._app import app, console, fail, require_server
from pesa.config import Settings
from pesa.config._settings import configuration_error

__all__ = ["bind_socket", "db_app", "load_settings"]

db_app = typer.Typer(help="The ledger database.", no_args_is_help=True)
_SPARE_DESCRIPTORS = 256
app.add_typer(db_app, name="db")


def load_settings(flags: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Read ``PESA_*`` settings, with command-line flags (not ``None``) taking precedence.

    Args:
        flags: setting name → the flag it came from, so that an error names ``--port``
            rather than ``PESA_GATEWAY_PORT`` when the flag was given.
    """
    given = {name: value for name, value in overrides.items() if value is not None}
    named = {name: flag for name, flag in (flags or {}).items() if name in given}
    try:
        return Settings(**given)
    except ConfigurationError as err:
        cause = err.__context__
        if isinstance(cause, PydanticValidationError):
            fail(str(configuration_error(cause, named)))
        fail(str(err))


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket (port 0 picks a free one), for uvicorn to serve on.

    Made by :func:`pesa._net.listen_socket`, so accepted connections have TCP_NODELAY.
    """
    try:
        return listen_socket(host, port)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to bind (env PESA_GATEWAY_HOST)")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port to bind, 0 for any free (env PESA_GATEWAY_PORT)")
    ] = None,
    workers: Annotated[
        bool | None,
        typer.Option(
            "--workers/--no-workers",
            help="run the reconciler and webhook dispatcher here (env PESA_RUN_WORKERS)",
        ),
    ] = None,
    migrate: Annotated[
        bool | None,
        typer.Option(
            "--migrate/--no-migrate",
            help="apply database migrations at start (env PESA_AUTO_MIGRATE)",
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            min=1,
            help="gateway processes sharing the port (one core each); the background "
            "workers run in the first",
        ),
    ] = 1,
) -> None:
    """Run the gateway: REST API, callback route, workers (and the emulator, in emulator)."""
    require_server("serve")
    import uvicorn

    from pesa.gateway import create_app
    from pesa.gateway._app import check_settings, daraja_url
    from pesa.gateway._callbacks import CallbackPathFilter
    from pesa.gateway._server import raise_open_file_limit, server_config

    settings = load_settings(
        {"gateway_host": "--host", "gateway_port": "--port"},
        gateway_host=host,
        gateway_port=port,
        run_workers=workers,
        auto_migrate=migrate,
    )
    # Callback URLs carry the secret token: keep it out of every log line (pesa's own,
    # the client's request logs, uvicorn's access log).
    configure_logging(settings.log).addFilter(CallbackPathFilter())
    try:
        check_settings(settings)
    except ConfigurationError as err:
        fail(str(err))
    if processes > 1:
        _check_processes(settings)
    if settings.auto_migrate:
        # Before uvicorn starts, so that an unreachable database is one clear line.
        _migrate(settings)
    else:
        _check_database(settings)
    sock = bind_socket(settings.gateway_host, settings.gateway_port)
    actual_port = sock.getsockname()[1]
    settings = settings.model_copy(update={"gateway_port": actual_port, "auto_migrate": False})
    try:
        gateway = create_app(settings)
    except ConfigurationError as err:
        sock.close()
        fail(str(err))
    urls = gateway.state.urls
    shown_callback = (
        urls.callback
        if settings.env == "emulator"
        else urls.callback.replace(settings.require("callback_token"), "<PESA_CALLBACK_TOKEN>")
    )
    console.print(f"pesa gateway ({settings.env})", highlight=False, soft_wrap=True)
    console.print(f"  API:       {urls.public}/v1/payments", highlight=False, soft_wrap=True)
    console.print(f"  docs:      {urls.public}/docs", highlight=False, soft_wrap=True)
    if settings.dashboard:
        console.print(
            f"  dashboard: {urls.public}/dashboard (add operators: pesa operator add NAME)",
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"  callbacks: {shown_callback}", highlight=False, soft_wrap=True)
    if urls.emulator is not None:
        console.print(f"  emulator:  {urls.emulator}", highlight=False, soft_wrap=True)
    console.print(
        f"  database:  {_safe_url(settings.database_url)}", highlight=False, soft_wrap=True
    )
    console.print(f"  Daraja:    {daraja_url(settings)}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    # Access logs show request paths, and callback paths carry the secret token.
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(CallbackPathFilter())
    # Every connection holds a descriptor: PESA_MAX_CONNECTIONS of them, plus the
    # database pool, the Daraja client and webhook deliveries.
    raise_open_file_limit(settings.max_connections + _SPARE_DESCRIPTORS)
    options: dict[str, Any] = {
        "log_level": settings.log.lower(),
        "access_log": settings.log.lower() == "debug",
        "timeout_graceful_shutdown": 10,
    }
    if processes > 1:
        from pesa.gateway._processes import serve_processes

        console.print(f"  processes: {processes}", highlight=False)
        sys.stdout.flush()
        try:
            status = serve_processes(settings, sock, processes, **options)
        finally:
            sock.close()
        if status:
            fail("a gateway process did not start (see the error above)")
        return
    config = server_config(gateway, settings, **options)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        fail("the gateway did not start (see the error above)")


def _check_processes(settings: Settings) -> None:
    """What several gateway processes need: state they all see (exit with one line if not)."""
    if settings.env == "emulator" and settings.base_url is None:
        fail(
            "--processes above 1 in the emulator environment needs PESA_BASE_URL: each "
            "process would mount an emulator of its own, and a push answered by one would "
            "be unknown to the others (run `pesa emulator` and point PESA_BASE_URL at it)"
        )
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        fail(
            "--processes above 1 needs a database the processes share: an in-memory SQLite "
            "database is one per process (PESA_DATABASE_URL)"
        )


def _callback_path_filter() -> logging.Filter:
    from pesa.gateway._callbacks import CallbackPathFilter

    return CallbackPathFilter()


def _safe_url(url: str) -> str:
    # Never print a database password.
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable PESA_DATABASE_URL>"


@app.command()
def worker() -> None:
    """Run the reconciler and webhook dispatcher without the API (for extra processes)."""
    require_server("worker")
    from pesa.gateway._app import check_worker_settings

    settings = load_settings()
    configure_logging(settings.log).addFilter(_callback_path_filter())
    try:
        # The reconciler's queries need the Daraja credentials of every account: say so
        # now, not at the first query.
        check_worker_settings(settings)
    except ConfigurationError as err:
        fail(str(err))
    _check_database(settings)
    from pesa.gateway._app import daraja_url, gateway_urls

    say = console.print
    say(
        f"pesa worker ({settings.env}): reconciler, webhook dispatcher and receipt verifier",
        highlight=False,
    )
    say(f"  database:  {_safe_url(settings.database_url)}", highlight=False, soft_wrap=True)
    say(f"  Daraja:    {daraja_url(settings)}", highlight=False, soft_wrap=True)
    say(f"  public:    {gateway_urls(settings, '-').public}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    anyio.run(_run_worker, settings)


async def _run_worker(settings: Settings) -> None:
    from pesa.gateway._app import run_workers

    stop = anyio.Event()

    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stop.set()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)
        await run_workers(settings, stop)
        tg.cancel_scope.cancel()


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _check_database(settings: Settings) -> None:
    """Exit with one line unless the database answers and is migrated (before any banner)."""

    async def probe() -> tuple[str | None, str]:
        from pesa.ledger import Ledger, current_revision, head_revision

        with anyio.fail_after(20):
            ledger = await Ledger.open(settings.database_url)
            try:
                return await current_revision(ledger.engine), head_revision()
            finally:
                await ledger.close()

    where = _safe_url(settings.database_url)
    try:
        current, head = anyio.run(probe)
    except PesaError as err:
        fail(f"cannot use the database {where}: {err}")
    except Exception as err:
        fail(
            f"cannot reach the database {where}: {_reason(err)} "
            "(is it running? check PESA_DATABASE_URL)"
        )
    if current != head:
        fail(
            f"the database {where} is at schema {current or 'none'}, not {head}: "
            "run `pesa db upgrade` (or start `pesa serve` without --no-migrate)"
        )


def _migrate(settings: Settings) -> None:
    async def upgrade() -> None:
        from pesa.ledger import Ledger

        ledger = await Ledger.open(settings.database_url)
        try:
            await ledger.migrate()
        finally:
            await ledger.close()

    try:
        anyio.run(upgrade)
    except Exception as err:
        # One line: the database URL (password hidden) and what went wrong.
        fail(f"cannot migrate the database {_safe_url(settings.database_url)}: {_reason(err)}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the ledger database to the latest schema (PESA_DATABASE_URL)."""
    require_server("db upgrade")
    settings = load_settings()
    _migrate(settings)
    console.print(f"database is up to date: {_safe_url(settings.database_url)}", highlight=False)


@app.command()
def demo(
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for every payment to settle")
    ] = 40.0,
) -> None:
    """Walk one payment through each emulator scenario end to end (no configuration needed).

    Exits 0 only if every payment ended as its scenario promises.
    """
    require_server("demo")
    from rich.console import Console
    from rich.table import Table

    from pesa.cli._demo import run_demo

    console.print("pesa demo: gateway + emulator + SQLite on a free loopback port ...")
    results, notes, receipts, sections = anyio.run(lambda: run_demo(timeout=timeout))
    table = Table(title="pesa demo: one payment per emulator scenario", title_justify="left")
    for column in ("scenario", "phone", "lifecycle", "code", "callbacks", "receipt", "check"):
        # Ids and codes are copied by people: never split them across lines.
        table.add_column(column, overflow="fold", no_wrap=column in ("phone", "code", "receipt"))
    for result in results:
        payment = result.payment
        table.add_row(
            result.scenario.name,
            result.scenario.phone,
            " → ".join(result.lifecycle),
            str(payment.get("result_code") or "-"),
            str(result.callbacks),
            str(payment.get("receipt") or "-"),
            "[green]ok[/]" if result.ok else "[red]" + "; ".join(result.problems) + "[/]",
        )
    # Piped output (make demo in CI) defaults to 80 columns, which folds every row.
    wide = console if console.width >= 120 else Console(width=120)
    wide.print(table)
    wide.print(_receipts_table(receipts))
    for note in notes:
        console.print(note, highlight=False)
    for section in sections:
        extra = Table(title=section.title, title_justify="left")
        for column in section.columns:
            extra.add_column(column, overflow="fold", no_wrap=column in ("id", "receipt", "KES"))
        for row in section.rows:
            extra.add_row(*row)
        wide.print(extra)
    failed = [r for r in results if not r.ok] + [r for r in receipts if not r.ok]
    bad_notes = [n for n in notes if "FAILED" in n]
    bad_flows = [p for section in sections for p in section.problems]
    total = len(results) + len(receipts)
    if failed or bad_notes:
        fail(f"{len(failed)} of {total} payments did not end as expected")
    if bad_flows:
        fail(f"{len(bad_flows)} other flow(s) did not end as expected: {'; '.join(bad_flows)}")
    console.print(f"[bold green]all {total} payments ended as expected[/]")
    flows = sum(len(section.rows) for section in sections)
    console.print(f"[bold green]all {flows} money-out flows ended as expected[/]")


def _receipts_table(receipts: list[Any]) -> Any:
    """The receipts part of ``pesa demo``: customers paying the PayBill from the menu."""
    from rich.table import Table

    table = Table(
        title="pesa demo: customers pay PayBill 600997 from the phone menu (C2B)",
        title_justify="left",
    )
    for column in ("scenario", "typed", "expected", "paid", "receipt", "settled", "check"):
        table.add_column(column, overflow="fold", no_wrap=column in ("typed", "receipt"))
    for result in receipts:
        scenario, receipt, expected = result.scenario, result.receipt or {}, result.expected_payment
        table.add_row(
            scenario.name,
            scenario.typed,
            "-" if scenario.expected is None else f"{scenario.expected} ({scenario.reference})",
            str(scenario.paid),
            f"{receipt.get('trans_id', '-')} {receipt.get('status', '')}".strip(),
            expected["status"] if expected else "unmatched",
            "[green]ok[/]" if result.ok else "[red]" + "; ".join(result.problems) + "[/]",
        )
    return table
