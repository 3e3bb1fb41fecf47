"""``pesa payouts send payouts.csv``: a bulk payout through a running gateway.

The file is posted as one batch (``POST /v1/payouts/batches``); the gateway commits every
row before sending any and sends them at ``PESA_PAYOUT_RATE``. The batch id is derived
from the file's content, so running the command again on the same file (after a crash of
this command or of the gateway) resumes the same batch: rows already stored are not stored
again, and no one is paid twice. A progress bar follows the batch; at the end a summary is
printed and every row's outcome written to a results CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pesa.cli._app import app, console, fail
from pesa.cli._gateway import load_settings

__all__ = ["RESULT_COLUMNS", "batch_id_of", "payouts_app", "read_rows", "send"]

payouts_app = typer.Typer(help="B2C payouts through a running gateway.", no_args_is_help=True)
app.add_typer(payouts_app, name="payouts")

REQUIRED = ("phone", "amount", "remarks")
OPTIONAL = ("command", "occasion", "account")
RESULT_COLUMNS = (
    "row",
    "phone",
    "amount",
    "status",
    "receipt",
    "recipient_name",
    "result_code",
    "failure_reason",
    "flagged",
    "payout_id",
)
_FINAL = ("succeeded", "failed", "rejected")
_MAX_ROWS = 10_000


def batch_id_of(content: bytes) -> str:
    """The batch id of a CSV file: its content's digest (the same file resumes the batch)."""
    return "csv-" + hashlib.sha256(content).hexdigest()[:24]


def read_rows(content: bytes) -> list[dict[str, Any]]:
    """Parse the CSV into batch rows, or raise ``typer.BadParameter`` naming the line.

    Columns: ``phone``, ``amount`` (whole shillings), ``remarks``; optional ``command``
    (BusinessPayment, SalaryPayment, PromotionPayment), ``occasion``, ``account``.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise typer.BadParameter("the file is not UTF-8 text") from err
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip().lower() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise typer.BadParameter(
            f"the header needs the columns {', '.join(REQUIRED)} (missing: {', '.join(missing)})"
        )
    unknown = [name for name in header if name not in (*REQUIRED, *OPTIONAL)]
    if unknown:
        raise typer.BadParameter(f"unknown column(s): {', '.join(unknown)}")
    rows: list[dict[str, Any]] = []
    for line, raw in enumerate(reader, start=2):
        record = {(key or "").strip().lower(): (value or "").strip() for key, value in raw.items()}
        if not any(record.values()):
            continue
        amount = record.get("amount", "")
        if not amount.isascii() or not amount.isdigit():
            raise typer.BadParameter(f"line {line}: amount must be whole shillings, got {amount!r}")
        row: dict[str, Any] = {
            "phone": record["phone"],
            "amount": int(amount),
            "remarks": record["remarks"],
        }
        for name in OPTIONAL:
            if record.get(name):
                row[name] = record[name]
        rows.append(row)
    if not rows:
        raise typer.BadParameter("the file has no rows")
    if len(rows) > _MAX_ROWS:
        raise typer.BadParameter(f"at most {_MAX_ROWS} rows per file")
    return rows


@payouts_app.command("send")
def send(
    path: Annotated[
        Path, typer.Argument(help="CSV: phone,amount,remarks[,command,occasion,account]")
    ],
    url: Annotated[
        str | None,
        typer.Option(help="the gateway's URL (default: PESA_GATEWAY_HOST:PESA_GATEWAY_PORT)"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="the gateway's API key [PESA_API_KEY]")
    ] = None,
    batch_id: Annotated[
        str | None, typer.Option(help="the batch id (default: derived from the file's content)")
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option(help="where to write the results CSV (default: <file>.results.csv)"),
    ] = None,
    wait: Annotated[
        float, typer.Option(help="seconds to wait for every row to settle (0: do not wait)")
    ] = 600.0,
) -> None:
    """Pay every row of a CSV file, at the gateway's configured rate, resumably.

    Exit status: 0 when every row succeeded, 2 when every row is final but some failed or
    were rejected, 1 on an error or when rows are still open after ``--wait``.
    """
    settings = load_settings()
    try:
        content = path.read_bytes()
    except OSError as err:
        fail(f"cannot read {path}: {err.strerror or err}")
    try:
        rows = read_rows(content)
    except typer.BadParameter as err:
        fail(f"{path}: {err}")
    batch = batch_id or batch_id_of(content)
    base = (url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    out = results or path.with_name(f"{path.stem}.results.csv")
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        summary = _post(http, batch, rows)
        resumed = summary["created"] < summary["total"]
        console.print(
            f"batch [bold]{batch}[/]: {summary['total']} rows"
            + (
                f" ({summary['total'] - summary['created']} already stored: resumed)"
                if resumed
                else ""
            ),
            highlight=False,
        )
        if wait > 0:
            summary = _follow(http, batch, summary, wait)
        payouts = _rows(http, batch)
    _write_results(out, payouts)
    _print_summary(summary)
    console.print(f"results: {out}", highlight=False)
    open_rows = summary["total"] - summary["settled"]
    if open_rows:
        fail(f"{open_rows} row(s) not settled yet: run the same command again to follow them")
    if summary["by_status"].get("succeeded", 0) != summary["total"]:
        raise typer.Exit(2)


def _error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("message") or error)
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _post(http: httpx.Client, batch: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    try:
        response = http.post("/v1/payouts/batches", json={"batch_id": batch, "payouts": rows})
    except httpx.HTTPError as err:
        fail(f"cannot reach the gateway at {http.base_url}: {err}")
    if response.status_code == 422:
        message = _error(response)
        field = str(response.json()["error"].get("field") or "")
        row = re.match(r"payouts\.(\d+)\.", field)
        if row is not None:
            fail(f"line {int(row.group(1)) + 2}: {message}")
        fail(message)
    if response.status_code >= 400:
        fail(f"the gateway refused the batch: {_error(response)}")
    summary: dict[str, Any] = response.json()
    return summary


def _follow(http: httpx.Client, batch: str, summary: dict[str, Any], wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    columns = (
        TextColumn("[bold]paying[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("paying", total=summary["total"], detail="")
        while True:
            progress.update(task, completed=summary["settled"], detail=_detail(summary))
            if summary["settled"] >= summary["total"] or time.monotonic() >= deadline:
                return summary
            time.sleep(0.5)
            try:
                response = http.get(f"/v1/payouts/batches/{batch}")
            except httpx.HTTPError:
                continue  # the gateway restarting: keep following
            if response.status_code == 200:
                summary = response.json()


def _detail(summary: dict[str, Any]) -> str:
    counts = summary["by_status"]
    shown = [f"{name} {counts[name]}" for name in counts if counts.get(name)]
    return ", ".join(shown)


def _rows(http: httpx.Client, batch: str) -> list[dict[str, Any]]:
    payouts: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"batch_id": batch, "limit": 500}
        if cursor:
            params["cursor"] = cursor
        response = http.get("/v1/payouts", params=params)
        if response.status_code != 200:
            fail(f"cannot list the batch's payouts: {_error(response)}")
        page = response.json()
        payouts.extend(page["data"])
        cursor = page["next_cursor"]
        if not cursor:
            return payouts


def _write_results(path: Path, payouts: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(RESULT_COLUMNS)
        for payout in payouts:
            writer.writerow(
                [
                    payout.get("batch_row"),
                    payout.get("phone"),
                    payout.get("amount"),
                    payout.get("status"),
                    payout.get("receipt") or "",
                    payout.get("recipient_name") or "",
                    payout.get("result_code") or "",
                    payout.get("failure_reason") or "",
                    "yes" if payout.get("flagged") else "",
                    payout.get("id"),
                ]
            )


def _print_summary(summary: dict[str, Any]) -> None:
    console.print(f"batch {summary['batch_id']}:", highlight=False)
    table = Table()
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("KES", justify="right")
    for status, count in summary["by_status"].items():
        if count:
            table.add_row(status, str(count), f"{summary['amount_by_status'].get(status, 0):,}")
    table.add_row("[bold]total[/]", str(summary["total"]), "")
    console.print(table)
