"""``pesa serve|worker|db`` errors are one clear line; callback tokens never reach a log."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pesa.cli import app
from pesa.gateway._callbacks import CallbackPathFilter, redact_callback_paths

runner = CliRunner()
WIDE = {"COLUMNS": "400"}  # Rich wraps at the terminal width; a long line stays one line


@pytest.fixture(autouse=True)
def _no_pesa_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each command sees only the variables a test sets (and no .env file)."""
    import os

    for name in list(os.environ):
        if name.startswith("PESA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_serve_refuses_production_without_an_api_key(tmp_path: Path) -> None:
    env = {"PESA_ENV": "production", "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
    result = runner.invoke(app, ["serve", "--port", "0"], env={**env, **WIDE})
    assert result.exit_code == 1
    assert "PESA_API_KEY" in _one_line_error(result.output)


def test_serve_names_an_invalid_setting() -> None:
    result = runner.invoke(app, ["serve"], env={"PESA_CALLBACK_ALLOWLIST": "sometimes", **WIDE})
    assert result.exit_code == 1
    assert "PESA_CALLBACK_ALLOWLIST" in _one_line_error(result.output)


def test_serve_says_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        env = {"PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"}
        result = runner.invoke(app, ["serve", "--port", str(port)], env={**env, **WIDE})
    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in _one_line_error(result.output)


def test_db_upgrade_reports_an_unreachable_database_in_one_line() -> None:
    env = {"PESA_DATABASE_URL": "postgresql://nobody:s3cret@127.0.0.1:1/none"}
    result = runner.invoke(app, ["db", "upgrade"], env={**env, **WIDE})
    assert result.exit_code == 1
    line = _one_line_error(result.output)
    assert "cannot migrate the database" in line
    assert "s3cret" not in line


def test_worker_refuses_sandbox_without_daraja_credentials(tmp_path: Path) -> None:
    env = {"PESA_ENV": "sandbox", "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    result = runner.invoke(app, ["worker"], env={**env, **WIDE})
    assert result.exit_code == 1
    assert "PESA_CONSUMER_KEY" in _one_line_error(result.output)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_bad_accounts_file_is_every_problem_at_once_and_no_secret(
    tmp_path: Path, command: str
) -> None:
    (tmp_path / "accounts.toml").write_text(
        'default = "paybill"\n'
        "[accounts.paybill]\n"
        'shortcode = "60099"\n'
        'passkey = "do-not-print-this-passkey"\n'
        'consumer_key = "do-not-print-this-key"\n'
        "[accounts.shop]\n"
        'extends = "paybil"\n'
        'shortcde = "5123456"\n',
        encoding="utf-8",
    )
    env = {
        "PESA_ACCOUNTS_FILE": str(tmp_path / "accounts.toml"),
        "PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
    }
    args = [command, "--port", "0"] if command == "serve" else [command]
    result = runner.invoke(app, args, env={**env, **WIDE})
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "3 problems" in result.output
    for expected in (
        "accounts.paybill: consumer_key is set but consumer_secret is not",
        "accounts.shop.extends: 'paybil' is not an account",
        "accounts.shop.shortcde: unknown key",
    ):
        assert expected in result.output
    assert "do-not-print" not in result.output


def test_db_upgrade_then_again_is_a_no_op(tmp_path: Path) -> None:
    env = {"PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    assert runner.invoke(app, ["db", "upgrade"], env=env).exit_code == 0
    again = runner.invoke(app, ["db", "upgrade"], env=env)
    assert again.exit_code == 0
    assert "up to date" in again.output


class TestCallbackPathRedaction:
    def test_token_is_hidden(self) -> None:
        text = 'POST /callbacks/s3cr3t-T0ken_x/stk HTTP/1.1" 200'
        assert redact_callback_paths(text) == 'POST /callbacks/***/stk HTTP/1.1" 200'

    def test_access_log_record_args_are_redacted(self) -> None:
        record = logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "POST", "/callbacks/s3cr3t/stk", "1.1", 200),
            None,
        )
        assert CallbackPathFilter().filter(record)
        assert "s3cr3t" not in record.getMessage()
        assert "/callbacks/***/stk" in record.getMessage()
