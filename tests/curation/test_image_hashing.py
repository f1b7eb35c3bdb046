"""Perceptual hashing: one row per sha256, cached across runs, robust to broken files."""

from __future__ import annotations

from pathlib import Path

import fsspec
import imagehash
import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

import curation.images.batch as batch
import curation.images.hashing as ih
from curation.images.hashing import compute_image_hashes, hash_image
from schemas.tables import IMAGE_HASHES_SCHEMA


def _picture(seed: int, size: tuple[int, int] = (96, 96)) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(180, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = (int(v) for v in rng.integers(0, min(size) // 2, 2))
        x1, y1 = x0 + int(rng.integers(10, min(size) // 2)), y0 + int(rng.integers(10, 40))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 160, 3)))
    return image


def _write(directory: Path, n: int, fmt: str = "PNG") -> pl.DataFrame:
    paths = []
    for k in range(n):
        path = directory / f"img{k}.{fmt.lower()}"
        _picture(k).save(path, format=fmt)
        paths.append(str(path))
    return pl.DataFrame({"sha256": [f"sha{k:03d}" for k in range(n)], "path": paths})


def _as_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)


def test_one_row_per_sha_matching_imagehash(tmp_path: Path) -> None:
    images = _write(tmp_path, 3)
    repeated = pl.concat([images, images.head(1), pl.DataFrame({"sha256": [None], "path": ["x"]})])
    out = compute_image_hashes(repeated.sample(fraction=1.0, shuffle=True, seed=0))
    assert out.schema == pl.Schema(IMAGE_HASHES_SCHEMA)
    assert out["hash_version"].to_list() == [ih.HASH_VERSION] * 3
    assert out["sha256"].to_list() == ["sha000", "sha001", "sha002"]
    with Image.open(images["path"][1]) as img:
        assert out["phash"][1] == _as_int(imagehash.phash(img))
        assert out["dhash"][1] == _as_int(imagehash.dhash(img))


def test_previous_hashes_are_reused_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = _write(tmp_path, 3)
    first = compute_image_hashes(images)
    # Sentinel values that no decode would produce prove the cached rows were carried over.
    previous = first.with_columns(phash=pl.lit(7, pl.UInt64), dhash=pl.lit(9, pl.UInt64)).head(2)
    calls: list[str] = []
    fresh = {**ih.hash_image(images["path"][2]), "phash": 1, "dhash": 2}
    monkeypatch.setattr(ih, "hash_image", lambda path: calls.append(path) or fresh)
    out = compute_image_hashes(images, previous=previous)
    assert calls == [images["path"][2]]
    assert out["phash"].to_list() == [7, 7, 1]
    assert out["dhash"].to_list() == [9, 9, 2]


def test_previous_rows_with_null_hashes_are_retried(tmp_path: Path) -> None:
    images = _write(tmp_path, 2)
    previous = compute_image_hashes(images).with_columns(
        phash=pl.Series([None, 5], dtype=pl.UInt64), dhash=pl.Series([None, 5], dtype=pl.UInt64)
    )
    previous = pl.concat([previous, previous.tail(1).with_columns(sha256=pl.lit("gone"))])
    out = compute_image_hashes(images, previous=previous)
    assert out["sha256"].to_list() == ["sha000", "sha001"]  # only shas of this run
    assert out["phash"][0] is not None and out["phash"][1] == 5


def test_undecodable_or_missing_file_gives_null_hashes(tmp_path: Path) -> None:
    images = _write(tmp_path, 1)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(images["path"][0]).read_bytes()[:60])
    broken = pl.DataFrame(
        {
            "sha256": ["bad1", "bad2", "bad3"],
            "path": [str(garbage), str(truncated), str(tmp_path / "missing.png")],
        }
    )
    out = compute_image_hashes(pl.concat([images, broken]))
    assert out.height == 4
    nulls = out.filter(pl.col("phash").is_null() & pl.col("dhash").is_null())["sha256"]
    assert nulls.to_list() == ["bad1", "bad2", "bad3"]
    assert out.filter(pl.col("sha256") == "sha000")["phash"][0] is not None


def test_parallel_path_equals_serial_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _write(tmp_path, 12, fmt="JPEG")
    serial = compute_image_hashes(images, workers=1)
    monkeypatch.setattr(batch, "MIN_IMAGES_FOR_THREADS", 2)
    monkeypatch.setattr(batch, "MAX_CHUNK_SIZE", 5)  # several chunks, so order is exercised
    parallel = compute_image_hashes(images, workers=2)
    assert parallel.equals(serial)
    assert serial["phash"].null_count() == 0


def test_jpeg_draft_decode_stays_close_to_full_decode(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    _picture(5, size=(1600, 1200)).save(path, quality=90)
    with Image.open(path) as img:
        full = _as_int(imagehash.phash(img.convert("L")))
    drafted = hash_image(str(path))["phash"]
    assert drafted is not None
    assert bin(drafted ^ full).count("1") <= 4


def test_reads_through_fsspec_urls(tmp_path: Path) -> None:
    local = _write(tmp_path, 1)
    url = "memory://hashing-test/img.png"
    with fsspec.open(url, "wb") as f:
        f.write(Path(local["path"][0]).read_bytes())
    remote = compute_image_hashes(pl.DataFrame({"sha256": ["sha000"], "path": [url]}))
    assert remote.equals(compute_image_hashes(local))


def test_transparent_pixels_are_flattened_onto_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).rectangle((16, 16, 48, 48), fill=(20, 20, 20, 255))
    rgb = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(rgb).rectangle((16, 16, 48, 48), fill=(20, 20, 20))
    rgba.save(tmp_path / "a.png")
    rgb.save(tmp_path / "b.png")
    assert hash_image(str(tmp_path / "a.png")) == hash_image(str(tmp_path / "b.png"))


def test_rows_of_an_older_hash_version_are_recomputed(tmp_path: Path) -> None:
    """A table written before the box/centre views and colour signatures existed (no
    hash_version column), or by another version, must not be reused: its rows lack what dedupe
    now compares."""
    images = _write(tmp_path, 2)
    current = compute_image_hashes(images)
    old_shape = current.select("sha256", "phash", "dhash").with_columns(phash=pl.lit(7, pl.UInt64))
    assert compute_image_hashes(images, previous=old_shape).equals(current)
    other_version = current.with_columns(
        phash=pl.lit(7, pl.UInt64), hash_version=pl.lit(ih.HASH_VERSION - 1, pl.Int32)
    )
    assert compute_image_hashes(images, previous=other_version).equals(current)
    assert compute_image_hashes(images, previous=current.head(1)).equals(current)


def test_views_see_past_padding_and_a_corner_badge(tmp_path: Path) -> None:
    """The content box of a letterboxed copy is the original's; a corner badge leaves the
    centre view alone."""
    picture = _picture(3, size=(160, 120))
    padded = Image.new("RGB", (160, 160), (255, 255, 255))
    padded.paste(picture, (0, 20))
    badged = picture.copy()
    ImageDraw.Draw(badged).ellipse((0, 0, 28, 28), fill=(210, 30, 40))
    paths = {}
    for name, image in {"original": picture, "padded": padded, "badged": badged}.items():
        paths[name] = str(tmp_path / f"{name}.png")
        image.save(paths[name])
    rows = {name: hash_image(path) for name, path in paths.items()}

    def bits(a: str, b: str, column: str) -> int:
        return bin(rows[a][column] ^ rows[b][column]).count("1")

    assert bits("original", "padded", "box_phash") <= 4 < bits("original", "padded", "phash")
    assert bits("original", "badged", "centre_phash") == 0
    assert rows["original"]["centre_colour"] == rows["badged"]["centre_colour"]


def _views_one_by_one(rgb: Image.Image) -> dict[str, tuple]:
    """Each view converted, shrunk and hashed on its own with imagehash: what product_views
    computes by sharing the luminance and a whole-frame box."""
    from curation.images import views as v

    work = v.working_picture(rgb)

    def hashed(view: Image.Image, require_structure: bool) -> tuple:
        gray = view.convert("L")
        if min(gray.size) >= 2 * v.HASH_PX:
            gray = gray.reduce(min(gray.size) // v.HASH_PX)
        colour = v.colour_signature(view)
        if require_structure and float(np.asarray(gray).std()) < v.MIN_VIEW_STD:
            return None, None, colour
        return _as_int(imagehash.phash(gray)), _as_int(imagehash.dhash(gray)), colour

    return {
        "whole": hashed(work, False),
        "box": hashed(work.crop(v.content_box(work.convert("L"))), False),
        "centre": hashed(work.crop(v.centre_box(work.size)), True),
    }


def test_views_equal_hashing_each_view_on_its_own(demo_catalogue) -> None:
    from curation.images.decode import load_normalised
    from curation.images.views import product_views

    files = sorted(demo_catalogue.images_dir.iterdir())[::6]  # ~500 of the demo files
    whole_frame_boxes = 0
    for path in files:
        try:
            rgb = load_normalised(str(path), draft_size=ih.DRAFT_SIZE)
        except ih.UnreadableImage:
            continue
        ours = product_views(rgb)
        expected = _views_one_by_one(rgb)
        got = {name: (h.phash, h.dhash, h.colour) for name, h in ours.items()}
        assert got == expected, path.name
        whole_frame_boxes += ours["box"] is ours["whole"]
    assert whole_frame_boxes > 0  # the shortcut for a box that is the whole frame is exercised
