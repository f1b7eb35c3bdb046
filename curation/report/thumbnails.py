"""Thumbnails for the report's galleries: each stored image read once, shrunk, inlined as JPEG.

Paths may point anywhere fsspec reaches and the bytes may be hostile: a file that cannot be
previewed becomes a `Thumb` with the problem in words, never an exception.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass

import fsspec
from PIL import Image, ImageOps, UnidentifiedImageError

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


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def _make_thumb(path: str) -> Thumb:
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read(MAX_THUMB_SOURCE_BYTES + 1)
        if len(data) > MAX_THUMB_SOURCE_BYTES:
            return Thumb(None, "file too large to preview")
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_THUMB_PIXELS:
                return Thumb(None, f"too many pixels to preview ({im.width}x{im.height})")
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at reduced scale
            small = ImageOps.exif_transpose(im)
            small.thumbnail((THUMB_PX, THUMB_PX))
            rgb = _to_rgb(small)
    except FileNotFoundError:
        return Thumb(None, "stored file missing")
    except UnidentifiedImageError:
        return Thumb(None, "cannot decode: not an image")
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways; show, don't crash
        return Thumb(None, clip(f"cannot decode: {type(exc).__name__}: {exc}", 90))
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=80)
    return Thumb("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), None)


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
