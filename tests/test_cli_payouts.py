"""``pesa payouts send``: the CSV is checked line by line before anything is posted."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pesa.cli import app
from pesa.cli._payouts import batch_id_of, read_rows


def test_rows_are_read_with_optional_columns() -> None:
    content = (
        b"\xef\xbb\xbfPhone,Amount,Remarks,Command\n"
        b"0708374149,1500,Salary,SalaryPayment\n\n254708374150,20,Bonus,\n"
    )
    assert read_rows(content) == [
        {"phone": "0708374149", "amount": 1500, "remarks": "Salary", "command": "SalaryPayment"},
        {"phone": "254708374150", "amount": 20, "remarks": "Bonus"},
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"phone,amount\n0708374149,10\n", "missing: remarks"),
        (b"phone,amount,remarks,colour\n0708374149,10,x,red\n", "unknown column(s): colour"),
        (b"phone,amount,remarks\n0708374149,10.5,x\n", "line 2: amount must be whole"),
        (b"phone,amount,remarks\n0708374149,\xd9\xa1\xd9\xa0,x\n", "line 2: amount"),
        (b"phone,amount,remarks\n", "no rows"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_a_bad_file_is_refused_naming_the_line(content: bytes, message: str) -> None:
    with pytest.raises(typer.BadParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_rows(content)


def test_the_batch_id_is_the_file_s_digest() -> None:
    assert batch_id_of(b"a") == batch_id_of(b"a") != batch_id_of(b"b")


def test_a_bad_file_posts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "pay.csv"
    path.write_text("phone,amount,remarks\n0708374149,ten,x\n")
    # No gateway listens at this URL: the file is refused before any request.
    result = CliRunner().invoke(app, ["payouts", "send", str(path), "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "line 2: amount must be whole shillings" in result.output
