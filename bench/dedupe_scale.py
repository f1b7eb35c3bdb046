"""The global dedupe at scale (issue 17 item 4): `curation.dedupe.duplicate_clusters`, the
function the `duplicate_clusters` asset calls, with the default rule, at 1M..10M images.

Download and hashing shard by rows; the dedupe compares every image with every other, so it
runs once over all of them and its time at 10M is what `bench.scale` adds after the sharded
steps. Inputs are shaped like the real tables: image_hashes from `bench.dedupe_rule` (random
hashes per view, a share of planted copies and of colourways) with 64-hex-digit sha256s, and
image rows (row_id, row_index, sha256, size, title, category, price) in which a share of rows
reuse another row's image (exact duplicates). Each size runs in its own interpreter, so its
peak RSS is its own; building the inputs is neither timed nor counted in the dedupe's peak.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import resource
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import curation.dedupe
import curation.dedupe_confirm
from bench.common import Report, base_parser, benchmark_main, timed
from bench.dedupe_rule import fixed_width_binary, synthetic_table
from curation.dedupe import duplicate_clusters
from curation.dedupe_confirm import DEFAULT_RULE
from curation.hamming import _band_layout, _layout_cost

HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)


def _hex_ids(rng: np.random.Generator, n: int, digits: int) -> pl.Series:
    """n random lower-case hex strings of `digits` characters (sha256: 64, row_id: 16)."""
    raw = rng.integers(0, 256, (n, digits // 2), np.uint8)
    chars = np.empty((n, digits), np.uint8)
    chars[:, 0::2], chars[:, 1::2] = HEX_DIGITS[raw >> 4], HEX_DIGITS[raw & 15]
    return fixed_width_binary(chars).cast(pl.String)


def synthetic_inputs(
    n: int, near_share: float, exact_share: float, seed: int = 0
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """(images, image_hashes, planted): n distinct images and n * (1 + exact_share) rows.

    planted holds the row pairs (hash-row indices) of near copies and colourways, and the
    extra rows' source image. Copies and exact rows carry their source's title and category,
    as colour variants and re-listed products do.
    """
    hashes, copies, colourways = synthetic_table(n, near_share, seed)
    rng = np.random.default_rng(seed + 1)
    hashes = hashes.with_columns(sha256=_hex_ids(rng, n, 64))
    extra = rng.integers(0, n, int(n * exact_share))
    image_of = np.concatenate([np.arange(n), extra])  # each row's hash row
    product_of = np.arange(n)
    for i, j in copies:
        product_of[j] = product_of[i]
    rows = image_of.size
    images = (
        pl.DataFrame(
            {
                "row_id": _hex_ids(rng, rows, 16),
                "row_index": rng.permutation(rows),
                "sha256": hashes["sha256"].gather(image_of),
                "width": np.full(rows, 800),
                "height": np.full(rows, 800),
                "product": product_of[image_of],
            }
        )
        .with_columns(
            title=pl.format("Brand {} cotton shirt, regular fit", "product"),
            category3_code=(pl.col("product") % 200).cast(pl.String),
            full_price=(pl.col("product") % 97).cast(pl.Float64) + 9.99,
        )
        .drop("product")
    )
    planted = {"copies": copies, "colourways": colourways, "extra": extra}
    return images, hashes, planted


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Start the peak RSS afresh (Linux clear_refs 5 resets the high-water mark that getrusage
    reads), so the peak measured is the dedupe's, not the input build's."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def _timing(module: Any, name: str, spent: list[float]) -> Iterator[None]:
    """Patch module.name with a wrapper that adds its wall time to `spent`."""
    original: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out, seconds = timed(lambda: original(*args, **kwargs))
        spent.append(seconds)
        return out

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def _check(clusters: pl.DataFrame, hashes: pl.DataFrame, planted: dict[str, Any]) -> dict:
    """Planted copies in one cluster, colourways apart, exact rows with their source."""
    cluster_of = (
        hashes.select("sha256")
        .join(clusters.unique("sha256").select("sha256", "cluster_id"), on="sha256", how="left")
        .get_column("cluster_id")
        .to_numpy()
    )

    def together(pairs: set) -> int:
        return sum(cluster_of[i] == cluster_of[j] for i, j in pairs)

    return {
        "copies clustered": f"{together(planted['copies'])}/{len(planted['copies'])}",
        "colourways merged": f"{together(planted['colourways'])}/{len(planted['colourways'])}",
        "exact rows": int((clusters["match_kind"] == "exact").sum()),
    }


def measure(n: int, near_share: float, exact_share: float) -> dict[str, Any]:
    """One size, in this interpreter: build, then time duplicate_clusters and its parts."""
    images, hashes, planted = synthetic_inputs(n, near_share, exact_share)
    inputs_mib = _status_kib("VmRSS") / 1024
    build_peak_mib = _max_rss_mib()
    reset = _reset_peak_rss()
    pair_s: list[float] = []
    hamming_s: list[float] = []
    with (
        _timing(curation.dedupe, "confirmed_pairs", pair_s),
        _timing(curation.dedupe_confirm, "near_duplicate_pairs", hamming_s),
    ):
        clusters, seconds = timed(lambda: duplicate_clusters(images, hashes))
    row = {
        "n hashes": n,
        "image rows": images.height,
        "seconds": seconds,
        "Hamming searches s": sum(hamming_s),
        "rest of confirmed_pairs s": sum(pair_s) - sum(hamming_s),
        "outside confirmed_pairs s": seconds - sum(pair_s),
        "RSS with inputs MiB": inputs_mib,
        "peak RSS MiB": _max_rss_mib(),
        "peak RSS building MiB": build_peak_mib if reset else None,
        **_check(clusters, hashes, planted),
    }
    print(row, flush=True)
    return row


def search_model_s(n: int) -> float:
    """The Hamming search's own cost model (curation.hamming), summed over the rule's views, for
    n distinct hashes: tables grow with n, so the search scales faster than n."""
    total_ns = 0.0
    for limits in DEFAULT_RULE.views.values():
        m, tables = _band_layout(n, limits.max_phash)
        total_ns += _layout_cost(n, m, tables)
    return total_ns / 1e9


def projected(n: int, first: dict[str, Any]) -> dict[str, Any]:
    """A size not run: the first size's searches scaled by the model, the rest by n."""
    growth = search_model_s(n) / search_model_s(first["n hashes"])
    search = first["Hamming searches s"] * growth
    rest = (first["seconds"] - first["Hamming searches s"]) * n / first["n hashes"]
    peak = first["peak RSS MiB"] * n / first["n hashes"]
    return {
        "n hashes": n,
        "seconds": search + rest,
        "Hamming searches s": search,
        "peak RSS MiB": peak,
        "search model vs first": growth,
        "measured or projected": "projected",
    }


def measure_apart(n: int, near_share: float, exact_share: float) -> dict[str, Any]:
    """measure() in a fresh interpreter: each size's peak RSS is its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (n, near_share, exact_share))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("dedupe_scale", __doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 4_000_000, 10_000_000]
    )
    parser.add_argument(
        "--near-share", type=float, default=0.01, help="planted copies (and colourways) per image"
    )
    parser.add_argument(
        "--exact-share", type=float, default=0.05, help="extra rows reusing an image, per image"
    )
    parser.add_argument("--in-process", action="store_true", help="no child interpreter per size")
    parser.add_argument(
        "--project", type=int, nargs="*", default=[], help="sizes to project, not run"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> Report:
    one = measure if args.in_process else measure_apart
    rows = [one(n, args.near_share, args.exact_share) for n in args.sizes]
    base = rows[0]
    for row in rows:
        row["time vs first / size vs first"] = (row["seconds"] / base["seconds"]) / (
            row["n hashes"] / base["n hashes"]
        )
        row["search model vs first"] = search_model_s(row["n hashes"]) / search_model_s(
            base["n hashes"]
        )
        row["measured or projected"] = "measured"
    rows += [projected(n, base) for n in args.project]
    notes = [
        "seconds: one call of curation.dedupe.duplicate_clusters with DEFAULT_RULE (three views' "
        "Hamming searches, the colour look, connected components, canonical rows, placeholder "
        "and label-conflict flags). Hamming searches: its three near_duplicate_pairs calls; "
        "rest of confirmed_pairs: the dhash filter, colour look and pair merge; outside: the "
        "polars work around them (joins, the hash-row group-by, sorts, titles).",
        f"Planted: {args.near_share:g} near copies and as many colourways per image (every "
        f"view's hashes within its limits; colourways 180 degrees of hue away), "
        f"{args.exact_share:g} extra rows per image reusing another row's image.",
        "peak RSS: getrusage's ru_maxrss after the dedupe, its high-water mark reset (clear_refs)"
        " once the inputs were built, so inputs held plus the dedupe's own peak; peak RSS "
        "building: the same before the reset.",
        "time vs first / size vs first: 1.0 is linear scaling from the first size. search "
        "model vs first: curation.hamming's layout cost model (the one it picks band layouts "
        "with), summed over the three views, relative to the first size. Projected rows scale "
        "the first size's measured searches by that model, everything else and the peak RSS "
        "linearly.",
    ]
    return Report("dedupe_scale", "Global dedupe at scale (issue 17 item 4)", rows, notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
