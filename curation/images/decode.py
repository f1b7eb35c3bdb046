"""The one way image bytes become pixels: open with caps, then normalise to what a shop shows.

A catalogue's images come as phones and CDNs make them: EXIF-rotated, 16-bit, CMYK with an
embedded profile, transparent PNGs and WebPs whose hidden pixels hold any colour. A consumer of
the exported dataset calls `.convert("RGB")`, which drops alpha (a black background), clips
16-bit to white and ignores ICC profiles. `normalise` turns any decoded image into the picture a
shop page shows: first frame, orientation applied, 8 bits per channel, sRGB, composited on
white. Hashing, quality flags, dedupe, variants, the report and the export all go through it.
"""

from __future__ import annotations

import io
from functools import lru_cache

import fsspec
import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

# Stored images were verified on download; these caps guard readers against a swapped file.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000

WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
# Modes whose plain `.convert("RGB")` is already the right picture (with no alpha, no profile).
_PLAIN_MODES = frozenset({"RGB", "L", "1", "P"})
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_ORIENTATION_TAG = 0x0112
# Formats every Pillow a consumer may have decodes; an AVIF (Pillow >= 11.3 only) is stored
# again as PNG so that the exported dataset loads anywhere.
_PORTABLE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF"})
_SRGB = ImageCms.createProfile("sRGB")


class UnreadableImage(ValueError):
    """A stored file that cannot be read back as a picture (missing, over a cap, undecodable)."""


def check_truncation_guard() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With it set Pillow pads truncated images with grey instead of failing: refuse to run
        # rather than let broken images into the dataset.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False")


def open_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, formats: list[str] | None = None
) -> Image.Image:
    """Open (not yet decode) image bytes, refusing more than `max_pixels` before any decoding.

    `formats` (Pillow format names) limits which decoders may look at the bytes.
    """
    check_truncation_guard()
    img = Image.open(io.BytesIO(data), formats=formats)
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"size {width}x{height}")
    if width * height > max_pixels:
        raise UnreadableImage(f"{width * height} pixels > cap {max_pixels}")
    return img


def read_image(
    path: str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open a stored image file (any fsspec URL) with the byte and pixel caps."""
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise UnreadableImage("stored file missing") from exc
    if len(data) > max_bytes:
        raise UnreadableImage(f"file over {max_bytes} bytes")
    try:
        return open_image(data, max_pixels=max_pixels)
    except UnreadableImage:
        raise
    except Exception as exc:  # any decoder error on a stored file means "not a picture"
        raise UnreadableImage(f"{type(exc).__name__}: {exc}"[:120]) from exc


@lru_cache(maxsize=256)
def _is_srgb(profile: bytes) -> bool:
    try:
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    except (OSError, ImageCms.PyCMSError):
        return True  # an unreadable profile cannot be applied: treat the pixels as sRGB
    return "srgb" in description.lower()


def _needs_colour_transform(img: Image.Image) -> bool:
    profile = img.info.get("icc_profile")
    return img.mode == "CMYK" or bool(profile and not _is_srgb(profile))


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no orientation, not a bad image
        return 1


def upright_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: EXIF orientations 5-8 turn the picture a quarter."""
    width, height = img.size
    return (height, width) if _orientation(img) in (5, 6, 7, 8) else (width, height)


def is_normalised(img: Image.Image) -> bool:
    """Whether a plain `.convert("RGB")` of this opened image is already its normalised picture:
    8-bit colour or grey, no alpha or transparent colour, upright, sRGB (or untagged), in a
    format any Pillow reads."""
    return (
        img.format in _PORTABLE_FORMATS
        and img.mode in _PLAIN_MODES
        and "transparency" not in img.info
        and not _needs_colour_transform(img)
        and _orientation(img) == 1
    )


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greys scaled (not clipped) into 0..255."""
    if img.mode not in _DEEP_MODES:
        return img
    values = np.asarray(img, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if img.mode == "F":
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
    elif img.mode.startswith("I;16") or top > 255.0:
        scale = 255.0 / 65535.0 if top <= 65535.0 else 255.0 / top
    else:
        scale = 1.0
    return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8))


def _to_srgb(img: Image.Image) -> Image.Image:
    """Embedded ICC profiles (and CMYK) converted to sRGB; alpha is carried through."""
    if not _needs_colour_transform(img):
        return img
    profile = img.info.get("icc_profile")
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if profile:
        out_mode = "RGBA" if img.mode in _ALPHA_MODES else "RGB"
        if img.mode in ("LA", "La", "RGBa"):
            img = img.convert("RGBA")
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            converted = ImageCms.profileToProfile(img, source, _SRGB, outputMode=out_mode)
            if converted is not None:
                return converted
        except (OSError, ImageCms.PyCMSError, ValueError):
            pass  # a profile that does not fit the pixels: keep them as they are
    return img.convert("RGB") if img.mode == "CMYK" else img


def _on_white(img: Image.Image) -> Image.Image:
    """Any alpha (or transparent palette entry / colour key) composited onto white."""
    if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
        return img
    rgba = img.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (*WHITE, 255)), rgba)


def normalise(
    img: Image.Image, *, draft_size: tuple[int, int] | None = None, grayscale: bool = False
) -> Image.Image:
    """The picture a shop page shows, as 8-bit RGB (or L when `grayscale`).

    first frame -> EXIF orientation -> 16-bit/float scaled to 8 bit -> CMYK/ICC to sRGB ->
    alpha onto white. `draft_size` lets JPEG decode at a reduced scale (for hashes, thumbnails)
    before anything else; with `grayscale` a plain JPEG decodes its luma channel only.
    """
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if draft_size is not None:
        luma_only = grayscale and img.mode == "RGB" and not _needs_colour_transform(img)
        img.draft("L" if luma_only else None, draft_size)  # a no-op for formats other than JPEG
    img = ImageOps.exif_transpose(img)
    img = _on_white(_to_srgb(_to_8bit(img)))
    return img.convert("L" if grayscale else "RGB")


def load_normalised(
    path: str,
    *,
    draft_size: tuple[int, int] | None = None,
    grayscale: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """A stored image file read with the caps and normalised; UnreadableImage if it cannot be."""
    img = read_image(path, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return normalise(img, draft_size=draft_size, grayscale=grayscale)
    except Exception as exc:  # decoder errors surface on load: same meaning as on open
        raise UnreadableImage(f"{type(exc).__name__}: {exc}"[:120]) from exc


def normalised_bytes(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes | None:
    """Lossless PNG of the normalised picture, or None when the bytes already decode to it.

    PNG, not JPEG/WebP: the export then holds exactly the pixels that hashes, quality flags and
    the report saw, and these are the images (transparent, 16-bit, profiled) where a lossy
    re-encode would add artefacts the source never had. A plain RGB JPEG keeps its own bytes.
    """
    img = open_image(data, max_pixels=max_pixels)
    if is_normalised(img):
        return None
    buffer = io.BytesIO()
    normalise(img).save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """An RGB picture as JPEG bytes (variants, thumbnails): the one JPEG writer."""
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
