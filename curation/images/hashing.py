"""Perceptual hashes of stored images, computed once per sha256 and cached across runs.

Images are content-addressed, so a sha256 that was hashed in an earlier run has the same bytes
now: its hashes are reused from the previous `image_hashes` table instead of decoding the file
again. Only new sha256s cost a decode (spread over threads, `curation.images.batch`). Hashes
are taken of the normalised picture, so an EXIF-rotated or transparent copy matches its
upright, white-backed twin.
"""

from __future__ import annotations

import logging

import imagehash
import numpy as np
import polars as pl
from PIL import Image

from curation.images.batch import map_images
from curation.images.decode import UnreadableImage, load_normalised, normalise, open_image
from schemas.progress import Progress
from schemas.tables import IMAGE_HASHES_SCHEMA, empty_frame

logger = logging.getLogger(__name__)

# phash resizes to 32x32 and dhash to 9x8 grayscale, so decoding a 2000x2000 colour JPEG in full
# is wasted work. JPEG draft mode lets libjpeg decode only the luma channel, scaled down by up
# to 8x in the DCT domain, to the smallest size still >= this. 64 keeps a 2x margin over the 32
# pixels the phash resize needs, so the antialiasing filter still sees real detail.
DRAFT_SIZE = (64, 64)

HashPair = tuple[int | None, int | None]


def _to_uint64(h: imagehash.ImageHash) -> int:
    """The 8x8 bit matrix as one 64-bit int, row-major, first bit most significant."""
    return int.from_bytes(np.packbits(h.hash.flatten()).tobytes(), "big")


def hash_picture(gray: Image.Image) -> tuple[int, int]:
    """(phash, dhash) of a normalised grayscale picture."""
    return _to_uint64(imagehash.phash(gray)), _to_uint64(imagehash.dhash(gray))


def hash_image_object(img: Image.Image) -> tuple[int, int]:
    """(phash, dhash) of an opened, not yet decoded image: the same bits as `hash_image`."""
    return hash_picture(normalise(img, draft_size=DRAFT_SIZE, grayscale=True))


def hash_image_bytes(data: bytes) -> tuple[int, int]:
    """(phash, dhash) of image bytes: the same bits as `hash_image` on the stored file."""
    return hash_image_object(open_image(data))


def hash_image(path: str) -> HashPair:
    """(phash, dhash) of one image, or (None, None) when it cannot be read or decoded.

    A broken file must not abort hashing of the other thousands: the caller sees nulls and
    decides (the ledger records the row as a bad image) instead of the run crashing.
    """
    try:
        return hash_picture(load_normalised(path, draft_size=DRAFT_SIZE, grayscale=True))
    except UnreadableImage as exc:
        logger.warning("cannot hash image %s: %s", path, exc)
        return None, None


def compute_image_hashes(
    images: pl.DataFrame,
    previous: pl.DataFrame | None = None,
    workers: int | None = None,
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
        cached = (
            previous.select(list(IMAGE_HASHES_SCHEMA))
            .cast(IMAGE_HASHES_SCHEMA)
            .filter(pl.col("phash").is_not_null() & pl.col("dhash").is_not_null())
            .join(todo.select("sha256"), on="sha256", how="semi")
            .unique(subset="sha256", keep="first")
        )
        todo = todo.join(cached.select("sha256"), on="sha256", how="anti")
    pairs = map_images(hash_image, todo["path"].to_list(), workers, progress)
    fresh = pl.DataFrame(
        {
            "sha256": todo["sha256"],
            "phash": [p for p, _ in pairs],
            "dhash": [d for _, d in pairs],
        },
        schema=IMAGE_HASHES_SCHEMA,
    )
    return pl.concat([cached, fresh]).sort("sha256")
