"""The RELIABILITY.md writer: figures, verdicts and the facts a reader needs to reproduce."""

from __future__ import annotations

from datetime import UTC, datetime

from ._report import Recorder, render_report


def test_a_run_with_a_lost_payment_fails_and_says_why() -> None:
    recorder = Recorder()
    ok = recorder.record(
        "2. Lost callbacks", "sqlite", {"payments": 10, "lost": 0, "applied_twice": 0}
    )
    bad = recorder.record(
        "2. Lost callbacks", "postgresql", {"payments": 10, "lost": 2, "applied_twice": 0}
    )
    assert ok.passed and ok.failures == []
    assert not bad.passed
    assert bad.failures == ["lost = 2"]


def test_equal_counts_and_missing_counts_are_pass_conditions() -> None:
    result = Recorder().record(
        "1. Duplicates",
        "sqlite",
        {"applied": 9, "payments": 10},
        must_be_zero=("lost",),
        must_equal=(("applied", "payments"),),
    )
    assert result.failures == ["applied (9) != payments (10)", "lost was not counted"]


def test_report_has_date_machine_command_and_one_table_per_scenario() -> None:
    recorder = Recorder()
    recorder.record("10. Later", "x", {"lost": 0, "applied_twice": 0})
    recorder.record(
        "2. Lost callbacks", "sqlite", {"payments": 1_000, "lost": 0, "applied_twice": 0}
    )
    recorder.record(
        "2. Lost callbacks", "postgresql", {"payments": 1_000, "lost": 1, "applied_twice": 0}
    )
    recorder.skip("tests/reliability/test_x.py::test_y", "no server")
    text = render_report(
        recorder.results,
        command="make soak",
        soak=True,
        when=datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
        machine="Test CPU, 2 cores",
        facts={"PostgreSQL": "15.2"},
        skipped=recorder.skipped,
    )
    assert "- **Date:** 2026-11-29 10:00 UTC" in text
    assert "- **Machine:** Test CPU, 2 cores" in text
    assert "- **Command:** `make soak`" in text
    assert "- **PostgreSQL:** 15.2" in text
    assert "SOME SCENARIOS FAILED (2 of 3 runs passed)" in text
    assert text.index("## 2. Lost callbacks") < text.index("## 10. Later")
    assert "| count | sqlite | postgresql |" in text
    assert "| `payments` | 1,000 | 1,000 |" in text
    assert "| **result** | pass | **FAIL**: lost = 1 |" in text
    assert "- `tests/reliability/test_x.py::test_y`: no server" in text


def test_runs_with_different_pass_conditions_list_each() -> None:
    recorder = Recorder()
    recorder.record("5. Hostile input", "parser", {"crashes": 0}, must_be_zero=("crashes",))
    recorder.record("5. Hostile input", "route", {"errors": 0}, must_be_zero=("errors",))
    text = render_report(recorder.results, command="pytest", soak=False, machine="m")
    assert "- parser: `crashes` = 0." in text
    assert "- route: `errors` = 0." in text
