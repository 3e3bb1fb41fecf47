"""``pesa emulator`` as a real subprocess: it prints where it listens and serves Daraja."""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def emulator_process() -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "PESA_EMULATOR_STK_DELAY": "0.05"}
    env.pop("PESA_EMULATOR_PORT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "pesa", "emulator", "--port", "0", "--latency", "1"]
        + ["--c2b-validation-timeout", "3", "--no-partial-reversals", "--reversible-b2c"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first + (process.stderr.read() if process.stderr else "")
        yield process, match.group(1)
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_cli_serves_daraja_and_the_control_api(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    _, base_url = emulator_process
    token = httpx.get(
        f"{base_url}/oauth/v1/generate?grant_type=client_credentials",
        auth=("k", "s"),
        trust_env=False,
    )
    assert token.status_code == 200
    config = httpx.get(f"{base_url}/__emulator__/config", trust_env=False).json()
    assert config["stk_delay"] == 0.05
    assert config["latency_ms"] == 1
    assert config["c2b_validation_timeout"] == 3
    assert (config["reversal_partial"], config["reversal_of_b2c"]) == (False, True)


def test_cli_fails_with_one_line_on_a_bad_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "emulator", "--passkey", "nonsense"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "--passkey expects NAME=VALUE" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_refuses_strict_mode_without_credentials() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_CONSUMER")}
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "emulator", "--strict", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 1
    assert "strict mode needs consumer_key and consumer_secret" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_tls_prints_the_ca_to_trust_and_a_ca_bundle_the_client_honours(
    tmp_path: Path,
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "pesa", "emulator", "--port", "0", "--tls"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
        base_url = re.search(r"listening on (https://127\.0\.0\.1:\d+)", first)
        ca = re.search(r"TLS CA certificate \(trust this\): (\S+)", second)
        assert base_url and ca, first + second
        context = ssl.create_default_context(cafile=ca.group(1))
        health = httpx.get(f"{base_url.group(1)}/__emulator__/health", verify=context)
        assert health.json()["status"] == "ok"
        exports = ""
        for _ in range(10):
            line = process.stdout.readline()
            if "export " in line:
                exports = line.split("export ", 1)[1]
                break
        pairs = dict(pair.split("=", 1) for pair in exports.split())
        assert pairs["PESA_CA_BUNDLE"] == ca.group(1)
        # The client trusts the emulator through PESA_CA_BUNDLE alone: no flag, no code.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
        env.update(pairs)
        token = subprocess.run(
            [sys.executable, "-m", "pesa", "token", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            cwd=tmp_path,
        )
        assert token.returncode == 0, token.stderr
        assert '"access_token"' in token.stdout
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_cli_refuses_an_unknown_log_level() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "emulator", "--log-level", "loud", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "--log-level must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_names_a_bad_environment_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "emulator"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PESA_EMULATOR_PORT": "abc"},
    )
    assert result.returncode == 1
    assert "PESA_EMULATOR_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_prints_client_settings_that_work_for_an_stk_push(
    emulator_process: tuple[subprocess.Popen[str], str],
) -> None:
    """The banner's export line is enough for `pesa stk push` to be accepted."""
    process, base_url = emulator_process
    assert process.stdout is not None
    exports = ""
    for _ in range(10):
        line = process.stdout.readline()
        if "export " in line:
            exports = line.split("export ", 1)[1]
            break
    assert exports, "the banner has no client settings"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PESA_")}
    env.update(pair.split("=", 1) for pair in exports.split())
    assert env["PESA_BASE_URL"] == base_url
    env["PESA_CALLBACK_URL"] = "http://127.0.0.1:9/stk"
    result = subprocess.run(
        [sys.executable, "-m", "pesa", "stk", "push", "--phone", "0708374149"]
        + ["--amount", "10", "--reference", "INV1", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert '"CheckoutRequestID"' in result.stdout or "ws_CO_" in result.stdout
