"""Perceptual hashes of stored images, computed once per sha256 and cached across runs.

Images are content-addressed, so a sha256 that was hashed in an earlier run has the same bytes
now: its hashes are reused from the previous `image_hashes` table instead of decoding the file
again. Only new sha256s cost a decode, and those are spread over worker threads: Pillow
releases the GIL while it reads and decodes, and a thread costs nothing to start, where a spawned
process costs ~1 s of imports, more than decoding a few thousand small images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import fsspec
import imagehash
import numpy as np
import polars as pl
from PIL import Image

from schemas.tables import IMAGE_HASHES_SCHEMA, empty_frame

logger = logging.getLogger(__name__)

# Below this many images a thread pool's set-up and hand-offs are not worth it (a 192 px image
# hashes in ~0.5 ms), so small inputs hash on the calling thread.
MIN_IMAGES_FOR_THREADS = 16

# Images per task handed to a thread: large enough that scheduling is noise next to decoding,
# small enough that the last tasks do not leave cores idle.
MAX_CHUNK_SIZE = 64

# phash resizes to 32x32 and dhash to 9x8 grayscale, so decoding a 2000x2000 colour JPEG in full
# is wasted work. JPEG draft mode lets libjpeg decode only the luma channel, scaled down by up
# to 8x in the DCT domain, to the smallest size still >= this. 64 keeps a 2x margin over the 32
# pixels the phash resize needs, so the antialiasing filter still sees real detail.
DRAFT_SIZE = (64, 64)

HashPair = tuple[int | None, int | None]


def _to_uint64(h: imagehash.ImageHash) -> int:
    """The 8x8 bit matrix as one 64-bit int, row-major, first bit most significant."""
    return int.from_bytes(np.packbits(h.hash.flatten()).tobytes(), "big")


def _grayscale(img: Image.Image) -> Image.Image:
    img.draft("L", DRAFT_SIZE)  # a no-op for formats other than JPEG
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        # Transparent pixels hold arbitrary colour; flatten onto white as a shop page does.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return img.convert("L")


def hash_image_object(img: Image.Image) -> tuple[int, int]:
    """(phash, dhash) of an opened, not yet decoded image: the same bits as `hash_image`."""
    gray = _grayscale(img)
    return _to_uint64(imagehash.phash(gray)), _to_uint64(imagehash.dhash(gray))


def hash_image(path: str) -> HashPair:
    """(phash, dhash) of one image, or (None, None) when it cannot be read or decoded.

    A broken file must not abort hashing of the other thousands: the caller sees nulls and
    decides (the ledger records the row as a bad image) instead of the run crashing.
    """
    try:
        with fsspec.open(path, "rb") as f, Image.open(f) as img:
            return hash_image_object(img)
    except Exception as exc:  # any decoder failure means "no hash", by design
        logger.warning("cannot hash image %s: %s: %s", path, type(exc).__name__, exc)
        return None, None


def _hash_chunk(paths: Sequence[str]) -> list[HashPair]:
    return [hash_image(p) for p in paths]


def _hash_paths(paths: list[str], workers: int | None) -> list[HashPair]:
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if n_workers == 1 or len(paths) < MIN_IMAGES_FOR_THREADS:
        return _hash_chunk(paths)
    size = max(1, min(MAX_CHUNK_SIZE, -(-len(paths) // (n_workers * 4))))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]
    # Threads, not processes: decoding (and fsspec's file reads) run with the GIL released,
    # so two threads use two cores, with no spawn, no imports and no pickling of results.
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="hash") as pool:
        return [pair for chunk in pool.map(_hash_chunk, chunks) for pair in chunk]


def compute_image_hashes(
    images: pl.DataFrame,
    previous: pl.DataFrame | None = None,
    workers: int | None = None,
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
    pairs = _hash_paths(todo["path"].to_list(), workers)
    fresh = pl.DataFrame(
        {
            "sha256": todo["sha256"],
            "phash": [p for p, _ in pairs],
            "dhash": [d for _, d in pairs],
        },
        schema=IMAGE_HASHES_SCHEMA,
    )
    return pl.concat([cached, fresh]).sort("sha256")
