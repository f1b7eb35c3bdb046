"""The normalised picture of every stored image, addressed like the originals.

`product_images` keeps the original's sha256 (what the URL served); `normalised_sha256` and
`normalised_path` name the pixels everything downstream uses and the export embeds. Where
normalising changes nothing (a plain, upright RGB JPEG) they are the original's own; otherwise
the normalised picture is stored as a lossless PNG beside the originals. Content addressing makes
this cacheable per sha256 across runs, like the hashes.
"""

from __future__ import annotations

import logging

import fsspec
import polars as pl

from curation.images import store
from curation.images.batch import map_images
from curation.images.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, normalised_bytes
from schemas.progress import Progress
from schemas.tables import IMAGE_STATUS_BAD_IMAGE, IMAGE_STATUS_OK

logger = logging.getLogger(__name__)

REASON_NORMALISE = "normalise"  # stored, but its pixels could not be made into a picture

_Address = tuple[str | None, str | None, str | None]  # (sha256, path, problem)


def normalise_stored(path: str, sha256: str, store_root: str) -> _Address:
    """(normalised sha256, normalised path, None), or (None, None, problem)."""
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read(DEFAULT_MAX_BYTES + 1)
        if len(data) > DEFAULT_MAX_BYTES:
            return None, None, f"file over {DEFAULT_MAX_BYTES} bytes"
        png = normalised_bytes(data, max_pixels=DEFAULT_MAX_PIXELS)
    except Exception as exc:  # noqa: BLE001 - one bad file is one row's problem, not the run's
        logger.warning("cannot normalise %s: %s: %s", path, type(exc).__name__, exc)
        return None, None, f"{type(exc).__name__}: {exc}"[:120]
    if png is None:
        return sha256, path, None
    return store.sha256_hex(png), store.store_image_bytes(store_root, png, "png"), None


def _reusable(previous: pl.DataFrame | None) -> dict[str, tuple[str, str]]:
    """sha256 -> (normalised sha256, path) from the previous table, where the file is there."""
    if previous is None or "normalised_sha256" not in previous.columns:
        return {}
    rows = (
        previous.filter(pl.col("normalised_sha256").is_not_null() & pl.col("sha256").is_not_null())
        .unique(subset="sha256", keep="first")
        .select("sha256", "normalised_sha256", "normalised_path")
        .rows()
    )
    return {sha: (nsha, npath) for sha, nsha, npath in rows}


def attach_normalised(
    images: pl.DataFrame,
    store_root: str,
    previous: pl.DataFrame | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """`images` (product_images columns) with normalised_sha256 / normalised_path filled in.

    Each distinct stored sha256 is normalised once; an earlier table's answer is reused when
    its file is still in the store. A stored image that cannot be normalised becomes
    `bad_image` with a `normalise: …` reason, never a silent drop.
    """
    todo = (
        images.filter((pl.col("status") == IMAGE_STATUS_OK) & pl.col("sha256").is_not_null())
        .unique(subset="sha256", keep="first", maintain_order=True)
        .select("sha256", "path")
        .rows()
    )
    cached = _reusable(previous)

    def one(row: tuple[str, str]) -> _Address:
        sha, path = row
        hit = cached.get(sha)
        if hit is not None and (hit[0] == sha or store.exists(hit[1])):
            return hit[0], hit[1], None
        return normalise_stored(path, sha, store_root)

    found = map_images(one, todo, workers, progress)
    table = pl.DataFrame(
        {
            "sha256": [sha for sha, _ in todo],
            "normalised_sha256": [a[0] for a in found],
            "normalised_path": [a[1] for a in found],
            "normalise_problem": [a[2] for a in found],
        },
        schema={
            "sha256": pl.String(),
            "normalised_sha256": pl.String(),
            "normalised_path": pl.String(),
            "normalise_problem": pl.String(),
        },
    )
    base = images.drop("normalised_sha256", "normalised_path", strict=False)
    joined = base.join(table, on="sha256", how="left", nulls_equal=False)
    problem = pl.col("normalise_problem").is_not_null() & (pl.col("status") == IMAGE_STATUS_OK)
    return joined.with_columns(
        status=pl.when(problem).then(pl.lit(IMAGE_STATUS_BAD_IMAGE)).otherwise(pl.col("status")),
        reason=pl.when(problem)
        .then(pl.lit(f"{REASON_NORMALISE}: ") + pl.col("normalise_problem"))
        .otherwise(pl.col("reason")),
        normalised_sha256=pl.when(pl.col("status") == IMAGE_STATUS_OK).then(
            pl.col("normalised_sha256")
        ),
        normalised_path=pl.when(pl.col("status") == IMAGE_STATUS_OK).then(
            pl.col("normalised_path")
        ),
    ).drop("normalise_problem")
