"""``pesa payments``, ``pesa events tail``, ``pesa listen``, ``pesa trigger``: a gateway in a shell.

They speak to a running gateway (``pesa serve``) through its REST API with
:class:`pesa.gateway_client.GatewayClient`: its URL is ``--gateway-url``, else
``PESA_PUBLIC_URL``, else ``PESA_GATEWAY_HOST``/``PESA_GATEWAY_PORT``; its key
``--api-key`` or ``PESA_API_KEY``. None of them needs the ``[server]`` extra.
"""

from __future__ import annotations

import secrets
import signal
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Final

import httpx
import typer
from rich.table import Table

from pesa._logging import mask_phone
from pesa.cli._app import app, console, fail, json_output, print_json
from pesa.config import Settings
from pesa.gateway_client import EventOut, GatewayClient, PaymentOut

__all__ = ["events_app", "listen", "payments_app", "trigger"]

payments_app = typer.Typer(help="Payments of a running gateway.", no_args_is_help=True)
events_app = typer.Typer(help="The event log of a running gateway.", no_args_is_help=True)
app.add_typer(payments_app, name="payments")
app.add_typer(events_app, name="events")

GatewayUrlOption = Annotated[
    str | None,
    typer.Option(
        "--gateway-url",
        help="the gateway's URL [PESA_PUBLIC_URL, or PESA_GATEWAY_HOST:PESA_GATEWAY_PORT]",
    ),
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="the gateway's API key [PESA_API_KEY]")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
IntervalOption = Annotated[
    float, typer.Option("--interval", min=0.05, help="seconds between polls of the event log")
]

# The emulator's scenario phones (docs/emulator.md): a real payment with a known ending.
TRIGGERS: Final[dict[str, tuple[str, str]]] = {
    "payment.succeeded": ("254708374149", "succeeded"),
    "payment.failed": ("254700001032", "failed"),
    "payment.rejected": ("254700001001", "rejected"),
}
_TERMINAL: Final = frozenset({"succeeded", "failed", "rejected"})


def _gateway(url: str | None, api_key: str | None) -> GatewayClient:
    return GatewayClient.from_settings(Settings(), base_url=url, api_key=api_key)


def _payment_row(payment: PaymentOut) -> list[str]:
    return [
        payment.id,
        payment.status,
        str(payment.amount),
        mask_phone(payment.phone),
        payment.receipt or payment.result_code or "-",
        payment.created_at,
    ]


def _show_event(event: EventOut, suffix: str = "") -> None:
    # What the event is about: a payment, a receipt, an expected payment, ...
    payment = next((v for v in event.data.values() if isinstance(v, dict) and "id" in v), {})
    console.print(
        f"{event.created_at}  {event.type:<18} {event.id}  {payment.get('id', '-')}"
        f"  {payment.get('status', '-')}{suffix}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )


@payments_app.command("list")
def payments_list(
    status: Annotated[
        str | None,
        typer.Option(help="only this status: created, pending, succeeded, failed, ..."),
    ] = None,
    phone: Annotated[str | None, typer.Option(help="only this payer (any format)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many payments")] = 20,
    gateway_url: GatewayUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List payments, newest first (GET /v1/payments, every page as needed)."""
    json_output(as_json)
    with _gateway(gateway_url, api_key) as gateway:
        found: list[PaymentOut] = []
        for payment in gateway.list_payments(
            status=status,  # type: ignore[arg-type]  # the gateway names a wrong status
            phone=phone,
            page_size=min(limit, 500),
        ):
            found.append(payment)
            if len(found) >= limit:
                break
    if as_json:
        print_json([p.model_dump(mode="json") for p in found])
        return
    table = Table("id", "status", "amount", "phone", "receipt/code", "created")
    for payment in found:
        table.add_row(*_payment_row(payment))
    console.print(table)


@payments_app.command("show")
def payments_show(
    payment_id: Annotated[str, typer.Argument(metavar="PAYMENT_ID", help="pay_...")],
    gateway_url: GatewayUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one payment (GET /v1/payments/{id})."""
    json_output(as_json)
    with _gateway(gateway_url, api_key) as gateway:
        payment = gateway.get_payment(payment_id)
    if as_json:
        print_json(payment.model_dump(mode="json"))
        return
    table = Table(title=f"payment {payment.id}", show_header=False)
    for name, value in payment.model_dump().items():
        shown = mask_phone(value) if name == "phone" and value else value
        table.add_row(name, "-" if shown is None else str(shown))
    console.print(table)


def _end_of_log(gateway: GatewayClient, payment_id: str | None) -> str | None:
    """The cursor after the last event now in the log: following starts there."""
    cursor: str | None = None
    while True:
        page = gateway.events_page(after=cursor, payment_id=payment_id, page_size=1000)
        if not page.data:
            return cursor
        cursor = page.next_cursor or cursor


def _follow(
    gateway: GatewayClient,
    *,
    payment_id: str | None,
    from_start: bool,
    interval: float,
    on_event: Callable[[EventOut], None],
) -> None:
    """Poll the event log and call ``on_event`` for each new event until Ctrl+C/SIGTERM."""
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        cursor = None if from_start else _end_of_log(gateway, payment_id)
        while not stop.is_set():
            page = gateway.events_page(after=cursor, payment_id=payment_id, page_size=100)
            for event in page.data:
                on_event(event)
            cursor = page.next_cursor or cursor
            if not page.data:
                stop.wait(interval)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@events_app.command("tail")
def events_tail(
    payment_id: Annotated[
        str | None, typer.Option("--payment-id", help="only this payment's events")
    ] = None,
    from_start: Annotated[
        bool, typer.Option("--from-start", help="print the whole log first, then follow")
    ] = False,
    interval: IntervalOption = 0.5,
    gateway_url: GatewayUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Follow the event log (GET /v1/events) and print each event as it is written."""
    json_output(as_json)

    def show(event: EventOut) -> None:
        if as_json:
            console.print(event.model_dump_json(), highlight=False, soft_wrap=True, markup=False)
        else:
            _show_event(event)
        console.file.flush()

    with _gateway(gateway_url, api_key) as gateway:
        if not as_json:
            console.print(f"following the events of {gateway.base_url} (Ctrl+C to stop)")
            console.file.flush()
        _follow(
            gateway, payment_id=payment_id, from_start=from_start, interval=interval, on_event=show
        )


@app.command()
def listen(
    forward_to: Annotated[
        str,
        typer.Option(
            "--forward-to", help="your app's webhook URL, e.g. http://localhost:5000/webhooks"
        ),
    ],
    secret: Annotated[
        str | None,
        typer.Option(help="secret to sign with [PESA_WEBHOOK_SECRET; else a new one, printed]"),
    ] = None,
    events: Annotated[
        str | None,
        typer.Option(help="only these event types, comma-separated (payment.succeeded,...)"),
    ] = None,
    interval: IntervalOption = 0.5,
    gateway_url: GatewayUrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Forward a gateway's events to a local app, signed as webhooks, printing each.

    Each new event is POSTed to --forward-to with the body and headers the gateway's
    webhooks carry (Pesa-Signature over the body), so the app's verify_webhook works
    unchanged. Your app's answer is printed next to each event.
    """
    if not forward_to.startswith(("http://", "https://")):
        fail(f"--forward-to must be an http(s) URL (got {forward_to!r})")
    from pesa.testing import signed_webhook

    settings = Settings()
    signing = secret or (
        settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    )
    if signing is None:
        signing = f"whsec_{secrets.token_urlsafe(24)}"
        console.print(f"webhook signing secret (verify with it): {signing}", highlight=False)
    wanted = {e.strip() for e in events.split(",") if e.strip()} if events else None
    receiver = httpx.Client(timeout=10)

    def forward(event: EventOut) -> None:
        if wanted is not None and event.type not in wanted:
            return
        body, headers = signed_webhook(event.model_dump(mode="json"), signing)
        try:
            answer = receiver.post(forward_to, content=body, headers=headers)
            result = f"  -> {answer.status_code}"
        except httpx.HTTPError as err:
            result = f"  -> failed: {type(err).__name__} ({forward_to} unreachable?)"
        _show_event(event, result)
        console.file.flush()

    with _gateway(gateway_url, api_key) as gateway, receiver:
        console.print(
            f"forwarding events of {gateway.base_url} to {forward_to} (Ctrl+C to stop)",
            highlight=False,
        )
        console.file.flush()
        _follow(gateway, payment_id=None, from_start=False, interval=interval, on_event=forward)


@app.command()
def trigger(
    event: Annotated[
        str,
        typer.Argument(metavar="EVENT", help=f"the event to cause: {', '.join(sorted(TRIGGERS))}"),
    ],
    amount: Annotated[int, typer.Option(min=1, help="whole shillings")] = 10,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the outcome")] = 60.0,
    gateway_url: GatewayUrlOption = None,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cause a real event: a test payment through a gateway running against the emulator.

    The payment uses the emulator scenario phone that ends as asked, so the gateway
    writes (and delivers, and `pesa listen` forwards) the real event. Refused unless the
    gateway runs in the emulator environment: it never touches real money.
    """
    json_output(as_json)
    if event not in TRIGGERS:
        fail(f"EVENT must be one of {', '.join(sorted(TRIGGERS))} (got {event!r})")
    phone, outcome = TRIGGERS[event]
    with _gateway(gateway_url, api_key) as gateway:
        environment = gateway.health().environment
        if environment != "emulator":
            fail(
                f"the gateway at {gateway.base_url} runs in {environment!r}: "
                "pesa trigger only works against one in the emulator environment"
            )
        payment = gateway.create_payment(
            phone, amount, "TRIGGER", event.split(".")[-1][:13], metadata={"trigger": event}
        )
        deadline = time.monotonic() + timeout
        while payment.status not in _TERMINAL:
            if time.monotonic() > deadline:
                fail(f"payment {payment.id} is still {payment.status} after {timeout:g} s")
            time.sleep(0.2)
            payment = gateway.get_payment(payment.id)
    if payment.status != outcome:
        fail(f"payment {payment.id} ended {payment.status}, not {outcome}")
    if as_json:
        print_json({"event": event, "payment": payment.model_dump(mode="json")})
        return
    console.print(
        f"{event}: payment {payment.id} {payment.status}"
        + (f" (receipt {payment.receipt})" if payment.receipt else ""),
        highlight=False,
    )
