"""``pesa token`` and ``pesa stk`` through a real subprocess: help, validation, one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    # Nothing listens on it once the socket is closed: connections are refused.
    return port


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    clean.update({"PESA_MAX_RETRIES": "0", "COLUMNS": "200", **env})
    return subprocess.run(
        [sys.executable, "-m", "pesa", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # no stray .env
        env=clean,
        timeout=60,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("token", "--help"), "--consumer-key"),
        (("stk", "--help"), "push"),
        (("stk", "push", "--help"), "--reference"),
        (("stk", "query", "--help"), "CHECKOUT_ID"),
    ],
)
def test_help(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    result = run(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


@pytest.mark.parametrize(
    ("phone", "amount", "reference", "fragments"),
    [
        ("0208374149", "10", "INV1", ("phone", "07XXXXXXXX")),
        ("0708374149", "ten", "INV1", ("amount", "whole number")),
        ("0708374149", "10.5", "INV1", ("amount", "without a fraction")),
        ("0708374149", "0", "INV1", ("amount", "between 1 and 250000")),
        ("0708374149", "10", "ACCOUNT-REF-13", ("account_reference", "1 to 12")),
    ],
)
def test_stk_push_validation_errors_are_one_line(
    tmp_path: Path, phone: str, amount: str, reference: str, fragments: tuple[str, ...]
) -> None:
    result = run(
        tmp_path,
        "stk",
        "push",
        "--phone",
        phone,
        "--amount",
        amount,
        "--reference",
        reference,
        PESA_CONSUMER_KEY="k",
        PESA_CONSUMER_SECRET="s",
        PESA_SHORTCODE="174379",
        PESA_PASSKEY="pk",
        PESA_CALLBACK_URL="https://example.com/cb",
        PESA_BASE_URL=f"http://127.0.0.1:{_free_port()}",
    )
    assert_one_line_error(result, *fragments)
    assert "0708374149" not in result.stderr


def test_missing_credentials_name_the_variable(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        "stk",
        "push",
        "--phone",
        "0708374149",
        "--amount",
        "10",
        "--reference",
        "INV1",
        PESA_SHORTCODE="174379",
        PESA_PASSKEY="pk",
        PESA_CALLBACK_URL="https://example.com/cb",
    )
    assert_one_line_error(result, "PESA_CONSUMER_KEY")


def test_bad_environment_is_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "token", PESA_ENV="staging")
    assert_one_line_error(result, "PESA_ENV")
    result = run(
        tmp_path, "token", "--env", "staging", PESA_CONSUMER_KEY="k", PESA_CONSUMER_SECRET="s"
    )
    assert_one_line_error(result, "PESA_ENV")


def test_unreachable_daraja_is_one_line(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{_free_port()}"
    result = run(
        tmp_path, "token", "--base-url", base, "--consumer-key", "k", "--consumer-secret", "s"
    )
    assert_one_line_error(result, "ConnectError")
    result = run(
        tmp_path,
        "stk",
        "query",
        "ws_CO_1",
        "--base-url",
        base,
        PESA_CONSUMER_KEY="k",
        PESA_CONSUMER_SECRET="s",
        PESA_SHORTCODE="174379",
        PESA_PASSKEY="pk",
    )
    assert_one_line_error(result, "ConnectError")


def test_bad_log_level_is_one_line(tmp_path: Path) -> None:
    result = run(
        tmp_path, "token", PESA_LOG="chatty", PESA_CONSUMER_KEY="k", PESA_CONSUMER_SECRET="s"
    )
    assert_one_line_error(result, "PESA_LOG")
