"""Thumbnails for the report's galleries: each stored image read once, shrunk, inlined as JPEG.

Paths may point anywhere fsspec reaches and the bytes may be hostile: a file that cannot be
previewed becomes a `Thumb` with the problem in words, never an exception. Thumbnails show the
normalised picture (curation.images.decode), the one the model trains on.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

from curation.images.decode import UnreadableImage, encode_jpeg, load_normalised
from curation.report.statistics import clip

THUMB_PX = 96
MAX_THUMB_SOURCE_BYTES = 32 * 1024 * 1024
MAX_THUMB_PIXELS = 64_000_000


@dataclass(frozen=True)
class Thumb:
    uri: str | None
    problem: str | None


def _resolve(path: str, root: str | None) -> str:
    if root is None or "://" in path or os.path.isabs(path):
        return path
    return f"{root.rstrip('/')}/{path}"


def _make_thumb(path: str) -> Thumb:
    try:
        small = load_normalised(
            path,
            draft_size=(THUMB_PX * 2, THUMB_PX * 2),  # JPEG: decode at reduced scale
            max_bytes=MAX_THUMB_SOURCE_BYTES,
            max_pixels=MAX_THUMB_PIXELS,
        )
    except UnreadableImage as exc:
        return Thumb(None, clip(f"cannot preview: {exc}", 90))
    small.thumbnail((THUMB_PX, THUMB_PX))
    data = encode_jpeg(small, quality=80)
    return Thumb("data:image/jpeg;base64," + base64.b64encode(data).decode(), None)


class Thumbnails:
    """Each path read and encoded once: exact duplicates share one content-addressed file."""

    def __init__(self, root: str | None) -> None:
        self._root = root
        self._cache: dict[str, Thumb] = {}

    def get(self, path: str | None) -> Thumb:
        if not path:
            return Thumb(None, "no stored image")
        if path not in self._cache:
            self._cache[path] = _make_thumb(_resolve(path, self._root))
        return self._cache[path]
