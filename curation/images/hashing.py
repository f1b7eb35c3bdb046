"""Perceptual hashes of stored images, computed once per sha256 and cached across runs.

Images are content-addressed, so a sha256 that was hashed in an earlier run has the same bytes
now: its hashes are reused from the previous `image_hashes` table instead of decoding the file
again, as long as the row was computed by this HASH_VERSION (a row from an older version lacks
the views dedupe now compares, and is recomputed). Only new sha256s cost a decode (spread over
threads, `curation.images.batch`). Hashes are taken of the normalised picture, so an
EXIF-rotated or transparent copy matches its upright, white-backed twin; each picture gives
three views (`curation.images.views`).
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl
from PIL import Image

from curation.images.batch import CPU_BOUND_WORKERS, map_images
from curation.images.decode import UnreadableImage, load_normalised, normalise, open_image
from curation.images.views import WORK_PX, product_views, to_uint64
from schemas.progress import Progress
from schemas.tables import IMAGE_HASHES_SCHEMA, empty_frame

logger = logging.getLogger(__name__)

# 2: the box and centre views and the colour signatures (curation.images.views).
HASH_VERSION = 2

# A large picture's views are cut at WORK_PX across, so decoding a 2000x2000 JPEG in full is
# wasted work: JPEG draft mode decodes it scaled down by up to 8x in the DCT domain, to the
# smallest size still >= this.
DRAFT_SIZE = (WORK_PX, WORK_PX)

HashRow = dict[str, Any]  # IMAGE_HASHES_SCHEMA's columns but sha256 and hash_version
_VALUE_COLUMNS = tuple(c for c in IMAGE_HASHES_SCHEMA if c not in ("sha256", "hash_version"))
_NULL_ROW: HashRow = dict.fromkeys(_VALUE_COLUMNS)

__all__ = ["HASH_VERSION", "compute_image_hashes", "hash_image", "hash_picture", "to_uint64"]


def hash_picture(rgb: Image.Image) -> HashRow:
    """Every view's hashes and colour signature of a normalised RGB picture."""
    views = product_views(rgb)
    row: HashRow = {}
    for name, view in views.items():
        prefix = "" if name == "whole" else f"{name}_"
        row[f"{prefix}phash"], row[f"{prefix}dhash"] = view.phash, view.dhash
        row[f"{prefix}colour"] = view.colour
    return row


def hash_image_object(img: Image.Image) -> HashRow:
    """The hashes of an opened, not yet decoded image: the same values as `hash_image`."""
    return hash_picture(normalise(img, draft_size=DRAFT_SIZE))


def hash_image_bytes(data: bytes) -> HashRow:
    """The hashes of image bytes: the same values as `hash_image` on the stored file."""
    return hash_image_object(open_image(data))


def hash_image(path: str) -> HashRow:
    """The hashes of one image, all null when it cannot be read or decoded.

    A broken file must not abort hashing of the other thousands: the caller sees nulls and
    decides (the ledger records the row as a bad image) instead of the run crashing.
    """
    try:
        return hash_picture(load_normalised(path, draft_size=DRAFT_SIZE))
    except UnreadableImage as exc:
        logger.warning("cannot hash image %s: %s", path, exc)
        return dict(_NULL_ROW)


# A stored row this version keeps as it is (null hashes are retried: see compute_image_hashes).
REUSABLE_HASHES = (
    (pl.col("hash_version") == HASH_VERSION)
    & pl.col("phash").is_not_null()
    & pl.col("dhash").is_not_null()
)


def _reusable(previous: pl.DataFrame, todo: pl.DataFrame) -> pl.DataFrame:
    """The previous rows this run may keep: this version's, hashed, for a sha256 still wanted."""
    if "hash_version" not in previous.columns:
        return empty_frame(IMAGE_HASHES_SCHEMA)  # written before the views existed
    return (
        previous.select(list(IMAGE_HASHES_SCHEMA))
        .cast(IMAGE_HASHES_SCHEMA)
        .filter(REUSABLE_HASHES)
        .join(todo.select("sha256"), on="sha256", how="semi")
        .unique(subset="sha256", keep="first")
    )


def compute_image_hashes(
    images: pl.DataFrame,
    previous: pl.DataFrame | None = None,
    workers: int = CPU_BOUND_WORKERS,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """One row per distinct non-null sha256 of `images` (columns sha256, path), sorted by sha256.

    Hashes found in `previous` (an earlier output) are reused without touching the file. A
    previous row with null hashes is retried: a missing or unreadable file may have been a
    transient storage error, and such rows are rare enough that retrying is cheap.
    """
    todo = (
        images.select("sha256", "path")
        .filter(pl.col("sha256").is_not_null())
        .unique(subset="sha256", keep="first", maintain_order=True)
    )
    cached = empty_frame(IMAGE_HASHES_SCHEMA)
    if previous is not None and previous.height:
        cached = _reusable(previous, todo)
        todo = todo.join(cached.select("sha256"), on="sha256", how="anti")
    rows = map_images(hash_image, todo["path"].to_list(), workers, progress)
    fresh = pl.DataFrame(
        {
            "sha256": todo["sha256"],
            **{c: [row[c] for row in rows] for c in _VALUE_COLUMNS},
            "hash_version": [HASH_VERSION] * todo.height,
        },
        schema=IMAGE_HASHES_SCHEMA,
    )
    return pl.concat([cached, fresh]).sort("sha256")
