"""``pesa token``, ``pesa stk push`` and ``pesa stk query``: the Daraja client from a shell.

Configuration comes from ``PESA_*`` variables (and ``.env``); flags win. Errors are one
line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
from rich.table import Table

from pesa._exceptions import (
    ConfigurationError,
    OutcomeUnknownError,
    PesaError,
    ValidationError,
)
from pesa._logging import configure_logging, mask_phone
from pesa.cli._app import app, console, fail, print_json
from pesa.client import Daraja
from pesa.config import Settings
from pesa.daraja import normalize_msisdn

__all__ = ["stk_app", "stk_push", "stk_query", "token"]

stk_app = typer.Typer(
    help="M-Pesa Express: send an STK push, query its state.",
    no_args_is_help=True,
)
app.add_typer(stk_app, name="stk")

T = TypeVar("T")

EnvOption = Annotated[
    str | None, typer.Option("--env", help="emulator, sandbox or production [PESA_ENV]")
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="overrides the environment's URL [PESA_BASE_URL]")
]
KeyOption = Annotated[
    str | None, typer.Option("--consumer-key", help="Daraja app key [PESA_CONSUMER_KEY]")
]
SecretOption = Annotated[
    str | None,
    typer.Option("--consumer-secret", help="Daraja app secret [PESA_CONSUMER_SECRET]"),
]
ShortcodeOption = Annotated[
    str | None, typer.Option("--shortcode", help="BusinessShortCode [PESA_SHORTCODE]")
]
PasskeyOption = Annotated[
    str | None, typer.Option("--passkey", help="Lipa Na M-Pesa passkey [PESA_PASSKEY]")
]
CaBundleOption = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="CA certificate to trust (the emulator's --tls certificate)",
        exists=True,
        dir_okay=False,
    ),
]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="seconds per request [PESA_TIMEOUT]", min=0.001)
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@contextmanager
def _errors() -> Iterator[None]:
    """Turn every pesa and settings error into one clear line and exit 1."""
    try:
        yield
    except OutcomeUnknownError as err:
        fail(f"{err} (check it with `pesa stk query`)", kind=type(err).__name__)
    except PesaError as err:
        fail(str(err), kind=type(err).__name__)


def _client(
    *,
    env: str | None,
    base_url: str | None,
    consumer_key: str | None,
    consumer_secret: str | None,
    shortcode: str | None,
    passkey: str | None,
    ca_bundle: Path | None,
    timeout: float | None,
    **extra: Any,
) -> Daraja:
    overrides: dict[str, Any] = {
        "environment": env,
        "base_url": base_url,
        "consumer_key": consumer_key,
        "consumer_secret": consumer_secret,
        "shortcode": shortcode,
        "passkey": passkey,
        "timeout": timeout,
        **extra,
    }
    if ca_bundle is not None:
        overrides["verify"] = ca_bundle
    settings = Settings()
    _configure_logging(settings.log)
    return Daraja.from_settings(settings, **{k: v for k, v in overrides.items() if v is not None})


def _configure_logging(level: str) -> None:
    # Only the CLI installs a handler: the library itself stays quiet (PESA_LOG).
    try:
        configure_logging(level)
    except ValueError as err:
        raise ConfigurationError(
            f"PESA_LOG must be a level name such as debug or warning (got {level!r})"
        ) from err


def _run(client_factory: Callable[[], Daraja], call: Callable[[Daraja], T]) -> T:
    with client_factory() as client:
        return call(client)


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation as err:
        raise ValidationError("amount", "must be a whole number of shillings", text) from err


@app.command()
def token(
    env: EnvOption = None,
    base_url: BaseUrlOption = None,
    consumer_key: KeyOption = None,
    consumer_secret: SecretOption = None,
    ca_bundle: CaBundleOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Fetch a Daraja access token (GET /oauth/v1/generate) and print it."""
    with _errors():
        access = _run(
            lambda: _client(
                env=env,
                base_url=base_url,
                consumer_key=consumer_key,
                consumer_secret=consumer_secret,
                shortcode=None,
                passkey=None,
                ca_bundle=ca_bundle,
                timeout=timeout,
            ),
            lambda client: client.access_token(),
        )
    if as_json:
        print_json({"access_token": access.value, "expires_at": access.expires_at.isoformat()})
    else:
        console.print(access.value, highlight=False, soft_wrap=True)


@stk_app.command("push")
def stk_push(
    phone: Annotated[
        str, typer.Option("--phone", help="the customer's phone (07xx, 01xx, 2547xx)")
    ],
    amount: Annotated[str, typer.Option("--amount", help="whole shillings")],
    reference: Annotated[
        str, typer.Option("--reference", help="AccountReference, at most 12 characters")
    ],
    description: Annotated[
        str | None, typer.Option("--description", help="TransactionDesc, at most 13 characters")
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="CallBackURL [PESA_CALLBACK_URL]")
    ] = None,
    till: Annotated[
        str | None, typer.Option("--till", help="till number: a Buy Goods push [PESA_TILL]")
    ] = None,
    env: EnvOption = None,
    base_url: BaseUrlOption = None,
    consumer_key: KeyOption = None,
    consumer_secret: SecretOption = None,
    shortcode: ShortcodeOption = None,
    passkey: PasskeyOption = None,
    ca_bundle: CaBundleOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send an STK push (POST /mpesa/stkpush/v1/processrequest): accepted is not paid."""
    with _errors():
        # Validate before any configuration or network work, so typos fail fast.
        msisdn = normalize_msisdn(phone)
        value = _amount(amount)
        push = _run(
            lambda: _client(
                env=env,
                base_url=base_url,
                consumer_key=consumer_key,
                consumer_secret=consumer_secret,
                shortcode=shortcode,
                passkey=passkey,
                ca_bundle=ca_bundle,
                timeout=timeout,
                callback_url=callback_url,
            ),
            lambda client: client.stk_push(msisdn, value, reference, description, till=till),
        )
    if as_json:
        print_json(push.model_dump(mode="json"))
        return
    table = Table(title="STK push accepted (not yet paid)", show_header=False)
    table.add_row("CheckoutRequestID", push.checkout_request_id)
    table.add_row("MerchantRequestID", push.merchant_request_id)
    table.add_row("Phone", mask_phone(msisdn))
    table.add_row("Customer message", push.customer_message)
    console.print(table)
    console.print(f"Check it with: pesa stk query {push.checkout_request_id}", highlight=False)


@stk_app.command("query")
def stk_query(
    checkout_id: Annotated[
        str, typer.Argument(metavar="CHECKOUT_ID", help="the push's CheckoutRequestID")
    ],
    env: EnvOption = None,
    base_url: BaseUrlOption = None,
    consumer_key: KeyOption = None,
    consumer_secret: SecretOption = None,
    shortcode: ShortcodeOption = None,
    passkey: PasskeyOption = None,
    ca_bundle: CaBundleOption = None,
    timeout: TimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Query an STK push (POST /mpesa/stkpushquery/v1/query): pending, paid or not paid.

    Exit status: 0 paid, 2 not paid (a final answer: cancelled, no funds, ...), 3 still
    pending (the prompt is open, or the code is not final yet: ask again later), 1 the
    question could not be asked (configuration, network, Daraja error).
    """
    with _errors():
        result = _run(
            lambda: _client(
                env=env,
                base_url=base_url,
                consumer_key=consumer_key,
                consumer_secret=consumer_secret,
                shortcode=shortcode,
                passkey=passkey,
                ca_bundle=ca_bundle,
                timeout=timeout,
            ),
            lambda client: client.stk_query(checkout_id),
        )
    code = result.code
    exit_code = _query_exit_code(result.pending, result.succeeded, bool(code and code.final))
    if as_json:
        data = result.model_dump(mode="json")
        data["succeeded"] = result.succeeded
        data["final"] = bool(code and code.final)
        data["state"] = _STATES[exit_code]
        print_json(data)
        raise typer.Exit(exit_code)
    if result.pending:
        state = "[yellow]pending[/] (the prompt is still open)"
    elif result.succeeded:
        state = "[green]paid[/]"
    else:
        state = "[red]not paid[/]"
    table = Table(title=f"STK push {checkout_id}", show_header=False)
    table.add_row("State", state)
    table.add_row("ResultCode", result.result_code or "-")
    table.add_row("ResultDesc", result.result_desc or "-")
    if code is not None:
        table.add_row("Meaning", code.meaning)
        table.add_row("Tell the customer", code.customer_message)
    console.print(table)
    raise typer.Exit(exit_code)


EXIT_PAID: Final = 0
EXIT_NOT_PAID: Final = 2
EXIT_PENDING: Final = 3
_STATES: Final = {EXIT_PAID: "paid", EXIT_NOT_PAID: "not_paid", EXIT_PENDING: "pending"}


def _query_exit_code(pending: bool, succeeded: bool, final: bool) -> int:
    """``pesa stk query``'s exit status: scripts tell the three answers apart by it."""
    if pending:
        return EXIT_PENDING
    if succeeded:
        return EXIT_PAID
    return EXIT_NOT_PAID if final else EXIT_PENDING
