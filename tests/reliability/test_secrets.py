"""Scenario 6: with pesa's logger at DEBUG, no log line carries a secret or a full phone.

Every secret is unique to this test (consumer secret, passkey, initiator password, the STK
``Password`` derived from the passkey, the encrypted SecurityCredential, every access token
the emulator issued, the webhook secret) so a hit can only be a leak. Phones are scanned in
the ``2547…``, ``07…`` and ``7…`` spellings.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pesa import AsyncDaraja, Daraja, DarajaError
from pesa.emulator import EmulatorConfig, EmulatorControl
from pesa.gateway import (
    DispatcherOptions,
    Reconciler,
    ReconcilerOptions,
    WebhookDispatcher,
)
from pesa.ledger import Ledger
from pesa.testing import serve_emulator

from ._harness import WEBHOOK_SECRET, CallbackSink, WebhookSink, free_port, serve_asgi
from ._processes import (
    API_KEY,
    CALLBACK_TOKEN,
    TERMINAL,
    Gateway,
    WebhookReceiver,
    api_client,
    emulator_process,
    wait_for,
)
from ._report import Recorder

SCENARIO = "6. Secrets in logs"
CONSUMER_KEY = "rel-consumer-key-7d1c"
CONSUMER_SECRET = "RelConsumerSecret9f3b21c7e0"
PASSKEY = "5e0c1b2a9d8f7e6d5c4b3a29181716151413121110f0e0d0c0b0a09080706050"
INITIATOR = "relapi"
INITIATOR_PASSWORD = "RelInitiator!Pass#4821"
SHORTCODE = "174379"
ORG_SHORTCODE = "600000"
PHONES = ["254722860741", "254733194527", "254745613308", "254768240915"]
DUPLICATED, DROPPED, CANCELLED = PHONES[1], PHONES[2], PHONES[3]
WRONG_TOKEN = "forged-callback-token-6e5d4c3b"
WRONG_API_KEY = "forged-api-key-2b3c4d5e"

pytestmark = pytest.mark.timeout(180)


class Capture(logging.Handler):
    """Keeps every formatted record (message, and traceback when there is one)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(self.format(record).splitlines())


@contextlib.contextmanager
def debug_logs() -> Iterator[Capture]:
    """pesa's logger at DEBUG, as ``PESA_LOG=debug`` sets it, captured."""
    pesa = logging.getLogger("pesa")
    capture = Capture()
    level = pesa.level
    pesa.addHandler(capture)
    pesa.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        pesa.removeHandler(capture)
        pesa.setLevel(level)


def phone_spellings(phone: str) -> list[str]:
    local = phone[3:]
    return [phone, f"0{local}", f"+{phone}"] + ([local] if len(local) == 9 else [])


def scan(lines: list[str], secrets: dict[str, str]) -> list[str]:
    """Each (line, secret name) where a secret appears."""
    hits = []
    for line in lines:
        for name, value in secrets.items():
            if value and value in line:
                hits.append(f"{name}: {line[:160]}")
    return hits


def result_sink() -> Starlette:
    async def accept(request: Request) -> Response:
        await request.body()
        return JSONResponse({"ResultCode": 0, "ResultDesc": "Accepted"})

    return Starlette(routes=[Route("/{path:path}", accept, methods=["POST"])])


class Wiretap:
    """Records, from the wire, the access tokens Daraja issued and the STK Passwords and
    SecurityCredentials the client sent (the emulator's own records redact them)."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.sent: list[str] = []

    def request(self, request: httpx.Request) -> None:
        if request.content:
            with contextlib.suppress(ValueError):
                body = json.loads(request.content)
                if isinstance(body, dict):
                    for key in ("Password", "SecurityCredential"):
                        if isinstance(body.get(key), str):
                            self.sent.append(body[key])

    def response(self, request: httpx.Request, response: httpx.Response) -> None:
        if request.url.path.startswith("/oauth/"):
            with contextlib.suppress(ValueError):
                self.tokens.append(str(response.json()["access_token"]))

    def secrets(self) -> dict[str, str]:
        found = {f"access token {i}": t for i, t in enumerate(dict.fromkeys(self.tokens))}
        found.update(
            (f"STK password / credential {i}", v) for i, v in enumerate(dict.fromkeys(self.sent))
        )
        return found


class AsyncTap(httpx.AsyncBaseTransport):
    def __init__(self, tap: Wiretap) -> None:
        self.tap = tap
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.tap.request(request)
        response = await self.inner.handle_async_request(request)
        await response.aread()
        self.tap.response(request, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class SyncTap(httpx.BaseTransport):
    def __init__(self, tap: Wiretap) -> None:
        self.tap = tap
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.tap.request(request)
        response = self.inner.handle_request(request)
        response.read()
        self.tap.response(request, response)
        return response

    def close(self) -> None:
        self.inner.close()


async def test_debug_logs_of_client_emulator_ledger_and_workers_hold_no_secret(
    tmp_path: Path, recorder: Recorder
) -> None:
    config = EmulatorConfig(
        strict=True,
        consumer_key=CONSUMER_KEY,
        consumer_secret=CONSUMER_SECRET,
        passkeys={SHORTCODE: PASSKEY},
        initiators={INITIATOR: INITIATOR_PASSWORD},
        stk_delay=0.1,
        result_delay=0.05,
        key_dir=tmp_path / "keys",
        seed=6,
    )
    tap = Wiretap()
    with debug_logs() as capture:
        async with serve_emulator(config) as running:
            daraja = running.emulator
            daraja.add_rule(phone=DUPLICATED, callback="duplicate")
            daraja.add_rule(phone=DROPPED, callback="drop")
            daraja.add_rule(phone=CANCELLED, result_code=1032)
            certificate = tmp_path / "emulator.cer"
            certificate.write_bytes(daraja.certificate_pem)
            hooks = WebhookSink()
            async with serve_asgi(hooks.app()) as hooks_base:
                ledger = await Ledger.open(
                    f"sqlite:///{tmp_path / 'secrets.db'}",
                    webhook_endpoints=[f"{hooks_base}/hooks"],
                )
                await ledger.migrate()
                sink = CallbackSink(ledger)
                try:
                    async with (
                        serve_asgi(sink.app()) as sink_base,
                        serve_asgi(result_sink()) as results_base,
                    ):
                        client = AsyncDaraja(
                            base_url=running.base_url,
                            consumer_key=CONSUMER_KEY,
                            consumer_secret=CONSUMER_SECRET,
                            shortcode=SHORTCODE,
                            passkey=PASSKEY,
                            initiator_name=INITIATOR,
                            initiator_password=INITIATOR_PASSWORD,
                            certificate_path=certificate,
                            callback_url=f"{sink_base}/callbacks/stk",
                            result_url=f"{results_base}/results",
                            timeout_url=f"{results_base}/timeouts",
                            transport=AsyncTap(tap),
                        )
                        async with client:
                            # STK payments through the ledger: paid, duplicated, dropped, cancelled.
                            for i, phone in enumerate(PHONES):
                                payment, _ = await ledger.create_payment(
                                    f"s-{i}", phone, 10, f"SEC{i}", "Secrets"
                                )
                                push = await client.stk_push(phone, 10, f"SEC{i}", "Secrets")
                                await ledger.mark_accepted(
                                    payment.id, push.checkout_request_id, push.merchant_request_id
                                )
                                await client.stk_query(push.checkout_request_id)
                            await daraja.wait_idle()
                            # A forged and a malformed callback carrying a phone number.
                            forged = {
                                "Body": {
                                    "stkCallback": {
                                        "CheckoutRequestID": "ws_CO_forged",
                                        "MerchantRequestID": "x",
                                        "ResultCode": 0,
                                        "ResultDesc": "ok",
                                        "CallbackMetadata": {
                                            "Item": [
                                                {"Name": "PhoneNumber", "Value": int(PHONES[0])}
                                            ]
                                        },
                                    }
                                }
                            }
                            await ledger.ingest_stk_callback(
                                json.dumps(forged).encode(), source_ip="203.0.113.5"
                            )
                            await ledger.ingest_stk_callback(
                                f'{{"PhoneNumber": {PHONES[0]}, "Password": "{PASSKEY}"'.encode(),
                                source_ip="203.0.113.5",
                            )
                            # Initiator APIs: the password is encrypted into a SecurityCredential.
                            await client.b2c_payment(
                                PHONES[0], 100, "Refund", shortcode=ORG_SHORTCODE
                            )
                            await client.account_balance(shortcode=ORG_SHORTCODE)
                            # Faults: a revoked token (re-auth), a 500, spike arrest.
                            daraja.add_fault(kind="invalid_token", times=1)
                            await client.stk_query(push.checkout_request_id)
                            daraja.add_fault(kind="http_500", path="/mpesa/stkpushquery", times=1)
                            await client.stk_query(push.checkout_request_id)
                            daraja.add_fault(kind="spike_arrest", path="/mpesa/stkpush", times=1)
                            with contextlib.suppress(DarajaError):
                                await client.stk_push(PHONES[0], 10, "SEC9", "Secrets")
                            await daraja.wait_idle()
                            # The workers: reconcile the dropped callback, deliver the webhooks.
                            reconciler = Reconciler(
                                ledger, client, options=ReconcilerOptions(min_age=0, query_rate=50)
                            )
                            await reconciler.run_once()
                            dispatcher = WebhookDispatcher(
                                ledger,
                                secret=WEBHOOK_SECRET,
                                options=DispatcherOptions(batch_size=100),
                            )
                            async with dispatcher:
                                while (await dispatcher.run_once()).claimed:
                                    pass
                finally:
                    await ledger.close()

    secrets = {
        "consumer secret": CONSUMER_SECRET,
        "passkey": PASSKEY,
        "initiator password": INITIATOR_PASSWORD,
        "webhook secret": WEBHOOK_SECRET,
        **tap.secrets(),
        **{f"phone {s}": s for p in PHONES for s in phone_spellings(p)},
    }
    hits = scan(capture.lines, secrets)
    result = recorder.record(
        SCENARIO,
        "client + emulator + ledger + workers (in process)",
        {
            "log_lines": len(capture.lines),
            "secrets_checked": len(secrets),
            "access_tokens_issued": len(set(tap.tokens)),
            "secret_hits": len(hits),
        },
        must_be_zero=("secret_hits",),
        about=(
            "pesa's logger at DEBUG while a strict-mode emulator serves STK pushes (paid, "
            "duplicated, dropped, cancelled), queries, B2C and balance with an encrypted "
            "credential, a revoked token, a 500 and a spike arrest; the ledger ingests forged "
            "and malformed callbacks; the reconciler and the dispatcher run. Every secret's "
            "literal value and every phone spelling is searched in every line (tracebacks "
            "included)."
        ),
    )
    assert len(set(tap.tokens)) >= 2, "the revoked token should have forced a second OAuth call"
    assert capture.lines, "debug logging produced nothing: the scan would prove nothing"
    assert result.passed, "\n".join(hits[:20])


def test_the_emulator_cli_at_debug_prints_no_secret(tmp_path: Path, recorder: Recorder) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PESA_LOG": "debug",
        "PESA_CONSUMER_KEY": CONSUMER_KEY,
        "PESA_CONSUMER_SECRET": CONSUMER_SECRET,
    }
    command = [
        sys.executable,
        "-m",
        "pesa",
        "emulator",
        "--port",
        str(port),
        "--strict",
        "--passkey",
        f"{SHORTCODE}={PASSKEY}",
        "--initiator",
        f"{INITIATOR}={INITIATOR_PASSWORD}",
        "--stk-delay",
        "0.05",
        "--key-dir",
        str(tmp_path / "keys"),
        "--log-level",
        "debug",
    ]
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    tap = Wiretap()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/__emulator__/rules", timeout=1)
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(err_path.read_text()) from None
                    time.sleep(0.1)
            certificate = tmp_path / "cli.cer"
            with EmulatorControl(base) as control:
                certificate.write_bytes(control.certificate())
                with (
                    debug_logs() as capture,
                    Daraja(
                        base_url=base,
                        consumer_key=CONSUMER_KEY,
                        consumer_secret=CONSUMER_SECRET,
                        shortcode=SHORTCODE,
                        passkey=PASSKEY,
                        initiator_name=INITIATOR,
                        initiator_password=INITIATOR_PASSWORD,
                        certificate_path=certificate,
                        callback_url=f"http://127.0.0.1:{free_port()}/callbacks/stk",
                        result_url=f"http://127.0.0.1:{free_port()}/results",
                        timeout_url=f"http://127.0.0.1:{free_port()}/timeouts",
                        transport=SyncTap(tap),
                    ) as client,
                ):
                    push = client.stk_push(PHONES[0], 10, "CLI1", "Secrets")
                    client.stk_query(push.checkout_request_id)
                    client.b2c_payment(PHONES[1], 100, "Refund", shortcode=ORG_SHORTCODE)
                    control.wait_idle()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    lines = out_path.read_text().splitlines() + err_path.read_text().splitlines()
    secrets = {
        "consumer secret": CONSUMER_SECRET,
        "passkey": PASSKEY,
        "initiator password": INITIATOR_PASSWORD,
        **tap.secrets(),
        **{f"phone {s}": s for p in PHONES[:2] for s in phone_spellings(p)},
    }
    hits = scan(lines + capture.lines, secrets)
    result = recorder.record(
        SCENARIO,
        "pesa emulator CLI (subprocess) + sync client",
        {
            "log_lines": len(lines) + len(capture.lines),
            "secrets_checked": len(secrets),
            "access_tokens_issued": len(set(tap.tokens)),
            "secret_hits": len(hits),
        },
        must_be_zero=("secret_hits",),
        about=(
            "`pesa emulator --log-level debug` in its own process with strict credentials, a "
            "custom passkey and initiator, driven by the sync client (also at DEBUG): its "
            "stdout and stderr and the client's log lines are scanned."
        ),
    )
    assert tap.tokens, "no OAuth token seen on the wire"
    assert lines, "the emulator printed nothing: the scan would prove nothing"
    assert result.passed, "\n".join(hits[:20])


def test_pesa_serve_at_debug_logs_no_secret(tmp_path: Path, recorder: Recorder) -> None:
    hooks = WebhookReceiver()
    port = free_port()
    stack = contextlib.ExitStack()
    daraja_url = stack.enter_context(
        emulator_process(
            ["--stk-delay", "0.2", "--passkey", f"{SHORTCODE}={PASSKEY}"],
            free_port(),
            tmp_path / "emulator.log",
        )
    )
    # Configured as in production (sandbox), only Daraja's address points at the emulator.
    env = {
        "PESA_ENV": "sandbox",
        "PESA_BASE_URL": daraja_url,
        "PESA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PESA_SHORTCODE": SHORTCODE,
        "PESA_PASSKEY": PASSKEY,
        "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
        "PESA_API_KEY": API_KEY,
        "PESA_CALLBACK_TOKEN": CALLBACK_TOKEN,
        "PESA_CONSUMER_KEY": CONSUMER_KEY,
        "PESA_CONSUMER_SECRET": CONSUMER_SECRET,
        "PESA_WEBHOOK_URLS": hooks.url,
        "PESA_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PESA_RECONCILE_MIN_AGE": "0.5",
        "PESA_RECONCILE_INTERVAL": "0.2",
        "PESA_WEBHOOK_INTERVAL": "0.1",
        "PESA_LOG": "debug",
    }
    gateway = Gateway(env, tmp_path / "serve.log", port)
    phones = [PHONES[0], "254700000404", "254700000202", "254700001032"]
    try:
        gateway.start()
        with api_client(gateway.url) as api:
            ids = []
            for i, phone in enumerate(phones):
                response = api.post(
                    "/v1/payments",
                    json={
                        "phone": phone,
                        "amount": 10,
                        "account_reference": f"SRV{i}",
                        "description": "Secrets",
                    },
                    headers={"Idempotency-Key": f"serve-secrets-{i}"},
                )
                assert response.status_code == 201, response.text
                ids.append(response.json()["id"])
            # A wrong token and a wrong API key are refused: their values must not be logged.
            httpx.post(f"{gateway.url}/callbacks/{WRONG_TOKEN}/stk", content=b"{}", timeout=10)
            httpx.get(
                f"{gateway.url}/v1/payments",
                headers={"Authorization": f"Bearer {WRONG_API_KEY}"},
                timeout=10,
            )
            wait_for(
                lambda: all(api.get(f"/v1/payments/{i}").json()["status"] in TERMINAL for i in ids),
                60,
                "the payments settled",
            )
            wait_for(lambda: len(hooks.by_event) >= 2 * len(ids), 60, "the webhooks delivered")
    finally:
        gateway.stop()
        hooks.close()
        stack.close()
    lines = gateway.process.output().splitlines()
    secrets = {
        "API key": API_KEY,
        "wrong API key": WRONG_API_KEY,
        "callback token": CALLBACK_TOKEN,
        "wrong callback token": WRONG_TOKEN,
        "consumer secret": CONSUMER_SECRET,
        "webhook secret": WEBHOOK_SECRET,
        "passkey": PASSKEY,
        **{f"phone {s}": s for p in phones for s in phone_spellings(p)},
    }
    hits = scan(lines, secrets)
    result = recorder.record(
        SCENARIO,
        "pesa serve (subprocess, PESA_LOG=debug)",
        {"log_lines": len(lines), "secrets_checked": len(secrets), "secret_hits": len(hits)},
        must_be_zero=("secret_hits",),
        about=(
            "`pesa serve` configured for the sandbox (Daraja's address pointed at the emulator "
            "in its own process) with `PESA_LOG=debug` takes payments (paid, "
            "callback lost, callback duplicated, cancelled), refuses a wrong callback token and "
            "a wrong API key, reconciles and delivers webhooks; its whole output is scanned for "
            "the API key, callback token, consumer secret, webhook secret, passkey, the wrong "
            "credentials it was sent, and the phone numbers."
        ),
    )
    assert len(lines) > 20, "debug logging produced almost nothing: the scan would prove little"
    assert result.passed, "\n".join(hits[:20])
