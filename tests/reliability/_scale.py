"""A generated N-row catalogue through load, validation, dedupe and the ledger, timed per stage.

Run as `python -m tests.reliability._scale 200000` (prints one JSON line). Downloads are not
part of it (they are bound by the network, not by our code): product_images is synthesised
with the statuses a real run has, its paths reusing a small pool of image files.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from curation.catalogue import load_raw_catalogue
from curation.dedupe import duplicate_clusters
from curation.ledger import build_curation_ledger, ledger_counts, select_curated_products
from curation.validation import validate_catalogue
from schemas.tables import PRODUCT_IMAGES_SCHEMA
from tests.curation.fault_server import product_png_bytes

POOL_FILES = 64
INVALID_SHARE, FAILED_SHARE, BAD_SHARE, EXACT_DUP_SHARE, NEAR_DUP_SHARE = (
    0.03,
    0.02,
    0.01,
    0.05,
    0.01,
)


def generated_catalogue(n: int, seed: int = 0) -> pl.DataFrame:
    """DBQ-shaped rows: colour variants share titles, a few percent are broken on purpose."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    broken = rng.random(n) < INVALID_SHARE
    kind = rng.integers(0, 4, n)
    full = np.round(rng.uniform(50, 3000, n), 2)
    price = np.where(rng.random(n) < 0.3, np.round(full * 0.7, 2), full)
    categories = np.array(["SCARVES", "COATS", "BAGS", "SHOES", "SHIRTS", "KNITWEAR"])
    frame = pl.DataFrame(
        {
            "website_name": "BURBERRY",
            "competence_date": "2023-11-05",
            "country_code": "USA",
            "currency_code": "USD",
            "brand": "BURBERRY",
            "category1_code": np.where(broken & (kind == 0), "N.A.", "WOMAN"),
            "category2_code": categories[index % len(categories)],
            "category3_code": categories[index % len(categories)],
            "product_code": [str(80_000_000 + i) for i in range(n)],
            "title": [f"Check Item {i // 3}" for i in range(n)],  # 3 colour variants each
            "itemurl": [f"https://shop.example/p/{i}" for i in range(n)],
            "imageurl": [f"https://img.example/{i}" for i in range(n)],
            "full_price": full.astype(str),
            "price": price.astype(str),
            "full_price_eur": np.round(full * 0.93, 2).astype(str),
            "price_eur": np.round(price * 0.93, 2).astype(str),
            "flg_discount": (price < full).astype(int).astype(str),
        }
    )
    breakage = {1: ("price", "NaN"), 2: ("title", ""), 3: ("imageurl", "javascript:alert(1)")}
    return frame.with_columns(
        pl.when(pl.Series(broken & (kind == k))).then(pl.lit(bad)).otherwise(name).alias(name)
        for k, (name, bad) in breakage.items()
    )


def synthetic_images(validated: pl.DataFrame, pool_dir: str, seed: int = 1) -> pl.DataFrame:
    """product_images for the validated rows: ok / download_failed / bad_image, exact copies,
    every stored path one of POOL_FILES files."""
    n = validated.height
    rng = np.random.default_rng(seed)
    roll = rng.random(n)
    status = np.select(
        [roll < FAILED_SHARE, roll < FAILED_SHARE + BAD_SHARE],
        ["download_failed", "bad_image"],
        "ok",
    )
    image_of = np.arange(n)
    copies = rng.random(n) < EXACT_DUP_SHARE
    image_of[copies] = rng.integers(0, n, copies.sum())  # an exact copy of another row's image
    ok = pl.col("status") == "ok"
    pool_file = (pl.col("image_of") % POOL_FILES).cast(pl.String).str.pad_start(2, "0")
    return (
        pl.DataFrame(
            {"row_id": validated["row_id"], "url": validated["imageurl"], "status": status}
        )
        .with_columns(image_of=pl.Series(image_of))
        .select(
            "row_id",
            "url",
            "status",
            reason=pl.when(ok)
            .then(pl.lit(None, pl.String))
            .when(pl.col("status") == "bad_image")
            .then(pl.lit("truncated: image file is truncated"))
            .otherwise(pl.lit("timeout: read")),
            sha256=pl.when(ok).then(pl.col("image_of").cast(pl.String).str.pad_start(64, "a")),
            path=pl.when(ok).then(pl.format("{}/{}.png", pl.lit(pool_dir), pool_file)),
            format=pl.when(ok).then(pl.lit("png")),
            width=pl.when(ok).then(pl.lit(64)),
            height=pl.when(ok).then(pl.lit(48)),
            bytes=pl.when(ok).then(pl.lit(1000)),
            attempts=pl.lit(1),
            elapsed_s=pl.lit(0.01),
        )
        # Plain upright RGB pictures: the normalised image is the stored original.
        .with_columns(normalised_sha256=pl.col("sha256"), normalised_path=pl.col("path"))
        .cast(PRODUCT_IMAGES_SCHEMA)  # type: ignore[arg-type]
    )


def synthetic_hashes(images: pl.DataFrame, seed: int = 2) -> pl.DataFrame:
    """Random 64-bit hashes per image; a few are near copies (2 bits away) of another."""
    shas = images["sha256"].drop_nulls().unique().sort()
    rng = np.random.default_rng(seed)
    phash = rng.integers(0, 2**63, len(shas), dtype=np.int64).astype(np.uint64)
    dhash = rng.integers(0, 2**63, len(shas), dtype=np.int64).astype(np.uint64)
    near = np.flatnonzero(rng.random(len(shas)) < NEAR_DUP_SHARE)
    phash[near] = phash[near - 1] ^ np.uint64(0b101)
    dhash[near] = dhash[near - 1] ^ np.uint64(0b1)
    return pl.DataFrame({"sha256": shas, "phash": phash, "dhash": dhash})


def run(n: int) -> dict[str, object]:
    timings: dict[str, float] = {}

    def timed(name: str, started: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - started, 2)
        return now

    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool"
        pool.mkdir()
        for k in range(POOL_FILES):
            (pool / f"{k:02d}.png").write_bytes(product_png_bytes(k))
        path = Path(tmp) / "catalogue.csv"
        generated = generated_catalogue(n)
        generated.write_csv(path)
        planted_invalid = generated.filter(
            (pl.col("category1_code") == "N.A.")
            | (pl.col("price") == "NaN")
            | (pl.col("title") == "")
            | pl.col("imageurl").str.starts_with("javascript:")
        ).height
        del generated
        t = time.perf_counter()
        raw = load_raw_catalogue(str(path))
        t = timed("load", t)
        validated, rejected = validate_catalogue(raw)
        t = timed("validate", t)
        images = synthetic_images(validated, str(pool))
        hashes = synthetic_hashes(images)
        t = time.perf_counter()
        ok = images.filter(pl.col("status") == "ok").select("row_id", "sha256", "width", "height")
        joined = ok.join(
            validated.select("row_id", "row_index", "title", "category3_code", "full_price"),
            on="row_id",
        )
        clusters = duplicate_clusters(joined, hashes)
        t = timed("dedupe", t)
        ledger = build_curation_ledger(raw, rejected, images, clusters)
        curated = select_curated_products(ledger, validated, images, clusters)
        timed("ledger", t)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "rows": raw.height,
        "ledger_rows": ledger.height,
        "ledger_unique_ids": ledger["row_id"].n_unique(),
        "curated": curated.height,
        "planted_invalid": planted_invalid,
        "outcomes": ledger_counts(ledger),
        "seconds": timings,
        "total_s": round(sum(timings.values()), 2),
        "peak_rss_mib": round(peak_mib),
    }


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)))
