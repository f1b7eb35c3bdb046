"""What 10M catalogue rows take on K workers (issue 17 item 4): arithmetic over measured rates.

Nothing runs here but the arithmetic; the inputs are measured elsewhere and passed as arguments
(defaults: bench/RESULTS.md summary rows 1, 2 and 3c, until the sharded Celery run measures
per-worker rates of its own). The model, and the assumptions it rests on:

- Rows are split into S shards of equal size; a worker takes one shard at a time, downloads its
  images, then hashes them. With S >= K that is ceil(S / K) waves of one shard per worker;
  workers beyond S sit idle.
- Download is network-bound: each worker fetches at its own measured rate, independently of the
  others, unless `--download-cap` (images/s for all workers together: a shared link, or the
  CDNs' politeness limit) is lower.
- Hashing is CPU-bound: one worker = one core at the measured single-core rate, no contention
  between workers on separate cores.
- Every row has one image URL, fetched and hashed once (no retries, no cache hits): an upper
  bound for the sharded steps.
- The dedupe is global (every image against every other) and runs once, in one process, after
  the last shard: its time at the row count is measured, not modelled (bench.dedupe_scale).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.common import Report, base_parser, benchmark_main

# bench/RESULTS.md summary row 1: ours on one client core, 64 threads, 50 ms latency.
DOWNLOAD_PER_WORKER = 596.0
# Row 2: ours on 1 thread over the demo's 192 px files (3 views + colour); 1024 px pictures
# measured 123 images/s, so the smaller figure is the conservative one.
HASHING_PER_WORKER = 112.0
# Row 3c: curation.dedupe.duplicate_clusters at 10M images, measured by bench.dedupe_scale.
DEDUPE_10M_S = 1910.0
WORKER_COUNTS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class ScaleInputs:
    rows: int
    download_per_worker: float  # images/s
    hashing_per_worker: float  # images/s
    dedupe_s: float  # measured at `rows`
    shards: int
    shard_overhead_s: float = 0.0  # task start-up, shard read/write, per shard
    download_cap: float = 0.0  # images/s over all workers; 0: none


def extrapolate(inputs: ScaleInputs, workers: int) -> dict[str, Any]:
    """Wall time of the sharded steps and the dedupe for `workers` workers."""
    active = min(workers, inputs.shards)
    waves = math.ceil(inputs.shards / active)
    shard_rows = inputs.rows / inputs.shards
    download_rate = inputs.download_per_worker
    if inputs.download_cap:
        download_rate = min(download_rate, inputs.download_cap / active)
    download_s = waves * shard_rows / download_rate
    hashing_s = waves * shard_rows / inputs.hashing_per_worker
    sharded_s = download_s + hashing_s + waves * inputs.shard_overhead_s
    total_s = sharded_s + inputs.dedupe_s
    return {
        "workers K": workers,
        "shards": inputs.shards,
        "waves": waves,
        "download h": download_s / 3600,
        "hashing h": hashing_s / 3600,
        "sharded steps h": sharded_s / 3600,
        "dedupe h": inputs.dedupe_s / 3600,
        "total h": total_s / 3600,
        "dedupe share": inputs.dedupe_s / total_s,
    }


def table(inputs: ScaleInputs, worker_counts: Sequence[int]) -> list[dict[str, Any]]:
    rows = [extrapolate(inputs, k) for k in worker_counts]
    one = extrapolate(inputs, 1)["total h"]
    for row in rows:
        row["speed-up vs 1 worker"] = one / row["total h"]
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("scale", __doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--download-per-worker", type=float, default=DOWNLOAD_PER_WORKER)
    parser.add_argument("--hashing-per-worker", type=float, default=HASHING_PER_WORKER)
    parser.add_argument(
        "--dedupe-s", type=float, default=DEDUPE_10M_S, help="measured dedupe time at --rows"
    )
    parser.add_argument("--shards", type=int, default=16, help="at least the largest K")
    parser.add_argument("--shard-overhead-s", type=float, default=0.0)
    parser.add_argument("--download-cap", type=float, default=0.0, help="images/s, all workers")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    inputs = ScaleInputs(
        rows=args.rows,
        download_per_worker=args.download_per_worker,
        hashing_per_worker=args.hashing_per_worker,
        dedupe_s=args.dedupe_s,
        shards=args.shards,
        shard_overhead_s=args.shard_overhead_s,
        download_cap=args.download_cap,
    )
    notes = [
        f"Inputs: {inputs.rows:,} rows in {inputs.shards} shards; download "
        f"{inputs.download_per_worker:g} images/s per worker, hashing "
        f"{inputs.hashing_per_worker:g} images/s per worker, dedupe "
        f"{inputs.dedupe_s:,.0f} s at {inputs.rows:,} images, shard overhead "
        f"{inputs.shard_overhead_s:g} s, download cap "
        f"{f'{inputs.download_cap:g} images/s' if inputs.download_cap else 'none'}.",
        "Assumptions (bench/scale.py): shards of equal size, one per worker at a time, "
        "ceil(S/K) waves; download network-bound at the per-worker rate, independent across "
        "workers up to the cap; hashing CPU-bound, one core per worker; one image per row, "
        "fetched and hashed once; the dedupe global, in one process, after the last shard.",
        "Defaults: download and hashing from summary rows 1 and 2 (single-machine benches), "
        "the dedupe from row 3c (measured at 10M); the command line above names any input "
        "taken from elsewhere, such as the sharded Celery run's per-worker rates.",
    ]
    title = "10M rows on K workers (issue 17 item 4, extrapolated)"
    return Report("scale", title, table(inputs, args.workers), notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
