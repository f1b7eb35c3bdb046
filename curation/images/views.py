"""What a merchandiser looks at in a product photo: three views, each hashed and colour-signed.

A whole-image hash misses the edits catalogues really make: letterboxing a photo to a square
adds bars that move every DCT coefficient, and a sale badge in a corner flips many bits. Two
more views see past them:

- `box`: the content box, the picture after trimming uniform margins (letterbox bars, plain
  studio backdrop) from each side, so padding and framing do not change what is hashed;
- `centre`: the middle half of the frame in each direction, which a corner badge of up to a
  quarter of the side does not touch.

phash and dhash see luminance only, so a colourway (the same shot, hue shifted: another
product) hashes alike. Each view therefore also carries a colour signature, which
`curation.dedupe_confirm` compares to confirm a candidate pair: its mean CIELAB chroma and a
hue histogram weighted by chroma. A histogram, not a colour thumbnail: averaging a striped or
checked product into a few cells blends its two inks into one grey, and a colourway's blend
looks the same; a histogram keeps both hues. What neither sees is texture finer than the
working size (a check and a plain product of one colour and silhouette look alike at 128 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

# Views are taken from the picture shrunk to at most this many pixels across: the box and centre
# views are then still >= 32 px (phash's own resize) for a product filling a quarter of the
# frame, and a JPEG decodes in draft mode at 1/2..1/8 scale.
WORK_PX = 128

# A line (row or column) is margin while this share of its pixels sit within MARGIN_TOLERANCE
# (luminance, of 255) of the line's mean: JPEG ringing near an edge and a stray dust pixel do
# not stop the trim, a product's silhouette does.
MARGIN_SHARE = 0.97
MARGIN_TOLERANCE = 24
# Trimming passes: bars, then the backdrop they framed; a third pass only ever trims noise.
TRIM_PASSES = 3
# A box narrower than this share of the frame is noise, not a product: the whole frame is used.
MIN_BOX_SHARE = 0.08
# The centre view spans the middle CENTRE_SPAN of the frame in each direction (0.25..0.75).
CENTRE_SPAN = 0.5
# A centre view this flat (luminance std, of 255; quality's low_information line is 3) has no
# structure to hash: its bits would be JPEG noise, so it gets no hash and matches nothing.
MIN_VIEW_STD = 3.0

# The colour signature is taken at most this many pixels across, so copies at any size blend
# textures alike; pixels below MIN_PIXEL_CHROMA (CIELAB, JPEG noise on grey is 1-3) carry no hue.
COLOUR_PX = 64
MIN_PIXEL_CHROMA = 4.0
HUE_BINS = 12
SIGNATURE_BYTES = 1 + HUE_BINS
_RGB_TO_XYZ_OVER_WHITE = (
    np.array([[0.4124, 0.2126, 0.0193], [0.3576, 0.7152, 0.1192], [0.1805, 0.0722, 0.9505]])
    / np.array([0.95047, 1.0, 1.08883])
).astype(np.float32)
_LEVELS = np.arange(256, dtype=np.float32) / 255.0
_SRGB_TO_LINEAR = np.where(
    _LEVELS <= 0.04045, _LEVELS / 12.92, ((_LEVELS + 0.055) / 1.055) ** 2.4
).astype(np.float32)
VIEWS: tuple[str, ...] = ("whole", "box", "centre")
# Hashes are taken of the view's luminance shrunk by a whole factor to no less than this many
# pixels across: phash's own resize to 32 px then works on a quarter of the pixels (a third of
# its cost), and a view already this small is hashed as it is.
HASH_PX = 64


@dataclass(frozen=True)
class ViewHashes:
    """One view's phash and dhash (None: the view has no structure) and colour signature."""

    phash: int | None
    dhash: int | None
    colour: bytes


def to_uint64(h: imagehash.ImageHash) -> int:
    """The 8x8 bit matrix as one 64-bit int, row-major, first bit most significant."""
    return int.from_bytes(np.packbits(h.hash.flatten()).tobytes(), "big")


def working_picture(rgb: Image.Image) -> Image.Image:
    """The picture the views are cut from: a normalised picture up to 2 * WORK_PX across as it
    is (so a small file's whole-picture hash is imagehash's own on the file), a larger one
    shrunk to WORK_PX across."""
    if max(rgb.size) <= 2 * WORK_PX:
        return rgb
    out = rgb.copy()
    out.thumbnail((WORK_PX, WORK_PX), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return out


def _margin_lines(pixels: np.ndarray) -> np.ndarray:
    """Per line (axis 0) of an (n, m) int16 luminance array: whether it is a uniform margin.

    Judged against the line's mean (a median costs ten times more): a margin line's few stray
    pixels move its mean by a few levels, well inside the tolerance, while a line that crosses
    the product has a mean between two tones that most of its pixels are far from.
    """
    mean = pixels.mean(axis=1, keepdims=True, dtype=np.float32).astype(np.int16)
    close = np.abs(pixels - mean) <= MARGIN_TOLERANCE
    return close.mean(axis=1, dtype=np.float32) >= MARGIN_SHARE


def _leading(flags: np.ndarray) -> int:
    """How many leading entries are True."""
    stop = np.flatnonzero(~flags)
    return int(stop[0]) if stop.size else flags.size


def _trim(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of an (n, m) array once leading and trailing margins go."""
    rows, cols = _margin_lines(pixels), _margin_lines(pixels.T)
    height, width = pixels.shape[:2]
    top, left = _leading(rows), _leading(cols)
    return (
        top,
        max(top, height - _leading(rows[::-1])),
        left,
        max(left, width - _leading(cols[::-1])),
    )


def content_box(luma: Image.Image) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a luminance picture after trimming uniform lines from
    each side.

    Each line is judged against its own mean, so white bars around a grey backdrop trim, bars
    first, backdrop after. Trimming repeats on what is left: a row crossing white bars and a
    backdrop is uniform only once the bars' columns are gone. A frame with nothing but margin
    keeps its size. Lines are judged on luminance: a third of the work of judging colour, and
    letterbox bars and backdrops differ from a product in tone, not in hue alone.
    """
    pixels = np.asarray(luma, dtype=np.int16)
    height, width = pixels.shape
    top, bottom, left, right = 0, height, 0, width
    for _ in range(TRIM_PASSES):
        t, b, lo, r = _trim(pixels[top:bottom, left:right])
        if (t, b, lo, r) == (0, bottom - top, 0, right - left):
            break
        top, bottom, left, right = top + t, top + b, left + lo, left + r
        if right - left < MIN_BOX_SHARE * width or bottom - top < MIN_BOX_SHARE * height:
            return 0, 0, width, height
    return left, top, right, bottom


def centre_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    width, height = size
    lo = (1.0 - CENTRE_SPAN) / 2
    return (
        int(round(width * lo)),
        int(round(height * lo)),
        int(round(width * (1 - lo))),
        int(round(height * (1 - lo))),
    )


def _srgb_to_ab(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CIELAB a* and b* of sRGB pixels (..., 3) in 0..255, D65 white, one value per pixel."""
    xyz = _SRGB_TO_LINEAR[rgb.reshape(-1, 3)] @ _RGB_TO_XYZ_OVER_WHITE
    f = np.power(xyz, np.float32(1 / 3))  # 3x cheaper than np.cbrt, within 1 ulp of it
    dark = xyz <= 216 / 24389  # the linear segment near black: rare, so patched in place
    if dark.any():
        f[dark] = (24389 / 27 * xyz[dark] + 16) / 116
    return 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])


def colour_signature(view: Image.Image) -> bytes:
    """The view's mean chroma (one byte) and its hue histogram weighted by chroma (HUE_BINS
    bytes summing to ~255; each pixel split between its two nearest bins, so a small hue
    change moves weight smoothly instead of flipping a bin)."""
    thumb = view if view.mode == "RGB" else view.convert("RGB")
    if max(thumb.size) > COLOUR_PX:
        thumb = thumb.copy()  # thumbnail works in place; the view is the caller's
        thumb.thumbnail((COLOUR_PX, COLOUR_PX), Image.Resampling.BOX)
    a, b = _srgb_to_ab(np.asarray(thumb))
    chroma = np.hypot(a, b)
    weight = np.where(chroma >= MIN_PIXEL_CHROMA, chroma, 0.0)
    position = (np.arctan2(b, a) % (2 * np.pi)) / (2 * np.pi) * HUE_BINS
    lower = np.floor(position)
    upper_share = position - lower
    lower_bin = lower.astype(np.int64) % HUE_BINS
    upper_weight = weight * upper_share
    hist = np.bincount(lower_bin, weight - upper_weight, HUE_BINS)
    hist += np.bincount((lower_bin + 1) % HUE_BINS, upper_weight, HUE_BINS)
    total = float(hist.sum())
    hues = np.rint(hist / total * 255) if total > 0 else np.zeros(HUE_BINS)
    mean_chroma = min(255, int(round(float(chroma.mean())))) if chroma.size else 0
    return bytes([mean_chroma, *(int(v) for v in hues)])


def _view_hashes(view: Image.Image, gray: Image.Image, *, require_structure: bool) -> ViewHashes:
    """`gray` is the view's luminance (cut from the whole picture's: conversion is per pixel,
    so the same pixels as converting the view)."""
    if min(gray.size) >= 2 * HASH_PX:
        gray = gray.reduce(min(gray.size) // HASH_PX)
    colour = colour_signature(view)
    if require_structure and float(np.asarray(gray).std()) < MIN_VIEW_STD:
        return ViewHashes(None, None, colour)
    return ViewHashes(to_uint64(imagehash.phash(gray)), to_uint64(imagehash.dhash(gray)), colour)


def product_views(rgb: Image.Image) -> dict[str, ViewHashes]:
    """The whole, box and centre views of a normalised RGB picture, hashed and colour-signed."""
    work = working_picture(rgb)
    luma = work.convert("L")  # once: the box search and every view's hashes read it
    whole = _view_hashes(work, luma, require_structure=False)
    box = content_box(luma)
    centre = centre_box(work.size)
    return {
        "whole": whole,
        # A box that is the whole frame is the same picture: the same hashes and colour.
        "box": whole
        if box == (0, 0, *work.size)
        else _view_hashes(work.crop(box), luma.crop(box), require_structure=False),
        "centre": _view_hashes(work.crop(centre), luma.crop(centre), require_structure=True),
    }
