"""Image-quality flags on a labelled set built here: each threshold must separate the defect it
names from ordinary product photos. Precision and recall per flag are printed (`-s`)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw, ImageFilter

from curation.images.quality import (
    DEFAULT_THRESHOLDS,
    compute_image_quality,
    flag_counts,
    quality_flags,
)
from curation.images.store import sha256_hex, store_image_bytes
from schemas.tables import IMAGE_QUALITY_SCHEMA, QUALITY_FLAGS

N_CLEAN = 40
MIN_PRECISION = 0.9
MIN_RECALL = 0.9


def product_photo(seed: int) -> Image.Image:
    """A catalogue-style shot: shaded, textured product(s) on a plain light or mid backdrop."""
    rng = np.random.default_rng(seed)
    w = int(rng.integers(160, 520))
    h = int(w * rng.choice([1.0, 1.0, 1.25, 0.8, 0.6, 0.4]))  # 0.4: a 2.5:1 belt shot
    light = rng.random() < 0.7
    bg = (255, 255, 255) if light else tuple(int(v) for v in rng.integers(150, 230, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        hsv = (int(rng.integers(0, 256)), int(rng.integers(100, 256)), int(rng.integers(60, 210)))
        colour = Image.new("HSV", (1, 1), hsv).convert("RGB").getpixel((0, 0))
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1 = x0 + int(rng.integers(w // 5, w // 2))
        y1 = y0 + int(rng.integers(h // 5, h // 2))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour, outline=(20, 20, 20), width=2)
        for k in range(6):  # stitching / print detail
            y = y0 + (y1 - y0) * (k + 1) // 7
            draw.line((x0 + 4, y, x1 - 4, y), fill=tuple(min(255, c + 60) for c in colour))
    pixels = np.asarray(img, np.float32)
    if rng.random() < 0.5:  # sensor noise
        pixels = pixels + rng.normal(0, 3, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _scaled(img: Image.Image, gain: float, offset: float) -> Image.Image:
    pixels = np.asarray(img, np.float32) * gain + offset
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _blank(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    colour = [(255, 255, 255), (128, 128, 128), (240, 232, 220), (30, 30, 30)][seed % 4]
    pixels = np.full((300, 300, 3), colour, np.float32) + rng.normal(
        0, 1.5 * (seed % 2), (300, 300, 3)
    )
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if seed % 3 == 0:  # a faint "no image" mark, three grey levels off the background
        ImageDraw.Draw(img).text((110, 140), "no image", fill=tuple(max(0, c - 3) for c in colour))
    return img


def _banner(seed: int) -> Image.Image:
    ratio = (12, 5, 4)[seed % 3]
    photo = product_photo(1000 + seed)
    return photo.resize((ratio * 90, 90))


# kind -> (make(seed), flags it must raise, flags it may also raise)
KINDS: dict[str, tuple[Callable[[int], Image.Image], set[str], set[str]]] = {
    "clean": (product_photo, set(), set()),
    "tiny": (
        lambda s: product_photo(s).resize(((16, 40, 60, 32)[s % 4], (12, 30, 45, 32)[s % 4])),
        {"too_small"},
        {"blurry"},
    ),
    "banner": (_banner, {"odd_aspect_ratio"}, set()),
    "blank": (_blank, {"low_information"}, {"blurry", "grayscale", "too_light", "too_dark"}),
    "dark": (lambda s: _scaled(product_photo(s), 0.18, 0), {"too_dark"}, set()),
    "washed_out": (
        lambda s: _scaled(product_photo(s), 0.1, 229),
        {"too_light"},
        {"low_information", "grayscale"},
    ),
    "blurred": (
        lambda s: (p := product_photo(s)).filter(ImageFilter.GaussianBlur(max(p.size) / 50)),
        {"blurry"},
        set(),
    ),
    "grey": (lambda s: product_photo(s).convert("L").convert("RGB"), {"grayscale"}, set()),
}
PER_DEFECT = 8


def _jpeg(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    """kind, required and allowed flags, and the flags the production path found."""
    store = tmp_path_factory.mktemp("store")
    rows = []
    for kind, (make, required, allowed) in KINDS.items():
        for seed in range(N_CLEAN if kind == "clean" else PER_DEFECT):
            data = _jpeg(make(seed))
            path = store_image_bytes(str(store), data, "jpg")
            rows.append(
                {"kind": kind, "sha256": sha256_hex(data), "path": path,
                 "required": sorted(required), "allowed": sorted(required | allowed)}
            )  # fmt: skip
    frame = pl.DataFrame(rows)
    quality = compute_image_quality(frame.select("sha256", "path"))
    return frame.join(quality, on="sha256", how="left")


def test_every_flag_has_precision_and_recall_on_the_labelled_set(labelled: pl.DataFrame) -> None:
    report = []
    for flag in QUALITY_FLAGS:
        found = labelled["quality_flags"].list.contains(flag)
        required = labelled["required"].list.contains(flag)
        allowed = labelled["allowed"].list.contains(flag)
        true_pos = int((found & required).sum())
        false_pos = int((found & ~allowed).sum())
        precision = true_pos / max(1, true_pos + false_pos)
        recall = true_pos / max(1, int(required.sum()))
        report.append((flag, precision, recall))
        print(f"{flag:17s} precision {precision:.3f}  recall {recall:.3f}  ({int(required.sum())})")
    failing = [r for r in report if r[1] < MIN_PRECISION or r[2] < MIN_RECALL]
    assert not failing, failing


def test_clean_product_photos_raise_no_flags(labelled: pl.DataFrame) -> None:
    clean = labelled.filter(pl.col("kind") == "clean")
    flagged = clean.filter(pl.col("quality_flags").list.len() > 0)
    print(f"clean photos with a flag: {flagged.height}/{clean.height}")
    assert flagged.height <= clean.height // 20, flagged.select("quality_reasons").to_dicts()


def test_reason_names_the_numbers() -> None:
    measures = {"width": 16, "height": 12, "luma_std": 40.0, "luma_p05": 20.0,
                "luma_p95": 240.0, "sharpness": 0.5, "chroma_p99": 90.0}  # fmt: skip
    assert quality_flags(measures) == [("too_small", "16x12 < 64 px")]
    assert DEFAULT_THRESHOLDS.min_short_side == 64


def test_measurements_are_cached_and_flags_follow_thresholds(
    labelled: pl.DataFrame, tmp_path: Path
) -> None:
    images = labelled.filter(pl.col("kind") == "tiny").select("sha256", "path")
    first = compute_image_quality(images)
    assert first.schema == pl.Schema(IMAGE_QUALITY_SCHEMA)
    moved = images.with_columns(path=pl.lit(str(tmp_path / "gone.jpg")))  # unreadable now
    again = compute_image_quality(moved, previous=first)
    assert again.equals(first)  # nothing was decoded: the files are not there
    from dataclasses import replace

    lenient = compute_image_quality(
        moved, previous=first, thresholds=replace(DEFAULT_THRESHOLDS, min_short_side=8)
    )
    assert not lenient["quality_flags"].list.contains("too_small").any()
    assert flag_counts(first["quality_flags"].to_list())["too_small"] == first.height
