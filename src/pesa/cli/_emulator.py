"""``pesa emulator``: serve the local Daraja emulator (callbacks included) on localhost."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from pesa._net import listen_socket
from pesa.cli._app import app, console, fail, require_server

__all__ = ["emulator"]


def _pairs(values: list[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, secret = value.partition("=")
        if not sep or not name or not secret:
            fail(f"{option} expects NAME=VALUE, got {name or value!r}")
        pairs[name] = secret
    return pairs


@app.command()
def emulator(
    host: Annotated[str | None, typer.Option(help="address to bind [PESA_EMULATOR_HOST]")] = None,
    port: Annotated[
        int | None, typer.Option(help="port to listen on, 0 for any free one [PESA_EMULATOR_PORT]")
    ] = None,
    latency: Annotated[
        float | None,
        typer.Option(metavar="MS", help="milliseconds added to every Daraja response"),
    ] = None,
    tls: Annotated[
        bool, typer.Option("--tls", help="serve HTTPS with a generated certificate")
    ] = False,
    strict: Annotated[
        bool | None,
        typer.Option(
            "--strict/--lenient",
            help="exact consumer key/secret and real SecurityCredential decryption",
        ),
    ] = None,
    consumer_key: Annotated[
        str | None, typer.Option(help="key accepted in strict mode [PESA_CONSUMER_KEY]")
    ] = None,
    consumer_secret: Annotated[
        str | None, typer.Option(help="secret accepted in strict mode [PESA_CONSUMER_SECRET]")
    ] = None,
    shortcode: Annotated[
        list[str] | None,
        typer.Option(metavar="CODE", help="extra organisation shortcode (repeatable)"),
    ] = None,
    passkey: Annotated[
        list[str] | None,
        typer.Option(metavar="SHORTCODE=PASSKEY", help="extra STK shortcode (repeatable)"),
    ] = None,
    initiator: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=PASSWORD", help="extra initiator (repeatable)"),
    ] = None,
    stk_delay: Annotated[
        float | None, typer.Option(metavar="S", help="seconds before the customer answers")
    ] = None,
    result_delay: Annotated[
        float | None, typer.Option(metavar="S", help="seconds before B2C/status/balance Results")
    ] = None,
    token_lifetime: Annotated[
        int | None, typer.Option(metavar="S", help="expires_in of tokens [3599]")
    ] = None,
    invalidate_old_tokens: Annotated[
        bool, typer.Option("--invalidate-old-tokens", help="a new token revokes older ones")
    ] = False,
    timestamp_tolerance: Annotated[
        float | None,
        typer.Option(metavar="S", help="seconds a Timestamp may differ from Nairobi time [1800]"),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(metavar="RPS", help="requests/second per app, then spike arrest")
    ] = None,
    callback_timeout: Annotated[
        float | None, typer.Option(metavar="S", help="seconds per callback delivery [5]")
    ] = None,
    callback_retries: Annotated[
        int | None, typer.Option(metavar="N", help="re-deliveries of a failed callback [0]")
    ] = None,
    no_c2b_validation: Annotated[
        bool, typer.Option("--no-c2b-validation", help="never call C2B ValidationURLs")
    ] = False,
    c2b_validation_timeout: Annotated[
        float | None,
        typer.Option(
            metavar="S", help="seconds a ValidationURL has before ResponseType applies [8]"
        ),
    ] = None,
    no_partial_reversals: Annotated[
        bool,
        typer.Option("--no-partial-reversals", help="reversals must be for the whole amount"),
    ] = False,
    reversible_b2c: Annotated[
        bool, typer.Option("--reversible-b2c", help="let the Reversal API reverse B2C payments")
    ] = False,
    seed: Annotated[int | None, typer.Option(help="seed for reproducible ids and faults")] = None,
    key_dir: Annotated[
        Path | None, typer.Option(help="keep the RSA key and TLS files here across restarts")
    ] = None,
    log_level: Annotated[str, typer.Option(help="log level of pesa's logger")] = "info",
) -> None:
    """Serve a local Daraja (sandbox paths, payloads, codes and callbacks) on localhost."""
    require_server("emulator")
    import pydantic

    from pesa._logging import configure_logging
    from pesa.config import Settings
    from pesa.emulator import config_from_settings

    settings = Settings()  # a bad PESA_* variable is a ConfigurationError: one line, exit 1
    overrides: dict[str, object] = {}
    optional = {
        "latency_ms": latency,
        "strict": strict,
        "consumer_key": consumer_key,
        "consumer_secret": consumer_secret,
        "stk_delay": stk_delay,
        "result_delay": result_delay,
        "token_lifetime": token_lifetime,
        "timestamp_tolerance": timestamp_tolerance,
        "rate_limit": rate_limit,
        "callback_timeout": callback_timeout,
        "callback_retries": callback_retries,
        "c2b_validation_timeout": c2b_validation_timeout,
        "seed": seed,
        "key_dir": key_dir,
    }
    overrides.update({k: val for k, val in optional.items() if val is not None})
    if invalidate_old_tokens:
        overrides["invalidate_old_tokens"] = True
    if no_c2b_validation:
        overrides["c2b_validation"] = False
    if no_partial_reversals:
        overrides["reversal_partial"] = False
    if reversible_b2c:
        overrides["reversal_of_b2c"] = True
    try:
        base = config_from_settings(settings)
        if shortcode:
            overrides["shortcodes"] = (*base.shortcodes, *shortcode)
        if passkey:
            overrides["passkeys"] = {**base.passkeys, **_pairs(passkey, "--passkey")}
        if initiator:
            overrides["initiators"] = {**base.initiators, **_pairs(initiator, "--initiator")}
        config = config_from_settings(settings, **overrides)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        fail(f"{where}: {first['msg']}")
    bind_host = host or settings.emulator_host
    bind_port = settings.emulator_port if port is None else port
    if not 0 <= bind_port <= 65535:
        fail(f"--port must be a port number from 0 to 65535 (got {bind_port})")
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        fail(f"--log-level must be debug, info, warning, error or critical, got {log_level!r}")
    configure_logging(log_level)
    _serve(config, bind_host, bind_port, tls)


def _say(text: str) -> None:
    # Plain, unwrapped lines: people copy the URL and the CA path, scripts parse them.
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def _serve(config: object, host: str, port: int, tls: bool) -> None:
    import uvicorn

    from pesa.emulator import (
        SANDBOX_PASSKEY,
        SANDBOX_STK_SHORTCODE,
        EmulatorConfig,
        create_app,
        tls_files,
    )

    assert isinstance(config, EmulatorConfig)
    try:
        # Listening before we print: connections queue until uvicorn accepts them.
        sock = listen_socket(host, port)
    except OSError as err:
        fail(f"cannot listen on {host}:{port}: {err.strerror or err}")
    port = sock.getsockname()[1]
    try:
        files = tls_files(config.key_dir) if tls else None
    except OSError as err:
        sock.close()
        fail(f"cannot write the TLS files to {config.key_dir}: {err.strerror or err}")
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    base_url = f"{scheme}://{shown}:{port}"
    _say(f"pesa emulator listening on {base_url}")
    if files is not None:
        _say(f"TLS CA certificate (trust this): {files.ca_path}")
    _say(f"control API: {base_url}/__emulator__/")
    _say(f"credential certificate: {base_url}/__emulator__/certificate")
    mode = "strict" if config.strict else "lenient (any consumer key/secret)"
    ca_export = f" PESA_CA_BUNDLE={files.ca_path}" if files is not None else ""
    if not config.strict and config.passkeys.get(SANDBOX_STK_SHORTCODE) == SANDBOX_PASSKEY:
        # Only the public sandbox values: a passkey of the user's own is never echoed.
        _say(
            "a pesa client reaches it with: export PESA_ENV=emulator "
            f"PESA_BASE_URL={base_url} PESA_CONSUMER_KEY=any PESA_CONSUMER_SECRET=any "
            f"PESA_SHORTCODE={SANDBOX_STK_SHORTCODE} PESA_PASSKEY={SANDBOX_PASSKEY}{ca_export}"
        )
    else:
        _say(f"a pesa client reaches it with: export PESA_BASE_URL={base_url}{ca_export}")
    _say(f"mode: {mode}; press Ctrl+C to stop")
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            log_level="warning",
            access_log=False,
            ssl_certfile=str(files.cert_path) if files else None,
            ssl_keyfile=str(files.key_path) if files else None,
            timeout_graceful_shutdown=2,
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
