"""Image-quality flags, the checks cleanvision runs, on each stored image's normalised picture.

Measurements are taken once per sha256 and cached across runs like the hashes; flags are derived
from them and the thresholds on every run (cheap), so changing a threshold re-decodes nothing.
Thresholds are chosen on the labelled set in tests/curation/test_image_quality.py, which prints
each flag's precision and recall:

- too_small: the short side below `min_short_side` px; 64 is where a 16x12 thumbnail or a
  40x30 icon ends and a usable product shot (the tiny preset trains at 64 px) begins.
- odd_aspect_ratio: long side / short side above 3: banners (4:1 to 12:1) are; product photos,
  even of belts and scarves, are at most ~2.5:1 (the labelled set's widest shot is 2.5:1).
- low_information: luminance standard deviation below 3 (of 255): blank and near-uniform
  pictures, sensor noise and a faint "no image" mark included, measure at most 0.7; a product
  photo 11 or more, and one darkened to 18 % still 5.
- too_dark: the 95th luminance percentile below 60: even the picture's bright parts are dark
  (darkened shots reach at most 45, ordinary ones start at 160).
- too_light: the 5th luminance percentile above 225: even its dark parts are washed out
  (washed-out shots start at 231, ordinary ones reach at most 170).
- blurry: the Laplacian's standard deviation relative to the luminance's below 0.12, measured
  at most 128 px across: relative, so dark or low-contrast pictures are not called blurry.
  Blurred shots reach 0.05, sharp ones start at 0.34; 0.12 sits between them on a log scale.
- grayscale: the 99th percentile of per-pixel chroma (max - min channel) below 4: a grey
  picture through JPEG measures 0, a coloured product 20 or more, one darkened to 18 % still 5.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from PIL import Image

from curation.images.batch import CPU_BOUND_WORKERS, map_images
from curation.images.decode import UnreadableImage, normalise, read_image, upright_size
from schemas.progress import Progress
from schemas.tables import IMAGE_QUALITY_SCHEMA, QUALITY_FLAGS, empty_frame

logger = logging.getLogger(__name__)

# Measurements are taken on the picture shrunk to at most this many pixels across: enough for
# blur and tonal statistics (the labelled set separates at this size), and JPEG draft mode
# makes large photos cheap to decode.
MEASURE_PX = 128

_MEASURES: tuple[str, ...] = (
    "width",
    "height",
    "luma_std",
    "luma_p05",
    "luma_p95",
    "sharpness",
    "chroma_p99",
)


@dataclass(frozen=True)
class QualityThresholds:
    """Where each flag starts (see the module docstring for why)."""

    min_short_side: int = 64
    max_aspect_ratio: float = 3.0
    min_luma_std: float = 3.0
    dark_luma_p95: float = 60.0
    light_luma_p05: float = 225.0
    min_sharpness: float = 0.12
    grayscale_chroma_p99: float = 4.0


DEFAULT_THRESHOLDS = QualityThresholds()


def _laplacian_std(luma: np.ndarray) -> float:
    if min(luma.shape) < 3:
        return 0.0
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    return float(lap.std())


def _percentile(histogram: np.ndarray, q: float) -> float:
    """The q-th percentile (lower) of 8-bit values given their 256-bin histogram."""
    cumulative = np.cumsum(histogram)
    return float(np.searchsorted(cumulative, q / 100.0 * cumulative[-1]))


def measure_picture(picture: Image.Image, width: int, height: int) -> dict[str, float]:
    """The measurements of one normalised RGB picture whose full upright size is width x height.

    8-bit planes and 256-bin histograms throughout: percentiles and spread from counts, not
    sorts, so a picture costs about as much as hashing it.
    """
    small = picture.copy()
    small.thumbnail((MEASURE_PX, MEASURE_PX))
    gray = np.asarray(small.convert("L"))
    levels = np.arange(256, dtype=np.float64)
    counts = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
    mean = float(counts @ levels / counts.sum())
    luma_std = float(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
    r, g, b = (np.asarray(band) for band in small.split())
    chroma = np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)
    sharpness = _laplacian_std(gray.astype(np.float32)) / luma_std if luma_std >= 1.0 else 0.0
    return {
        "width": width,
        "height": height,
        "luma_std": luma_std,
        "luma_p05": _percentile(counts, 5),
        "luma_p95": _percentile(counts, 95),
        # A flat picture has no edges to be sharp or blurred: 0, and low_information says why.
        "sharpness": sharpness,
        "chroma_p99": _percentile(np.bincount(chroma.ravel(), minlength=256), 99),
    }


def measure_image(path: str) -> dict[str, float] | None:
    """Measurements of a stored image's normalised picture, or None when it cannot be read."""
    try:
        img = read_image(path)
        width, height = upright_size(img)
        picture = normalise(img, draft_size=(MEASURE_PX, MEASURE_PX))
    except (UnreadableImage, OSError, ValueError) as exc:
        logger.warning("cannot measure image %s: %s", path, exc)
        return None
    return measure_picture(picture, width, height)


# The flags that compare one measurement with one threshold: flag -> (measurement, threshold
# field, the comparison that raises the flag, how the detail names the measurement, its format).
_LEVEL_CHECKS: dict[str, tuple[str, str, str, str, str]] = {
    "low_information": ("luma_std", "min_luma_std", "<", "luminance std", ".1f"),
    "too_dark": ("luma_p95", "dark_luma_p95", "<", "95th percentile luminance", ".0f"),
    "too_light": ("luma_p05", "light_luma_p05", ">", "5th percentile luminance", ".0f"),
    "blurry": ("sharpness", "min_sharpness", "<", "sharpness", ".3f"),
    "grayscale": ("chroma_p99", "grayscale_chroma_p99", "<", "99th percentile chroma", ".0f"),
}


def quality_flags(
    m: dict[str, float], t: QualityThresholds = DEFAULT_THRESHOLDS
) -> list[tuple[str, str]]:
    """(flag, detail) for every check the measurements fail, in QUALITY_FLAGS order."""
    w, h = int(m["width"]), int(m["height"])
    short, long = min(w, h), max(w, h)
    found = {
        "too_small": (short < t.min_short_side, f"{w}x{h} < {t.min_short_side} px"),
        "odd_aspect_ratio": (
            short > 0 and long / short > t.max_aspect_ratio,
            f"{long / max(short, 1):.1f}:1 > {t.max_aspect_ratio:g}:1",
        ),
    }
    for flag, (measure, limit_name, op, label, fmt) in _LEVEL_CHECKS.items():
        value, limit = m[measure], getattr(t, limit_name)
        failed = value < limit if op == "<" else value > limit
        found[flag] = (failed, f"{label} {value:{fmt}} {op} {limit:g}")
    return [(flag, found[flag][1]) for flag in QUALITY_FLAGS if found[flag][0]]


def _with_flags(measures: pl.DataFrame, thresholds: QualityThresholds) -> pl.DataFrame:
    flags, reasons = [], []
    for row in measures.select(_MEASURES).to_dicts():
        if row["width"] is None:  # unreadable: no measurements, no flags (the hash is null too)
            found: list[tuple[str, str]] = []
        else:
            found = quality_flags(row, thresholds)
        flags.append([flag for flag, _ in found])
        reasons.append([f"{flag} ({detail})" for flag, detail in found])
    return measures.with_columns(
        quality_flags=pl.Series(flags, dtype=pl.List(pl.String)),
        quality_reasons=pl.Series(reasons, dtype=pl.List(pl.String)),
    )


# A stored row whose measurements are reused (an unreadable image has none and is measured again).
REUSABLE_MEASURES = pl.col("width").is_not_null()


def compute_image_quality(
    images: pl.DataFrame,
    previous: pl.DataFrame | None = None,
    thresholds: QualityThresholds = DEFAULT_THRESHOLDS,
    workers: int = CPU_BOUND_WORKERS,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """IMAGE_QUALITY_SCHEMA: one row per distinct sha256 of `images` (sha256, path), sorted.

    Measurements found in `previous` are reused without touching the file (a previous row
    without them is measured again); flags always follow today's thresholds.
    """
    todo = (
        images.select("sha256", "path")
        .filter(pl.col("sha256").is_not_null())
        .unique(subset="sha256", keep="first", maintain_order=True)
    )
    measure_schema = {c: IMAGE_QUALITY_SCHEMA[c] for c in ("sha256", *_MEASURES)}
    cached = empty_frame(measure_schema)
    if previous is not None and previous.height and set(measure_schema) <= set(previous.columns):
        cached = (
            previous.select(list(measure_schema))
            .cast(measure_schema)  # type: ignore[arg-type]
            .filter(REUSABLE_MEASURES)
            .join(todo.select("sha256"), on="sha256", how="semi")
            .unique(subset="sha256", keep="first")
        )
        todo = todo.join(cached.select("sha256"), on="sha256", how="anti")
    found = map_images(measure_image, todo["path"].to_list(), workers, progress)
    fresh = pl.DataFrame(
        [{"sha256": sha, **(m or {})} for sha, m in zip(todo["sha256"], found, strict=True)],
        schema=measure_schema,
    )
    measures = pl.concat([cached, fresh]).sort("sha256")
    return _with_flags(measures, thresholds).select(list(IMAGE_QUALITY_SCHEMA))


def flag_counts(flags: Sequence[Sequence[str] | None]) -> dict[str, int]:
    """flag -> rows carrying it, in QUALITY_FLAGS order (zeros included: metadata reads them)."""
    counts = dict.fromkeys(QUALITY_FLAGS, 0)
    for row in flags:
        for flag in row or ():
            counts[flag] += 1
    return counts
