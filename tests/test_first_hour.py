"""A newcomer's first hour: configuration errors, the CLI's surface, help at 80 columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pesa
from pesa import ConfigurationError, Daraja, Settings
from pesa.cli import app
from pesa.daraja import SANDBOX_PASSKEY, SANDBOX_STK_SHORTCODE

runner = CliRunner()
WIDE = {"COLUMNS": "400"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("PESA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# -- 5. configuration errors ------------------------------------------------------------


def test_every_invalid_setting_is_named_at_once_without_pydantic_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PESA_ENV", "live")
    monkeypatch.setenv("PESA_TIMEOUT", "-1")
    monkeypatch.setenv("PESA_WEBHOOK_URLS", "ftp://hooks")
    with pytest.raises(ConfigurationError) as info:
        Settings()
    text = str(info.value)
    for variable in ("PESA_ENV", "PESA_TIMEOUT", "PESA_WEBHOOK_URLS"):
        assert variable in text
    assert "Value error" not in text and "PESA_:" not in text
    assert "'live'" in text  # what was given, to spot the typo


def test_a_secret_setting_is_never_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PESA_WEBHOOK_URLS", "http://h.example/x")
    monkeypatch.setenv("PESA_WEBHOOK_SECRET", "")
    monkeypatch.setenv("PESA_API_KEY", "k" * 5)
    with pytest.raises(ConfigurationError):
        Settings(webhook_lease=1, webhook_timeout=5)


def test_daraja_from_env_with_a_bad_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PESA_ENV", "prod")
    with pytest.raises(ConfigurationError, match="PESA_ENV"):
        Daraja.from_env()


def test_sandbox_gateway_names_every_missing_setting_in_one_run(tmp_path: Path) -> None:
    env = {"PESA_ENV": "sandbox", "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'g.db'}"}
    result = runner.invoke(app, ["serve", "--port", "0"], env={**env, **WIDE})
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    for name in (
        "API_KEY",
        "CALLBACK_TOKEN",
        "PUBLIC_URL",
        "CONSUMER_KEY",
        "CONSUMER_SECRET",
        "SHORTCODE",
        "PASSKEY",
    ):
        assert f"PESA_{name}" in result.output


@pytest.mark.parametrize("command", [["serve"], ["emulator"]])
def test_an_impossible_port_is_one_line_naming_the_flag(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--port", "99999"], env=WIDE)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "--port" in lines[0] and "99999" in lines[0]
    assert "Overflow" not in result.output


# -- 7. the CLI's surface -----------------------------------------------------------------


def test_pesa_dash_dash_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pesa", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == pesa.__version__


def test_with_json_an_error_is_json_too() -> None:
    result = runner.invoke(
        app, ["stk", "query", "ws_CO_1", "--json", "--base-url", "http://127.0.0.1:9"], env=WIDE
    )
    assert result.exit_code == 1
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigurationError"
    assert "PESA_SHORTCODE" in error["message"]


def _commands() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    found: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found.append([*prefix, name])
            walk(command, [*prefix, name])

    walk(root, [])
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "pesa")
def test_help_is_readable_at_80_columns(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    for line in result.output.splitlines():
        assert len(line) <= 80, line
        assert "<bool>" not in line and "…" not in line, line


STK_DELAY = 2.0  # the emulated customer answers after this long


@pytest.fixture(scope="module")
def emulator_env() -> Iterator[dict[str, str]]:
    from pesa.emulator import EmulatorConfig
    from pesa.testing import run_emulator

    with run_emulator(EmulatorConfig(stk_delay=STK_DELAY)) as running:
        yield {
            "PESA_BASE_URL": running.base_url,
            "PESA_CONSUMER_KEY": "any",
            "PESA_CONSUMER_SECRET": "any",
            "PESA_SHORTCODE": SANDBOX_STK_SHORTCODE,
            "PESA_PASSKEY": SANDBOX_PASSKEY,
            "PESA_CALLBACK_URL": "http://127.0.0.1:9/stk",
            **WIDE,
        }


def _push(env: dict[str, str], phone: str) -> str:
    result = runner.invoke(
        app,
        ["stk", "push", "--phone", phone, "--amount", "10", "--reference", "A1", "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    checkout: str = json.loads(result.stdout)["checkout_request_id"]
    return checkout


def _query(env: dict[str, str], checkout: str) -> tuple[int, str]:
    result = runner.invoke(app, ["stk", "query", checkout, "--json"], env=env)
    return result.exit_code, json.loads(result.stdout)["state"]


def _settled(env: dict[str, str], checkout: str) -> tuple[int, str]:
    deadline = time.monotonic() + 20
    while True:
        code, state = _query(env, checkout)
        if code != 3 or time.monotonic() > deadline:
            return code, state
        time.sleep(0.2)


def test_stk_query_exit_status_tells_pending_paid_and_not_paid_apart(
    emulator_env: dict[str, str],
) -> None:
    pushed = time.monotonic()
    paid = _push(emulator_env, "0708374149")
    cancelled = _push(emulator_env, "254700001032")
    answer = _query(emulator_env, paid)
    # The prompt is still open (unless a loaded machine took longer than the answer delay).
    assert answer == (3, "pending") or time.monotonic() - pushed >= STK_DELAY, answer
    assert _settled(emulator_env, paid) == (0, "paid")
    assert _settled(emulator_env, cancelled) == (2, "not_paid")
