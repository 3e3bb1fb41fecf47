"""``pesa operator add|list|remove``: operators are added on the server, never over the web."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from pesa.cli import app
from pesa.ledger import Ledger, OperatorStore

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("PESA_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return {"PESA_DATABASE_URL": f"sqlite:///{tmp_path / 'ops.db'}", "COLUMNS": "200"}


def _authenticate(url: str, name: str, password: str) -> str | None:
    async def check() -> str | None:
        ledger = await Ledger.open(url)
        try:
            operator = await OperatorStore(ledger.engine).authenticate(name, password)
            return None if operator is None else operator.role
        finally:
            await ledger.close()

    return anyio.run(check)


@pytest.mark.slow
def test_the_real_cli_adds_an_operator_from_stdin(env: dict[str, str]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pesa",
            "operator",
            "add",
            "amina",
            "--role",
            "operator",
            "--password-stdin",
        ],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "operator amina (operator) can sign in at /dashboard" in result.stdout
    assert "correct horse battery" not in result.stdout + result.stderr
    assert _authenticate(env["PESA_DATABASE_URL"], "amina", "correct horse battery") == "operator"


def test_add_asks_for_the_password_twice(env: dict[str, str]) -> None:
    result = runner.invoke(
        app, ["operator", "add", "otieno"], env=env, input="s3cret-enough\ns3cret-enough\n"
    )
    assert result.exit_code == 0, result.output
    assert "otieno (viewer)" in result.output  # least privilege by default
    assert _authenticate(env["PESA_DATABASE_URL"], "otieno", "s3cret-enough") == "viewer"
    listed = runner.invoke(app, ["operator", "list"], env=env)
    assert "otieno" in listed.output and "viewer" in listed.output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["add", "amina", "--role", "admin", "--password-stdin"], "long enough pw\n", "--role"),
        (["add", "amina", "--password-stdin"], "short\n", "password: must be at least 10"),
        (["add", "bad name", "--password-stdin"], "long enough pw\n", "name: must be"),
        (["remove", "nobody"], "", "no operator named 'nobody'"),
    ],
)
def test_bad_input_is_one_clear_line(
    env: dict[str, str], args: list[str], stdin: str, message: str
) -> None:
    result = runner.invoke(app, ["operator", *args], env=env, input=stdin)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output


def test_a_taken_name_needs_replace_and_remove_ends_it(env: dict[str, str]) -> None:
    add = ["operator", "add", "amina", "--password-stdin"]
    assert runner.invoke(app, add, env=env, input="first password\n").exit_code == 0
    taken = runner.invoke(app, add, env=env, input="second password\n")
    assert taken.exit_code == 1 and "--replace" in taken.output
    replaced = runner.invoke(
        app, [*add, "--replace", "--role", "operator"], env=env, input="second password\n"
    )
    assert replaced.exit_code == 0, replaced.output
    assert _authenticate(env["PESA_DATABASE_URL"], "amina", "second password") == "operator"
    assert runner.invoke(app, ["operator", "remove", "amina"], env=env).exit_code == 0
    assert _authenticate(env["PESA_DATABASE_URL"], "amina", "second password") is None
