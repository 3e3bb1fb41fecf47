"""Scenario counts for the reliability suite, and the writer of RELIABILITY.md.

Each scenario records what it tried and what went wrong (``lost``, ``applied_twice``, ...)
through a :class:`Recorder` *before* asserting, so a failing run still reports its figures.
The report is written at the end of the session when ``PESA_RELIABILITY_REPORT=<path>`` is
set, or under ``make soak`` (``PESA_SOAK=1``, default path ``RELIABILITY.md``).
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Recorder", "ScenarioResult", "machine_description", "render_report"]


@dataclass(frozen=True)
class ScenarioResult:
    """One run of one scenario: its counts and which of them had to be zero.

    Attributes:
        scenario: the scenario's title, e.g. ``"1. Duplicates"``.
        variant: what this run used (``"sqlite"``, ``"postgresql"``, ...).
        counts: named figures, in display order.
        must_be_zero: the names in ``counts`` that make the run fail when not zero.
        must_equal: pairs of names whose counts must be equal (``expected == observed``).
        about: one sentence saying what was done.
        gaps: names in ``counts`` that should be zero but are a documented, understood miss
            (a limit of Daraja or of the design): shown as "target missed", not a failure.
    """

    scenario: str
    variant: str
    counts: Mapping[str, int]
    must_be_zero: tuple[str, ...] = ("lost", "applied_twice")
    must_equal: tuple[tuple[str, str], ...] = ()
    about: str = ""
    gaps: tuple[str, ...] = ()

    @property
    def missed(self) -> list[str]:
        """Each documented gap that showed up in this run, in words."""
        return [f"{n} = {self.counts.get(n)}" for n in self.gaps if self.counts.get(n, 0) != 0]

    @property
    def failures(self) -> list[str]:
        """Each broken pass condition, in words (empty when the run passed)."""
        problems = [
            f"{name} = {self.counts.get(name)}"
            for name in self.must_be_zero
            if self.counts.get(name, 0) != 0
        ]
        problems += [
            f"{left} ({self.counts.get(left)}) != {right} ({self.counts.get(right)})"
            for left, right in self.must_equal
            if self.counts.get(left) != self.counts.get(right)
        ]
        missing = [
            n for n in (*self.must_be_zero, *sum(self.must_equal, ())) if n not in self.counts
        ]
        problems += [f"{name} was not counted" for name in missing]
        return problems

    @property
    def passed(self) -> bool:
        """True when every pass condition holds."""
        return not self.failures


@dataclass
class Recorder:
    """Collects scenario results, skips and environment facts for one test session."""

    results: list[ScenarioResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    def record(
        self,
        scenario: str,
        variant: str,
        counts: Mapping[str, int],
        *,
        must_be_zero: Sequence[str] = ("lost", "applied_twice"),
        must_equal: Sequence[tuple[str, str]] = (),
        about: str = "",
        gaps: Sequence[str] = (),
    ) -> ScenarioResult:
        """Keep one run's figures; assert ``result.failures == []`` afterwards."""
        result = ScenarioResult(
            scenario,
            variant,
            dict(counts),
            tuple(must_be_zero),
            tuple(must_equal),
            about,
            tuple(gaps),
        )
        self.results.append(result)
        return result

    def skip(self, test_id: str, reason: str) -> None:
        """Note a test that did not run (shown in the report, so gaps are visible)."""
        self.skipped.append((test_id, reason))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return "RAM unknown"


def machine_description() -> str:
    """CPU model, core count, memory, OS, Python and SQLite versions, on one line."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {_memory()}; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}; "
        f"SQLite {sqlite3.sqlite_version}"
    )


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")


def _table(results: Sequence[ScenarioResult]) -> list[str]:
    """One column per run (variant), one row per count, then the verdict."""
    names: list[str] = []
    for result in results:
        names.extend(n for n in result.counts if n not in names)
    header = ["count", *(r.variant for r in results)]
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|---|" + "|".join("---:" for _ in results) + "|",
    ]
    for name in names:
        cells = [f"`{name}`"]
        cells += [f"{r.counts[name]:,}" if name in r.counts else "" for r in results]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    verdicts = [_verdict(r) for r in results]
    lines.append("| **result** | " + " | ".join(_cell(v) for v in verdicts) + " |")
    return lines


def render_report(
    results: Sequence[ScenarioResult],
    *,
    command: str,
    soak: bool,
    when: datetime | None = None,
    machine: str | None = None,
    facts: Mapping[str, str] | None = None,
    skipped: Iterable[tuple[str, str]] = (),
    preamble: str = "",
) -> str:
    """RELIABILITY.md: date, machine, command, then one table per scenario.

    Example:
        >>> text = render_report([], command="make soak", soak=True)
        >>> text.splitlines()[0]
        '# pesa reliability report'
    """
    when = when or datetime.now(UTC)
    ok = all(r.passed for r in results)
    lines = [
        "# pesa reliability report",
        "",
        "Generated by the reliability suite (`tests/reliability/`); do not edit by hand.",
        "",
        f"- **Date:** {when.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"- **Machine:** {machine or machine_description()}",
        f"- **Command:** `{command}`",
        f"- **Sizes:** {'full (soak, `PESA_SOAK=1`)' if soak else 'CI (reduced)'}",
    ]
    for key, value in (facts or {}).items():
        lines.append(f"- **{key}:** {value}")
    missed = sum(1 for r in results if r.missed)
    verdict = "every scenario passed" if ok else "SOME SCENARIOS FAILED"
    if missed:
        verdict += f"; {missed} run(s) missed a documented target (see their notes)"
    lines += [
        f"- **Verdict:** {verdict} ({sum(r.passed for r in results)} of {len(results)} runs "
        "passed).",
        "",
    ]
    if preamble:
        lines += [preamble.strip(), ""]
    order: list[str] = []
    for result in results:
        if result.scenario not in order:
            order.append(result.scenario)
    for scenario in sorted(order, key=_scenario_key):
        runs = [r for r in results if r.scenario == scenario]
        lines += [f"## {scenario}", ""]
        abouts = list(dict.fromkeys(r.about for r in runs if r.about))
        lines += [*abouts, ""] if abouts else []
        conditions = {r.variant: _conditions(r) for r in runs}
        if len(set(conditions.values())) == 1:
            lines += [f"Pass condition: {next(iter(conditions.values()))}.", ""]
        else:
            lines += ["Pass conditions:", ""]
            lines += [f"- {variant}: {text}." for variant, text in conditions.items() if text]
            lines.append("")
        lines += [*_table(runs), ""]
    skipped = list(skipped)
    if skipped:
        lines += ["## Not run in this session", ""]
        lines += [f"- `{test}`: {reason}" for test, reason in skipped]
        lines.append("")
    return "\n".join(lines)


def _verdict(result: ScenarioResult) -> str:
    if not result.passed:
        return "**FAIL**: " + "; ".join(result.failures)
    if result.missed:
        return "pass; **target missed**: " + "; ".join(result.missed)
    return "pass"


def _scenario_key(title: str) -> tuple[int, str]:
    number, _, _ = title.partition(".")
    return (int(number), title) if number.isdigit() else (1_000, title)


def _conditions(result: ScenarioResult) -> str:
    parts = [f"`{n}` = 0" for n in result.must_be_zero]
    parts += [f"`{a}` = `{b}`" for a, b in result.must_equal]
    text = ", ".join(parts)
    if result.gaps:
        gaps = ", ".join(f"`{n}`" for n in result.gaps)
        text += f"; target (documented gap, reported, not failed): {gaps} = 0"
    return text


def command_line() -> str:
    """How this session was started, for the report."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else ["pytest"]
    if argv[0] in ("__main__.py", "pytest"):
        argv[0] = "pytest"
    env = [
        f"{k}={os.environ[k]}" for k in ("PESA_SOAK", "PESA_RELIABILITY_REPORT") if k in os.environ
    ]
    if "PESA_TEST_DATABASE_URL" in os.environ:
        env.append("PESA_TEST_DATABASE_URL=…")
    line = " ".join([*env, *argv])
    if "MAKELEVEL" in os.environ and os.environ.get("PESA_SOAK"):
        return f"make soak  # runs: {line}"
    return line
