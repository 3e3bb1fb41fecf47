"""Smoke test of the benchmark harness: ``python -m benchmarks --size tiny`` end to end.

It checks that every benchmark runs and produces well-formed results (tables, targets,
counts), never how fast anything is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = (
    "client",
    "emulator",
    "ingest",
    "e2e",
    "webhook",
    "reconciler",
    "payouts",
    "payouts_gateway",
    "ledger",
    "shared",
)
# Benchmarks that need PostgreSQL and say so (skipped) without PESA_TEST_DATABASE_URL.
POSTGRES_ONLY = ("ledger", "shared")


# Session scope, not module: an xdist worker runs this group's tests between other modules'
# tests, and a module fixture is torn down (and the ~2-minute run repeated) at each switch.
@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--size",
            "tiny",
            "--output",
            str(out / "BENCHMARKS.md"),
            "--json",
            str(out / "bench.json"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), (out / "BENCHMARKS.md").read_text()


def _sections(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {section["key"]: section for section in document["sections"]}


# One xdist worker runs the module, so the tiny run (its session fixture) runs once, not once
# per worker.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600), pytest.mark.xdist_group("benchmarks")]


def test_every_benchmark_runs_and_none_is_skipped(tiny_run: tuple[dict[str, Any], str]) -> None:
    sections = _sections(tiny_run[0])
    assert list(sections) == list(BENCHMARKS)
    for key, section in sections.items():
        if key in POSTGRES_ONLY and not os.environ.get("PESA_TEST_DATABASE_URL"):
            assert "PESA_TEST_DATABASE_URL" in section["skipped"], key
            continue
        assert section["skipped"] is None, (key, section["skipped"])


def test_tables_are_rectangular_and_targets_have_verdicts(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    for section in tiny_run[0]["sections"]:
        if section["skipped"]:
            continue  # a PostgreSQL-only benchmark without PostgreSQL (checked above)
        assert section["columns"], section["key"]
        assert section["rows"], section["key"]
        for row in section["rows"]:
            assert len(row) == len(section["columns"]), (section["key"], row)
        assert section["targets"], section["key"]
        for target in section["targets"]:
            assert target["met"] in (True, False, None)
            assert target["target"] and target["measured"]


def test_client_counts_requests_connections_and_oauth_per_push(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    runs = _sections(tiny_run[0])["client"]["data"]["runs"]
    assert {r["client"] for r in runs} == {
        "pesa-async",
        "pesa-sync",
        "snippet",
        "floor-async",
        "floor-sync",
        "pesa-async-aiohttp",
        "floor-aiohttp",
    }
    assert {r["network"] for r in runs} == {"http", "tls", "tls+30ms"}
    for run in runs:
        assert run["errors"] == 0, run["first_error"]
        assert run["throughput"] > 0 and run["cpu_s"] > 0
        pushes = run["pushes"]
        if run["client"] == "snippet":
            # A token and a connection per push: two requests, two connections, one OAuth.
            assert run["steady"]["requests"] == 2 * pushes
            assert run["steady"]["oauth_requests"] == pushes
            assert run["steady"]["connections"] == 2 * pushes
            if run["network"] != "http":
                assert run["steady"]["tls_connections"] == 2 * pushes
        else:
            assert run["steady"]["requests"] == pushes
            assert run["steady"]["oauth_requests"] == 0
            assert run["total"]["oauth_requests"] == 1


def test_gateway_benchmarks_apply_and_deliver_everything(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    sections = _sections(tiny_run[0])
    ingest = sections["ingest"]
    columns = ingest["columns"]
    for row in ingest["rows"][1:]:
        assert row[columns.index("errors")] == 0
        assert row[columns.index("applied")] == tiny_run[0]["sizes"]["callbacks"]
    e2e = sections["e2e"]["data"]
    assert e2e["delivered"] == tiny_run[0]["sizes"]["e2e_payments"]
    for result in e2e["by_database"].values():
        assert result["delivered"] == tiny_run[0]["sizes"]["e2e_payments"]
    for result in sections["webhook"]["data"]["results"]:
        assert result["delivered"] == result["n"] == tiny_run[0]["sizes"]["webhook_events"]
    assert e2e["peak_rss_mb"] >= e2e["idle_rss_mb"] > 0
    reconciler = sections["reconciler"]["data"]
    assert reconciler["left"] == 0
    assert reconciler["succeeded"] == tiny_run[0]["sizes"]["reconcile_payments"]


def test_markdown_names_date_machine_command_and_every_section(
    tiny_run: tuple[dict[str, Any], str],
) -> None:
    document, markdown = tiny_run
    for needle in ("**Date:**", "**Machine:**", "cores", "**Python:**", "**Command:**"):
        assert needle in markdown
    assert "python -m benchmarks --size tiny" in markdown
    for section in document["sections"]:
        assert f"## {section['title']}" in markdown
    assert document["machine"]["cores"] >= 1
