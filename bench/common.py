"""Shared plumbing of the benchmarks: machine description, tables, and bench/RESULTS.md upkeep.

Benchmarks are not tests: each measures ours and a baseline in the same run and reports the
ratio, so a slow or busy machine shifts both numbers and the ratio stays meaningful.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import schemas.markdown
from schemas.atomic import write_text_atomic

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_HEADER = (
    "# Benchmark results\n\n"
    "Each section is rewritten by its benchmark (`python -m bench.<name>`); ratios compare ours\n"
    "with a baseline measured in the same run on the same machine.\n"
)


@dataclass(frozen=True)
class Report:
    """One benchmark's outcome: a table, and notes saying what the numbers mean."""

    name: str  # module name, e.g. "download": the section key in RESULTS.md
    title: str
    rows: list[dict[str, Any]]
    notes: list[str]
    module: str = ""  # the bench module, when it differs from `name`


def base_parser(name: str, description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m bench.{name}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_PATH,
        help="markdown file whose section for this benchmark is replaced",
    )
    parser.add_argument(
        "--no-results", action="store_true", help="print the table only, leave RESULTS.md alone"
    )
    return parser


def machine_info() -> str:
    """nproc, CPU model, RAM and Python: enough to know whether two tables are comparable."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    ram = "? GiB"
    try:
        meminfo = Path("/proc/meminfo").read_text()
        found = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
        if found:
            ram = f"{int(found.group(1)) / 1024**2:.1f} GiB"
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # Other work on the machine slows CPU-bound code more than latency-bound baselines.
    load = "/".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    python = f"Python {platform.python_version()}"
    return f"{cores} cores (nproc), {model}, {ram} RAM, {python}; load avg {load} at the end"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """A GitHub table over the union of the rows' keys, in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    cells = [[row.get(col) for col in columns] for row in rows]
    return schemas.markdown.markdown_table(columns, cells, format_cell=_cell)


def ratio(baseline_seconds: float | None, ours_seconds: float | None) -> float | None:
    """How many times faster ours is (baseline time / our time)."""
    if not baseline_seconds or not ours_seconds:
        return None
    return baseline_seconds / ours_seconds


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def render_section(report: Report, command: str) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"## {report.title}",
        "",
        f"- Date: {when}",
        f"- Machine: {machine_info()}",
        f"- Command: `{command}`",
        "",
        markdown_table(report.rows),
    ]
    if report.notes:
        parts += ["", *(f"- {note}" for note in report.notes)]
    return "\n".join(parts) + "\n"


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def update_results(path: Path, name: str, section: str) -> None:
    """Replace (or append) this benchmark's section, leaving the others as they were."""
    start, end = _markers(name)
    text = path.read_text() if path.exists() else RESULTS_HEADER
    block = f"{start}\n{section}{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    write_text_atomic(path, text)  # a crash mid-write must not lose the other sections


def publish(report: Report, args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    """Print the table and notes; write them to the results file unless told not to."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(
        ["python -m", f"bench.{report.module or report.name}", *map(shlex.quote, argv)]
    )
    section = render_section(report, command)
    print(section)
    if not args.no_results:
        update_results(args.results, report.name, section)
        print(f"(section '{report.name}' written to {args.results})")


def benchmark_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Report],
) -> Callable[[Sequence[str] | None], None]:
    """A benchmark's `main(argv)`: parse, run, publish (what `python -m bench` calls)."""

    def main(argv: Sequence[str] | None = None) -> None:
        args = parse_args(argv)
        publish(run(args), args, argv)

    return main
