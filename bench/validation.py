"""Validation benchmark: `validate_catalogue` vs a per-row `CatalogueRow(**row)` loop.

The rows are the demo catalogue's (~2 % planted invalid) repeated to the requested size, as
raw text, exactly what the `validated_products` asset receives. All three paths produce the
same verdicts; the table checks that the counts agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from pydantic import ValidationError

from bench.common import Report, base_parser, benchmark_main, ratio, timed
from curation.catalogue import load_raw_catalogue
from curation.validation import validate_catalogue, validate_catalogue_reference
from demo import build_demo_catalogue
from schemas.catalogue_row import CatalogueRow
from schemas.tables import CATALOGUE_COLUMNS


def scaled_catalogue(demo_dir: Path, n_rows: int) -> pl.DataFrame:
    """The demo repeated to n_rows; per-product columns get a copy suffix so they stay as
    distinct as in a real catalogue of that size (brand, categories, flags repeat, as there)."""
    raw = load_raw_catalogue(str(build_demo_catalogue(demo_dir).catalogue_path))
    copies = -(-n_rows // raw.height)
    big = pl.concat([raw] * copies).head(n_rows)
    copy = (pl.int_range(0, big.height) // raw.height).cast(pl.String)
    return big.with_columns(
        row_index=pl.int_range(0, big.height, dtype=pl.Int64),
        row_id=pl.format("{}-{}", pl.col("row_id"), copy),
        product_code=pl.col("product_code") + copy,
        title=pl.col("title") + " " + copy,
        itemurl=pl.col("itemurl") + "?copy=" + copy,
        imageurl=pl.col("imageurl") + "?copy=" + copy,
    )


def per_row_loop(raw: pl.DataFrame) -> int:
    """The obvious script: build the model from each row dict, count the ones that pass."""
    passed = 0
    for record in raw.select(CATALOGUE_COLUMNS).iter_rows(named=True):
        try:
            CatalogueRow(**record)
        except ValidationError:
            continue
        passed += 1
    return passed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("validation", __doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--demo-dir", type=Path, default=None, help="where the demo is cached")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    demo_dir = args.demo_dir or Path(tempfile.gettempdir(), "catalogue-vlm-bench-demo")
    raw = scaled_catalogue(demo_dir, args.rows)
    loop_ok, loop_s = timed(lambda: per_row_loop(raw))
    (ref_ok, _), ref_s = timed(lambda: validate_catalogue_reference(raw))
    (ours_ok, ours_bad), ours_s = timed(lambda: validate_catalogue(raw))
    results = [
        ("per-row CatalogueRow(**row) loop", loop_s, loop_ok),
        ("validate_catalogue_reference (TypeAdapter per row)", ref_s, ref_ok.height),
        ("ours: validate_catalogue (polars + pydantic for doubtful rows)", ours_s, ours_ok.height),
    ]
    rows = [
        {
            "method": name,
            "seconds": seconds,
            "rows/s": raw.height / seconds,
            "valid rows": valid,
            "speed-up": ratio(loop_s, seconds),
        }
        for name, seconds, valid in results
    ]
    notes = [
        f"{raw.height:,} rows: the demo catalogue repeated; {ours_bad['row_id'].n_unique():,} "
        "rows are invalid and go through pydantic for their messages.",
        "The loop and the reference only build models; ours also returns the validated and "
        "rejected tables.",
    ]
    if len({valid for _, _, valid in results}) != 1:
        notes.append("MISMATCH: the paths disagree on the number of valid rows.")
    return Report("validation", "Validation (4: raw catalogue rows)", rows, notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
