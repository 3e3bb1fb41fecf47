"""Render a run's sections as BENCHMARKS.md (and as JSON)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from benchmarks._harness import Machine, Section, Sizes

__all__ = ["render_json", "render_markdown"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _met(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def render_markdown(
    sections: Sequence[Section],
    *,
    machine: Machine,
    sizes: Sizes,
    command: str,
    started: datetime,
    seconds: float,
    issue_sizes: Sizes,
) -> str:
    """BENCHMARKS.md: date, machine, command, targets, then one part per benchmark."""
    lines: list[str] = [
        "# pesa benchmarks",
        "",
        "Written by `python -m benchmarks` (`make bench`); do not edit by hand. Every figure "
        "is a ratio against a baseline measured in the same run on the same machine. "
        "Servers run in their own processes on loopback; see `docs/benchmarks.md` for how "
        "each figure is measured.",
        "",
        f"- **Date:** {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
        f"(the run took {seconds / 60:.1f} min)",
        f"- **Machine:** {machine.cores} cores, {machine.cpu_model}, "
        f"{machine.memory_gb:g} GiB RAM, {machine.platform}",
        f"- **Python:** {machine.python}",
        f"- **Command:** `{command}`",
        f"- **Sizes:** `{sizes.name}`" + _size_note(sizes, issue_sizes),
        "",
        "## Targets",
        "",
        "| benchmark | target | asked | measured | result |",
        "|---|---|---|---|---|",
    ]
    for section in sections:
        if section.skipped:
            lines.append(f"| {section.title} | - | - | skipped: {section.skipped} | - |")
            continue
        for target in section.targets:
            measured = target.measured + (f" ({target.note})" if target.note else "")
            verdict = "reported" if target.informational else _met(target.met)
            lines.append(
                f"| {section.title.split(':')[0]} | {_cell(target.name)} | "
                f"{_cell(target.target)} | {_cell(measured)} | {verdict} |"
            )
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.skipped:
            lines += [f"Skipped: {section.skipped}", ""]
            continue
        lines += [
            f"**What:** {section.what}",
            "",
            f"**Baseline:** {section.baseline}",
            "",
            f"_Took {section.seconds:.0f} s._",
            "",
        ]
        if section.columns:
            lines.append("| " + " | ".join(section.columns) + " |")
            lines.append("|" + "---|" * len(section.columns))
            for row in section.rows:
                lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
            lines.append("")
        for note in section.notes:
            lines.append(f"- {note}")
        if section.notes:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _size_note(sizes: Sizes, issue: Sizes) -> str:
    shrunk = [
        f"{name} {getattr(sizes, name):g} (issue: {getattr(issue, name):g})"
        for name in (
            "pushes",
            "latency_pushes",
            "roundtrips",
            "callbacks",
            "e2e_payments",
            "reconcile_payments",
            "payouts",
            "gateway_payouts",
            "webhook_events",
        )
        if getattr(sizes, name) != getattr(issue, name)
    ]
    if not shrunk:
        return " (the issue's sizes)"
    return (
        " — shrunk from the issue's sizes to fit about ten minutes on this machine: "
        + "; ".join(shrunk)
        + ". `python -m benchmarks --size issue` runs the issue's sizes."
    )


def render_json(
    sections: Sequence[Section], *, machine: Machine, sizes: Sizes, command: str, started: datetime
) -> str:
    """Every figure of the run as JSON (for tools and for the smoke test)."""
    document: dict[str, Any] = {
        "date": started.astimezone(UTC).isoformat(),
        "machine": machine.__dict__,
        "command": command,
        "sizes": sizes.to_dict(),
        "sections": [section.to_dict() for section in sections],
    }
    return json.dumps(_finite(document), indent=2, default=str, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    # JSON has no NaN: a figure that could not be measured is null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
