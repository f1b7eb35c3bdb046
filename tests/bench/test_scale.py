"""The 10M-rows extrapolation's arithmetic (bench/scale.py) on numbers small enough to check."""

from __future__ import annotations

import pytest

from bench import scale
from bench.scale import ScaleInputs, extrapolate

# 1,000 rows in 4 shards of 250; 10 images/s each way: 25 s + 25 s per shard.
SMALL = ScaleInputs(
    rows=1000, download_per_worker=10.0, hashing_per_worker=10.0, dedupe_s=36.0, shards=4
)


def total_s(inputs: ScaleInputs, workers: int) -> float:
    return extrapolate(inputs, workers)["total h"] * 3600


def test_one_wave_per_shard_each_worker_takes() -> None:
    assert total_s(SMALL, 1) == pytest.approx(4 * 50 + 36)
    assert total_s(SMALL, 2) == pytest.approx(2 * 50 + 36)
    assert total_s(SMALL, 4) == pytest.approx(50 + 36)


def test_workers_beyond_the_shards_change_nothing() -> None:
    assert total_s(SMALL, 8) == total_s(SMALL, 4)
    assert extrapolate(SMALL, 8)["waves"] == 1


def test_an_uneven_split_costs_a_whole_wave() -> None:
    five = ScaleInputs(1000, 10.0, 10.0, 0.0, shards=5)  # shards of 200: 40 s each
    assert extrapolate(five, 4)["waves"] == 2
    assert total_s(five, 4) == pytest.approx(2 * 40)


def test_download_cap_and_shard_overhead() -> None:
    capped = ScaleInputs(1000, 10.0, 10.0, 0.0, shards=4, download_cap=20.0, shard_overhead_s=3)
    row = extrapolate(capped, 4)  # 4 workers share 20 images/s: 5 each, 50 s per shard
    assert row["download h"] * 3600 == pytest.approx(50)
    assert total_s(capped, 4) == pytest.approx(50 + 25 + 3)
    assert total_s(capped, 1) == pytest.approx(4 * (25 + 25 + 3))  # one worker stays under it


def test_the_dedupe_does_not_shrink_with_workers() -> None:
    rows = scale.table(SMALL, [1, 2, 4])
    assert [r["dedupe h"] for r in rows] == [SMALL.dedupe_s / 3600] * 3
    assert rows[-1]["speed-up vs 1 worker"] == pytest.approx(236 / 86)
    assert rows[-1]["dedupe share"] == pytest.approx(36 / 86)


def test_cli_defaults_are_the_results_rows() -> None:
    args = scale.parse_args([])
    assert args.download_per_worker == scale.DOWNLOAD_PER_WORKER
    assert args.workers == [1, 2, 4, 8, 16] and args.rows == 10_000_000
    assert len(scale.run(args).rows) == 5
