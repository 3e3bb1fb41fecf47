"""``python -m benchmarks``: run the benchmarks and write BENCHMARKS.md.

Examples:
    python -m benchmarks                      # everything, default sizes (make bench)
    python -m benchmarks --size quick         # a two-minute look
    python -m benchmarks --size issue         # the sizes issue 5 asks for
    python -m benchmarks --only client --only payouts --pushes 500
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    _client_bench,
    _emulator_bench,
    _ledger_bench,
    _payouts_bench,
    _reconcile_bench,
)
from benchmarks._harness import REPO, SIZES, Section, Sizes, machine
from benchmarks._report import render_json, render_markdown

Benchmark = Callable[[Sizes, Callable[[str], None]], Section]

BENCHMARKS: dict[str, Benchmark] = {
    "client": _client_bench.run,
    "emulator": _emulator_bench.run,
    "reconciler": _reconcile_bench.run,
    "payouts": _payouts_bench.run,
    "ledger": _ledger_bench.run,
}


def _gateway_benchmarks() -> dict[str, Benchmark]:
    from benchmarks import _gateway_bench, _shared_bench, _webhook_bench

    return {
        "shared": _shared_bench.run,
        "ingest": _gateway_bench.run_ingest,
        "e2e": _gateway_bench.run_e2e,
        "webhook": _webhook_bench.run,
        "payouts_gateway": _payouts_bench.run_gateway,
    }


def _parser(names: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run pesa's benchmarks and write BENCHMARKS.md (figures are ratios "
        "against baselines measured in the same run).",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=names,
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(names)}",
    )
    parser.add_argument(
        "--size",
        choices=sorted(SIZES),
        default="default",
        help="preset sizes: tiny (smoke test), quick, default (about 10 min), issue "
        "(the sizes issue 5 asks for)",
    )
    parser.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="size_flag",
        help="same as --size quick",
    )
    for field in dataclasses.fields(Sizes):
        if field.name == "name":
            continue
        kind = float if field.type in (float, "float") else int
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            metavar="N",
            help=f"override the preset's {field.name}",
        )
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "BENCHMARKS.md",
        help="where to write the Markdown report [BENCHMARKS.md]",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="also write every figure as JSON here"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks; return the exit status (1 if one crashed)."""
    argv = sys.argv[1:] if argv is None else argv
    benchmarks = {**BENCHMARKS, **_gateway_benchmarks()}
    order = [
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
    ]
    args = _parser(order).parse_args(argv)
    sizes = SIZES[args.size_flag or args.size]
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(Sizes)
        if f.name != "name" and getattr(args, f.name, None) is not None
    }
    if overrides:
        sizes = dataclasses.replace(sizes, name=f"{sizes.name} (with overrides)", **overrides)
    chosen = [name for name in order if not args.only or name in args.only]
    command = shlex.join(["python", "-m", "benchmarks", *argv])
    database = os.environ.get("PESA_TEST_DATABASE_URL")
    if database:
        # The URL as typed, but never a password.
        command = f"PESA_TEST_DATABASE_URL={re.sub(r':[^:@/]+@', ':***@', database)} {command}"
    started = datetime.now(UTC)
    began = time.monotonic()

    def log(message: str) -> None:
        print(message, flush=True)

    sections: list[Section] = []
    crashed = False
    for name in chosen:
        log(f"== {name}")
        t0 = time.monotonic()
        try:
            section = benchmarks[name](sizes, log)
        except Exception as err:
            crashed = True
            traceback.print_exc()
            section = Section(key=name, title=name, what="", baseline="")
            section.skipped = f"crashed: {type(err).__name__}: {err}".splitlines()[0][:300]
        section.seconds = time.monotonic() - t0
        sections.append(section)
        for target in section.targets:
            log(f"   target {target.name}: {target.measured} -> {target.met}")
        if section.skipped:
            log(f"   skipped: {section.skipped}")
    seconds = time.monotonic() - began
    host = machine()
    args.output.write_text(
        render_markdown(
            sections,
            machine=host,
            sizes=sizes,
            command=command,
            started=started,
            seconds=seconds,
            issue_sizes=SIZES["issue"],
        )
    )
    if args.json is not None:
        args.json.write_text(
            render_json(sections, machine=host, sizes=sizes, command=command, started=started)
        )
    log(f"wrote {args.output} in {seconds / 60:.1f} min")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
