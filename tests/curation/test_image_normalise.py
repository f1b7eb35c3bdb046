"""What a consumer of the export sees, for every encoding shops and phones produce.

Each case is built here from one upright, white-backed reference picture, stored as the
downloader stores it, normalised, exported, and read back with `datasets.load_from_disk` and a
plain `.convert("RGB")` (what TRL's collators and training/data.py do). It must match the
reference to well under 25/255 mean absolute difference per channel.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from curation.dedupe import duplicate_clusters
from curation.export import build_dataset_dict, save_dataset_dict
from curation.images.decode import is_normalised, normalise, open_image
from curation.images.hashing import compute_image_hashes
from curation.images.normalised import attach_normalised
from curation.images.store import sha256_hex, store_image_bytes
from schemas.tables import IMAGE_STATUS_OK, SYNTHETIC_VARIANTS_SCHEMA, empty_frame
from tests.curation.test_splits import curated_frame

W, H = 96, 72  # not square: a missed rotation changes the size
MAX_MEAN_ABS_DIFF = 6.0  # per channel, of 255; "well under 25"


def reference() -> Image.Image:
    """An upright product on white: a red bag with a dark handle, asymmetric top to bottom."""
    img = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 28, 76, 66), fill=(190, 30, 40))
    draw.arc((34, 6, 62, 40), 180, 360, fill=(40, 30, 20), width=5)
    return img


def _alpha_product() -> Image.Image:
    """The reference as a cut-out whose hidden background pixels are black."""
    ref = np.asarray(reference())
    background = (ref == 255).all(axis=2)
    rgba = np.dstack([ref, np.where(background, 0, 255).astype(np.uint8)])
    rgba[background, :3] = 0
    return Image.fromarray(rgba)


def _save(img: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _exif_rotated(fmt: str) -> bytes:
    # Orientation 6: the stored pixels are the picture turned 90 degrees anticlockwise; a viewer
    # turns them back clockwise.
    stored = reference().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))


def _sixteen_bit_grey() -> bytes:
    grey = np.asarray(reference().convert("L"), dtype=np.uint16) * 257
    return _save(Image.fromarray(grey), "PNG")


def _palette_transparent(fmt: str) -> bytes:
    """A palette picture whose background index is transparent and holds black."""
    pal = reference().quantize(colors=8)
    white = pal.getpixel((0, 0))
    colours = pal.getpalette()[:24]
    colours[3 * white : 3 * white + 3] = [0, 0, 0]
    pal.putpalette(colours)
    return _save(pal, fmt, transparency=white)


def _grey_alpha() -> bytes:
    return _save(_alpha_product().convert("LA"), "PNG")


def _animated_gif() -> bytes:
    first = reference().quantize(colors=8)
    second = Image.new("RGB", (W, H), (0, 90, 0)).quantize(colors=8)
    return _save(first, "GIF", save_all=True, append_images=[second])


def _mpo() -> bytes:
    return _save(reference(), "MPO", save_all=True, append_images=[reference()], quality=95)


def _float_tiff() -> bytes:
    return _save(Image.fromarray(np.asarray(reference().convert("L"), np.float32) / 255), "TIFF")


def _s15(x: float) -> bytes:
    return struct.pack(">i", round(x * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def swapped_primaries_profile() -> bytes:
    """An ICC v2 RGB matrix profile (gamma 2.2) whose red and blue primaries are sRGB's blue
    and red: a picture stored with R and B exchanged under it looks right once converted."""
    red, green, blue = (0.4360, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    text = b"swapped primaries\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(2.2 * 256))
    tags = [(b"desc", desc), (b"wtpt", _xyz(0.9642, 1.0, 0.8249)), (b"rXYZ", _xyz(*blue)),
            (b"gXYZ", _xyz(*green)), (b"bXYZ", _xyz(*red)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]  # fmt: skip
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body)) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr"
        + b"RGB XYZ " + bytes(12) + b"acsp" + bytes(28) + _s15(0.9642) + _s15(1.0)
        + _s15(0.8249) + bytes(48)
    )  # fmt: skip
    return header + struct.pack(">I", len(tags)) + table + body


def _wide_gamut_jpeg() -> bytes:
    r, g, b = reference().split()
    stored = Image.merge("RGB", (b, g, r))
    return _save(stored, "JPEG", quality=95, icc_profile=swapped_primaries_profile())


GREY = "grey"
CASES: dict[str, tuple[Callable[[], bytes], str | None]] = {
    # name: (bytes, reference kind: None = colour reference, GREY = its grey version)
    "jpeg_rgb": (lambda: _save(reference(), "JPEG", quality=95), None),
    "jpeg_grey": (lambda: _save(reference().convert("L"), "JPEG", quality=95), GREY),
    "jpeg_cmyk": (lambda: _save(reference().convert("CMYK"), "JPEG", quality=95), None),
    "jpeg_icc_profile": (_wide_gamut_jpeg, None),
    "jpeg_exif_rotated": (lambda: _exif_rotated("JPEG"), None),
    "png_exif_rotated": (lambda: _exif_rotated("PNG"), None),
    "mpo": (_mpo, None),
    "png_rgb": (lambda: _save(reference(), "PNG"), None),
    "png_rgba_transparent": (lambda: _save(_alpha_product(), "PNG"), None),
    "png_grey_alpha": (_grey_alpha, GREY),
    "png_palette_transparent": (lambda: _palette_transparent("PNG"), None),
    "png_16bit_grey": (_sixteen_bit_grey, GREY),
    "webp_lossy": (lambda: _save(reference(), "WEBP", quality=95), None),
    "webp_rgba_transparent": (lambda: _save(_alpha_product(), "WEBP", lossless=True), None),
    "gif_transparent": (lambda: _palette_transparent("GIF"), None),
    "gif_animated": (_animated_gif, None),
    "avif": (lambda: _save(reference(), "AVIF", quality=95), None),
    "avif_rgba_transparent": (lambda: _save(_alpha_product(), "AVIF", quality=95), None),
    "tiff_float": (_float_tiff, GREY),
    "bmp": (lambda: _save(reference(), "BMP"), None),
}


def _expected(kind: str | None) -> np.ndarray:
    ref = reference()
    return np.asarray((ref.convert("L").convert("RGB") if kind == GREY else ref), np.float64)


def _mean_abs_diff(img: Image.Image, kind: str | None) -> float:
    assert img.size == (W, H), f"size {img.size}: orientation not applied"
    return float(np.abs(np.asarray(img.convert("RGB"), np.float64) - _expected(kind)).mean())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Image.Image]:
    """name -> the image `load_from_disk` returns for that case, after the whole export."""
    store = tmp_path_factory.mktemp("store")
    stored = []
    for name, (make, _) in CASES.items():
        data = make()
        stored.append(
            {
                "url": name,
                "status": IMAGE_STATUS_OK,
                "reason": None,
                "sha256": sha256_hex(data),
                "path": store_image_bytes(str(store), data, "img"),
            }
        )
    images = attach_normalised(pl.DataFrame(stored), str(store))
    assert images["status"].to_list() == [IMAGE_STATUS_OK] * len(CASES)
    records = [
        {
            "title": row["url"],
            "sha256": row["sha256"],
            "image_path": row["path"],
            "normalised_sha256": row["normalised_sha256"],
            "normalised_path": row["normalised_path"],
        }
        for row in images.to_dicts()
    ]
    # Every split gets rows (an empty split does not load back).
    splits = curated_frame(records).with_columns(
        split=pl.Series(["train", "validation", "test"] * len(records))[: len(records)],
        group_key=pl.col("row_id"),
        stratum=pl.lit("s"),
    )
    out = tmp_path_factory.mktemp("data") / "hf_dataset"
    save_dataset_dict(
        build_dataset_dict(splits, empty_frame(SYNTHETIC_VARIANTS_SCHEMA)), str(out), "card"
    )
    loaded = datasets.load_from_disk(str(out))
    return {row["title"]: row["image"] for split in loaded.values() for row in split}


@pytest.mark.parametrize("name", list(CASES))
def test_exported_image_converts_to_the_upright_white_backed_picture(
    name: str, exported: dict[str, Image.Image]
) -> None:
    diff = _mean_abs_diff(exported[name], CASES[name][1])
    print(f"{name}: mean abs diff {diff:.2f}/255")
    assert diff < MAX_MEAN_ABS_DIFF


def test_naive_conversion_is_what_the_export_must_not_ship() -> None:
    """The failures this module exists for: the raw bytes' `.convert("RGB")` is wrong."""
    wrong = {
        name: _mean_abs_diff(img if img.size == (W, H) else img.resize((W, H)), CASES[name][1])
        for name in (
            "png_rgba_transparent",
            "png_16bit_grey",
            "webp_rgba_transparent",
            "jpeg_icc_profile",
        )
        for img in [open_image(CASES[name][0]()).convert("RGB")]
    }
    assert all(diff > 25 for diff in wrong.values()), wrong


def test_plain_jpeg_keeps_its_own_bytes_and_others_get_a_png(tmp_path: Path) -> None:
    plain = open_image(CASES["jpeg_rgb"][0]())
    assert is_normalised(plain)
    for name in (
        "jpeg_exif_rotated",
        "png_rgba_transparent",
        "png_16bit_grey",
        "jpeg_cmyk",
        "avif",
    ):
        assert not is_normalised(open_image(CASES[name][0]())), name
    # Normalising a normalised picture changes nothing.
    once = normalise(open_image(CASES["png_rgba_transparent"][0]()))
    assert np.array_equal(np.asarray(normalise(once)), np.asarray(once))


def test_rotated_copy_and_its_upright_twin_share_a_duplicate_cluster(tmp_path: Path) -> None:
    names = ("jpeg_rgb", "jpeg_exif_rotated", "png_exif_rotated", "png_rgba_transparent")
    rows = []
    for i, name in enumerate(names):
        data = CASES[name][0]()
        path = store_image_bytes(str(tmp_path), data, "img")
        rows.append({"row_id": f"r{i}", "row_index": i, "sha256": sha256_hex(data), "path": path})
    frame = pl.DataFrame(rows)
    hashes = compute_image_hashes(frame.select("sha256", "path"))
    images = frame.with_columns(
        width=pl.lit(W), height=pl.lit(H), title=pl.lit("bag"),
        category3_code=pl.lit("BAGS"), full_price=pl.lit(10.0),
    )  # fmt: skip
    clusters = duplicate_clusters(images, hashes)
    assert clusters["cluster_id"].n_unique() == 1, clusters
