"""README.md stays true for a new user: the two commands and every setting are documented."""

import re
from pathlib import Path

import pytest

from pesa.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_configuration_table(name: str) -> None:
    assert f"| `PESA_{name.upper()}` |" in README


def test_every_documented_setting_exists() -> None:
    documented = {
        line.split("`")[1].removeprefix("PESA_").lower()
        for line in README.splitlines()
        if line.startswith("| `PESA_")
    }
    assert documented <= set(Settings.model_fields)


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_the_two_commands_are_documented(command: str) -> None:
    assert command in README


def test_the_readme_says_how_long_make_test_takes() -> None:
    assert re.search(r"takes about\s+\w+\s+minutes", README)
