"""`python -m bench`: run the CPU benchmarks one after another and update bench/RESULTS.md.

Sizes are each benchmark's defaults (the issue's sizes) unless --quick shrinks them to check
that everything runs. The end-to-end run takes minutes on its own: add it with --with-e2e.
The GPU half of the training benchmark needs a CUDA box: `python -m bench.training_gpu`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULTS_PATH

# Module -> extra arguments for the full run and for --quick.
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    # Row 1's size and repeated pairs; the serial baseline would take ~6 min alone at 3,000
    # URLs, so 250 are timed and scaled.
    "download": (
        ["--images", "3000", "--serial-limit", "250", "--pairs", "5"],
        ["--images", "60", "--serial-limit", "20"],
    ),
    "hashing": ([], ["--images", "150", "--photos", "30", "--photo-size", "512"]),
    "near_duplicates": ([], ["--sizes", "20000", "--distances", "4", "--sample", "16"]),
    "dedupe_rule": ([], ["--sizes", "20000"]),
    # 1M, 2M, 4M and 10M images, each in its own interpreter: ~15-30 min on 2 cores.
    "dedupe_scale": ([], ["--sizes", "20000", "40000"]),
    "scale": ([], []),
    "validation": ([], ["--rows", "5000"]),
    # 90 s of training per configuration + answering the test split: ~4 min on 2 cores.
    "training": ([], ["--budget-s", "10", "--eval-samples", "16"]),
}
E2E = "e2e"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks, not numbers")
    parser.add_argument("--with-e2e", action="store_true", help="also time `make demo`")
    parser.add_argument("--only", nargs="+", choices=[*BENCHMARKS, E2E], help="run just these")
    parser.add_argument("--results", type=Path, default=RESULTS_PATH)
    parser.add_argument("--no-results", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = args.only or [*BENCHMARKS, *([E2E] if args.with_e2e else [])]
    common = ["--no-results"] if args.no_results else []
    if not args.no_results and args.results.resolve() != RESULTS_PATH:
        common = ["--results", str(args.results)]
    failed = []
    for name in names:
        full, quick = BENCHMARKS.get(name, ([], []))
        extra = quick if args.quick else full
        print(f"=== bench.{name} {' '.join(extra)}", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main([*extra, *common])
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            print(f"bench.{name} FAILED: {type(exc).__name__}: {exc}", flush=True)
            failed.append(name)
        print(f"=== bench.{name} took {time.perf_counter() - start:.0f} s\n", flush=True)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
