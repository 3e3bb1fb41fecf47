"""Daraja-side helpers of the benchmarks: emulator processes, hand-built payloads, phones."""

from __future__ import annotations

import base64
import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from benchmarks._harness import Server, start_server

__all__ = [
    "CONSUMER_KEY",
    "CONSUMER_SECRET",
    "PASSKEY",
    "SHORTCODE",
    "emulator",
    "phone",
    "stk_body",
]

SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CONSUMER_KEY = "bench-key"
CONSUMER_SECRET = "bench-secret"
_NAIROBI = ZoneInfo("Africa/Nairobi")


def phone(series: int, index: int) -> str:
    """A distinct Safaricom test number per (series, index): the emulator's default success.

    The emulator keeps one open prompt per phone (as Daraja does), so every push of a run
    gets its own number. Numbers start at 2547 1x xxx xxx, outside the scenario table.
    """
    return f"2547{10 + series % 90:02d}{index % 1_000_000:06d}"


def stk_body(phone_number: str, amount: int, reference: str, callback_url: str) -> dict[str, Any]:
    """An STK push body built by hand, as little work as any client must do.

    The Timestamp is Nairobi time: tutorial code uses the server's local time, which the
    emulator (like Daraja) refuses from a server outside Kenya's time zone.
    """
    timestamp = datetime.now(_NAIROBI).strftime("%Y%m%d%H%M%S")
    password = base64.b64encode(f"{SHORTCODE}{PASSKEY}{timestamp}".encode()).decode()
    return {
        "BusinessShortCode": SHORTCODE,
        "Password": password,
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone_number,
        "PartyB": SHORTCODE,
        "PhoneNumber": phone_number,
        "CallBackURL": callback_url,
        "AccountReference": reference,
        "TransactionDesc": "Bench",
    }


@contextlib.contextmanager
def emulator(
    *,
    tls: bool = False,
    latency_ms: float = 0,
    stk_delay: float = 0.2,
    rate_limit: float | None = None,
    extra: list[str] | None = None,
) -> Iterator[Server]:
    """Run ``pesa emulator`` in its own process on a free loopback port.

    Its TLS certificate and RSA key live in a temporary directory removed afterwards; the
    server's ``ca_path`` is the CA a client must trust.
    """
    key_dir = Path(tempfile.mkdtemp(prefix="pesa-bench-keys-"))
    args = [
        "pesa",
        "emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--stk-delay",
        str(stk_delay),
        "--key-dir",
        str(key_dir),
        "--log-level",
        "warning",
        "--seed",
        "5",
    ]
    if tls:
        args.append("--tls")
    if latency_ms:
        args += ["--latency", str(latency_ms)]
    if rate_limit is not None:
        args += ["--rate-limit", str(rate_limit)]
    args += extra or []
    try:
        with start_server(
            "emulator", args, ca_path=str(key_dir / "ca.pem") if tls else None
        ) as server:
            yield server
    finally:
        shutil.rmtree(key_dir, ignore_errors=True)


def control(server: Server) -> httpx.Client:
    """A plain HTTP client for the emulator's control API (outside any measured region)."""
    return httpx.Client(
        base_url=f"{server.url}/__emulator__", verify=server.ca_path or True, timeout=60
    )


def drop_callbacks(server: Server, operation: str | None = None) -> None:
    """Tell the emulator not to deliver callbacks (the client benchmarks have no receiver)."""
    rule: dict[str, Any] = {"callback": "drop"}
    if operation is not None:
        rule["operation"] = operation
    with control(server) as client:
        client.post("/rules", json=rule).raise_for_status()


def certificate(server: Server, directory: Path) -> Path:
    """Save the emulator's credential certificate (SecurityCredential encryption)."""
    with control(server) as client:
        response = client.get("/certificate")
        response.raise_for_status()
    path = directory / "emulator-credential.pem"
    path.write_bytes(response.content)
    return path


def fetch_token(base_url: str, verify: bool | str) -> str:
    """One OAuth call, outside any measured region (the floor's pre-fetched token)."""
    response = httpx.get(
        f"{base_url}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(CONSUMER_KEY, CONSUMER_SECRET),
        verify=verify,
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])
