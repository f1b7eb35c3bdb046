"""The sharded bench's arithmetic and its reading of the shard_runs metadata (bench/sharded.py)."""

from __future__ import annotations

import polars as pl
import pytest

from bench.sharded import concurrency, ledger_verdict, overhead_per_wave, parse_shard_runs
from schemas.markdown import markdown_table


def test_shard_runs_table_reads_back() -> None:
    columns = ("shard", "keys", "computed", "seconds", "host", "pid")
    table = markdown_table(columns, [(0, 1200, 1200, 3.5, "vm", 41), (1, 800, 0, 0.25, "vm", 42)])
    rows = parse_shard_runs(table)
    assert [(r["shard"], r["keys"], r["seconds"], r["pid"]) for r in rows] == [
        (0, 1200, 3.5, 41),
        (1, 800, 0.25, 42),
    ]


def test_concurrency_and_overhead() -> None:
    # 4 shards of 10 s on 2 workers in a 25 s wall: 1.6 at once; 25 - 40/2 = 5 s over 2 waves.
    assert concurrency([10.0] * 4, 25.0) == pytest.approx(1.6)
    assert overhead_per_wave([10.0] * 4, 25.0, workers=2) == pytest.approx(2.5)
    assert overhead_per_wave([10.0] * 4, 15.0, workers=2) == 0.0  # never negative
    assert concurrency([1.0], 0.0) == 0.0


def test_ledger_verdict_names_differing_columns() -> None:
    a = pl.DataFrame({"row_id": ["a", "b"], "outcome": ["curated", "duplicate"]})
    assert ledger_verdict(a, a.clone()) == "equal"
    b = a.with_columns(pl.lit("curated").alias("outcome"))
    assert ledger_verdict(a, b) == "differ in ['outcome']"
