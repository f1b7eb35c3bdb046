"""Dedupe rule benchmark: today's whole-picture search vs the three views + colour look.

Both run `curation.dedupe_confirm.confirmed_pairs` on the same synthetic image_hashes table:
random 64-bit hashes per view stand in for unrelated images, a share of rows are planted copies
of another row (every view's hashes 1..d bits away, the same colour signature), and another
share are colourways (the same hashes, another hue histogram). Today's rule is the whole
picture's phash search and dhash filter alone; the new one searches each view and confirms the
candidates by colour. Ours must find every planted copy and no colourway.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from bench.common import Report, base_parser, benchmark_main, timed
from curation.dedupe_confirm import DEFAULT_RULE, DedupeRule, confirmed_pairs, view_columns
from curation.images.views import HUE_BINS, VIEWS
from schemas.tables import IMAGE_HASHES_SCHEMA

TODAY = replace(
    DEFAULT_RULE, views={"whole": DEFAULT_RULE.views["whole"]}, merge_colour_variants=True
)


def _flip(rng: np.random.Generator, values: np.ndarray, max_bits: int) -> np.ndarray:
    """Each value with 1..max_bits random bits flipped."""
    out = values.copy()
    for k in range(values.size):
        bits = rng.choice(64, size=int(rng.integers(1, max_bits + 1)), replace=False)
        out[k] ^= np.uint64(sum(1 << int(b) for b in bits))
    return out


def _signature(n: int, hue: np.ndarray) -> np.ndarray:
    """(n, 1 + HUE_BINS) colour signatures: chroma 20, all hue weight in bin `hue`."""
    out = np.zeros((n, 1 + HUE_BINS), np.uint8)
    out[:, 0] = 20
    out[np.arange(n), 1 + hue] = 255
    return out


def fixed_width_binary(rows: np.ndarray) -> pl.Series:
    """A Binary series whose k-th value is the bytes of rows[k] ((n, w) uint8), built without
    one Python bytes object per row (10M of them take longer than the table's hashes)."""
    n, width = rows.shape
    buffer = pa.py_buffer(np.ascontiguousarray(rows, np.uint8).tobytes())
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, buffer])
    return pl.Series(pl.from_arrow(array)).cast(pl.Binary)


def _pairs(a: np.ndarray, b: np.ndarray) -> set[tuple[int, int]]:
    return {(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)}


def synthetic_table(n: int, share: float, seed: int = 0) -> tuple[pl.DataFrame, set, set]:
    """(table, planted copy pairs, planted colourway pairs); pairs are (i < j) row indices."""
    rng = np.random.default_rng(seed)
    k = max(1, int(n * share))
    chosen = rng.choice(n, size=3 * k, replace=False)
    sources, copies, colourways = chosen[:k], chosen[k : 2 * k], chosen[2 * k :]
    hue = rng.integers(0, HUE_BINS, n)
    hue[copies] = hue[sources]
    hue[colourways] = (hue[sources] + HUE_BINS // 2) % HUE_BINS
    columns: dict[str, Any] = {"sha256": [f"s{i:07d}" for i in range(n)]}
    for view in VIEWS:
        p_col, d_col, c_col = view_columns(view)
        limits = DEFAULT_RULE.views[view]
        for col, limit in ((p_col, limits.max_phash), (d_col, limits.max_dhash)):
            values = rng.integers(0, np.iinfo(np.uint64).max, n, np.uint64, endpoint=True)
            values[copies] = _flip(rng, values[sources], limit)
            values[colourways] = values[sources]
            columns[col] = values
        columns[c_col] = fixed_width_binary(_signature(n, hue))
    columns["hash_version"] = np.full(n, 2, np.int32)
    frame = pl.DataFrame(columns, schema=IMAGE_HASHES_SCHEMA)
    return frame, _pairs(sources, copies), _pairs(sources, colourways)


def measure(n: int, share: float) -> list[dict[str, Any]]:
    frame, copies, colourways = synthetic_table(n, share)
    rows = []
    base_s = None
    rules: list[tuple[str, DedupeRule]] = [
        ("today: whole phash <= 10, dhash <= 12", TODAY),
        ("views (whole, box, centre) + colour look", DEFAULT_RULE),
    ]
    for label, rule in rules:
        pairs, seconds = timed(lambda rule=rule: confirmed_pairs(frame, rule))
        found = {tuple(p) for p in pairs.tolist()}
        base_s = base_s or seconds
        rows.append(
            {
                "n hashes": n,
                "rule": label,
                "pairs": len(found),
                "recall of copies": len(copies & found) / len(copies),
                "colourways merged": f"{len(colourways & found)}/{len(colourways)}",
                "seconds": seconds,
                "cost vs today": seconds / base_s,
            }
        )
        print(rows[-1], flush=True)
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("dedupe_rule", __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--planted-share", type=float, default=0.001, help="copies per hash")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    rows = [row for n in args.sizes for row in measure(n, args.planted_share)]
    notes = [
        "Each rule runs confirmed_pairs on the same table; the whole-picture search is the one "
        "bench.near_duplicates measures against brute force.",
        "Copies flip up to each view's limit in every view; colourways keep every hash and turn "
        "the hue by 180 degrees.",
        "Building the synthetic table is not timed; reading its columns is (confirmed_pairs).",
    ]
    return Report("dedupe_rule", "Dedupe rule at scale (issue 12 item 5)", rows, notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
