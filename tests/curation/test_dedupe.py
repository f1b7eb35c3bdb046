"""Duplicate clustering: a procedural labelled set for precision/recall, plus unit tests."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from itertools import combinations
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from curation.dedupe import (
    DEFAULT_MAX_PHASH_DISTANCE,
    _band_cover,
    _band_layout,
    duplicate_clusters,
    near_duplicate_pairs,
    popcount64,
)
from curation.images.hashing import compute_image_hashes
from schemas.tables import DUPLICATE_CLUSTERS_SCHEMA, IMAGE_HASHES_SCHEMA

# ---------------------------------------------------------------------------------------------
# Labelled set: base "product photos" drawn with PIL, each with edited copies that must cluster
# with it, and look-alikes (same shape in another colour, other half of the same photo) that
# must not.

SHAPES = ("ellipse", "rectangle", "triangle", "star", "ring", "cross", "diamond", "arch")
TEXTURES = ("plain", "stripes", "check", "dots", "noise", "gradient")
PALETTE = (
    (25, 25, 28),
    (200, 170, 120),
    (30, 45, 95),
    (120, 25, 45),
    (180, 130, 70),
    (95, 105, 45),
    (200, 40, 40),
    (140, 180, 220),
    (60, 140, 90),
    (230, 200, 60),
)
EDITS = ("jpeg60", "half", "one_and_half", "crop", "brighter")


@dataclass(frozen=True)
class Look:
    shape: str
    texture: str
    colour: tuple[int, int, int]
    background: tuple[int, int, int]
    cx: float  # centre and radius as fractions of the image size
    cy: float
    r: float
    seed: int


def _shape_mask(look: Look, size: tuple[int, int], dx: float = 0, dy: float = 0) -> Image.Image:
    w, h = size
    cx, cy, r = look.cx * w + dx, look.cy * h + dy, look.r * min(w, h)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if look.shape == "ellipse":
        draw.ellipse((cx - 0.7 * r, cy - r, cx + 0.7 * r, cy + r), fill=255)
    elif look.shape == "rectangle":
        draw.rectangle((cx - 0.8 * r, cy - 0.6 * r, cx + 0.8 * r, cy + 0.6 * r), fill=255)
    elif look.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=0)
    elif look.shape == "arch":
        draw.pieslice((cx - 0.8 * r, cy - r, cx + 0.8 * r, cy + r), 180, 360, fill=255)
        draw.rectangle((cx - 0.8 * r, cy, cx + 0.8 * r, cy + 0.8 * r), fill=255)
    else:
        n, inner = {"triangle": (3, 1.0), "star": (10, 0.45), "diamond": (4, 1.0)}.get(
            look.shape, (12, 0.4)
        )
        points = []
        for i in range(n):
            radius = r if i % 2 == 0 else r * inner
            angle = -math.pi / 2 + i * 2 * math.pi / n
            points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
        draw.polygon(points, fill=255)
    return mask


def _texture(look: Look, size: tuple[int, int]) -> Image.Image:
    rng = random.Random(look.seed)
    layer = Image.new("RGB", size, look.colour)
    draw = ImageDraw.Draw(layer)
    ink = tuple(255 - c for c in look.colour)
    step = rng.randint(12, 22)
    w, h = size
    if look.texture == "stripes":
        for x in range(-h, w + h, step):
            draw.line((x, 0, x - h, h), fill=ink, width=4)
    elif look.texture == "check":
        for v in range(0, max(w, h), step):
            draw.line((v, 0, v, h), fill=ink, width=3)
            draw.line((0, v, w, v), fill=ink, width=3)
    elif look.texture == "dots":
        for x in range(step // 2, w, step):
            for y in range(step // 2, h, step):
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=ink)
    elif look.texture == "noise":
        noise = np.random.default_rng(look.seed).integers(-60, 60, (h // 8, w // 8, 1))
        arr = np.clip(np.asarray(layer, np.int16)[: h // 8, : w // 8] + noise, 0, 255)
        layer = Image.fromarray(arr.astype(np.uint8)).resize(size, Image.NEAREST)
    elif look.texture == "gradient":
        ramp = np.linspace(0.4, 1.3, w)[None, :, None] * np.asarray(look.colour)[None, None]
        layer = Image.fromarray(np.clip(np.broadcast_to(ramp, (h, w, 3)), 0, 255).astype("uint8"))
    return layer


def draw_look(look: Look, size: tuple[int, int] = (320, 320)) -> Image.Image:
    """A studio-style product shot: backdrop, soft shadow, textured silhouette, a small tag."""
    image = Image.new("RGB", size, look.background)
    shadow = _shape_mask(look, size, 6, 8).filter(ImageFilter.GaussianBlur(6))
    image.paste((90, 90, 90), (0, 0), shadow.point(lambda v: int(v * 0.4)))
    image.paste(_texture(look, size), (0, 0), _shape_mask(look, size))
    rng = random.Random(look.seed + 1)
    tx, ty = rng.uniform(0.3, 0.7) * size[0], rng.uniform(0.3, 0.7) * size[1]
    ImageDraw.Draw(image).rectangle((tx - 8, ty - 5, tx + 8, ty + 5), fill=(245, 245, 245))
    return image


def random_look(rng: random.Random, seed: int) -> Look:
    tone = rng.randint(200, 250)
    return Look(
        shape=rng.choice(SHAPES),
        texture=rng.choice(TEXTURES),
        colour=rng.choice(PALETTE),
        background=(tone, tone - rng.randint(0, 15), tone - rng.randint(0, 25)),
        cx=rng.uniform(0.38, 0.62),
        cy=rng.uniform(0.38, 0.62),
        r=rng.uniform(0.22, 0.34),
        seed=seed,
    )


def scene(rng: random.Random, seed: int) -> Image.Image:
    """A wide photo of several products; its left and right halves are different pictures."""
    canvas = draw_look(random_look(rng, seed), (640, 320))
    for k in range(3):
        look = replace(random_look(rng, seed * 10 + k), r=0.18)
        part = draw_look(look, (320, 320))
        x0 = rng.randint(0, 320)
        mask = _shape_mask(look, (320, 320)).filter(ImageFilter.GaussianBlur(1))
        canvas.paste(part, (x0, 0), mask)
    return canvas


def reshoot(look: Look, colour: tuple[int, int, int], rng: random.Random) -> Look:
    """The same product in another colour, photographed again: it sits a little elsewhere."""
    return replace(
        look,
        colour=colour,
        cx=look.cx + rng.choice((-1, 1)) * rng.uniform(0.05, 0.08),
        cy=look.cy + rng.choice((-1, 1)) * rng.uniform(0.05, 0.08),
        r=look.r * rng.uniform(0.88, 0.95),
        seed=look.seed + 1000,
    )


def other_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return next(c for c in PALETTE if abs(sum(c) - sum(colour)) > 150)


def base_photos(n_random: int = 24, n_colour_pairs: int = 3, n_scenes: int = 5) -> list:
    """40 base pictures: unrelated products, same-shape colour pairs, halves of wide photos."""
    rng = random.Random(7)
    kinds = rng.sample([(s, t) for s in SHAPES for t in TEXTURES], n_random + n_colour_pairs)
    looks = [replace(random_look(rng, i), shape=s, texture=t) for i, (s, t) in enumerate(kinds)]
    bases = [draw_look(look) for look in looks[:n_random]]
    for look in looks[n_random:]:
        bases += [draw_look(look), draw_look(reshoot(look, other_colour(look.colour), rng))]
    for i in range(n_scenes):
        wide = scene(rng, 200 + i)
        bases += [wide.crop((0, 0, 320, 320)), wide.crop((320, 0, 640, 320))]
    return bases


def edit(image: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """An edited copy and the JPEG quality to save it with."""
    w, h = image.size
    if kind == "jpeg60":
        return image, 60
    if kind == "half":
        return image.resize((w // 2, h // 2), Image.LANCZOS), 90
    if kind == "one_and_half":
        return image.resize((w * 3 // 2, h * 3 // 2), Image.LANCZOS), 90
    if kind == "crop":
        m = rng.uniform(0.03, 0.05)
        left, top = int(w * m * rng.random()), int(h * m * rng.random())
        return image.crop((left, top, left + int(w * (1 - m)), top + int(h * (1 - m)))), 90
    if kind == "brighter":
        return ImageEnhance.Brightness(image).enhance(1.10), 90
    raise ValueError(kind)


def build_labelled_set(directory: Path) -> pl.DataFrame:
    """Rows as duplicate_clusters takes them, plus `source` (the base photo's index) and path."""
    rng = random.Random(11)
    rows = []
    for source, base in enumerate(base_photos()):
        for kind in ("original", *EDITS):
            image, quality = (base, 92) if kind == "original" else edit(base, kind, rng)
            path = directory / f"{source:02d}_{kind}.jpg"
            image.save(path, format="JPEG", quality=quality)
            rows.append(
                {
                    "row_id": f"r{len(rows):03d}",
                    "row_index": len(rows),
                    "sha256": f"sha{len(rows):03d}",  # every file differs in bytes
                    "width": image.width,
                    "height": image.height,
                    "title": f"product {source}",
                    "category3_code": "BAGS",
                    "full_price": 100.0 + source,
                    "source": source,
                    "path": str(path),
                }
            )
    return pl.DataFrame(rows)


def pairwise_precision_recall(clusters: pl.DataFrame, truth: pl.DataFrame) -> tuple[float, float]:
    """Over all row pairs: predicted = same cluster, actual = same source photo."""
    joined = clusters.join(truth.select("row_id", "source"), on="row_id")
    cluster = joined["cluster_id"].to_numpy()
    source = joined["source"].to_numpy()
    i, j = np.triu_indices(joined.height, 1)
    predicted, actual = cluster[i] == cluster[j], source[i] == source[j]
    hits = int((predicted & actual).sum())
    return hits / max(int(predicted.sum()), 1), hits / int(actual.sum())


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = build_labelled_set(tmp_path_factory.mktemp("labelled"))
    return rows, compute_image_hashes(rows.select("sha256", "path"), workers=1)


def test_labelled_set_precision_and_recall(labelled: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    rows, hashes = labelled
    assert hashes["phash"].null_count() == 0
    clusters = duplicate_clusters(rows, hashes)
    precision, recall = pairwise_precision_recall(clusters, rows)
    print(f"labelled set: precision={precision:.3f} recall={recall:.3f} ({rows.height} images)")
    assert precision >= 0.95
    assert recall >= 0.95


def test_look_alikes_stay_distinct(labelled: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    """Same shape in two colours (sources 24-29) and two halves of one photo (30-39)."""
    rows, hashes = labelled
    clusters = duplicate_clusters(rows, hashes).join(rows.select("row_id", "source"), on="row_id")
    for first in range(24, 40, 2):
        a, b = (
            set(clusters.filter(pl.col("source") == s)["cluster_id"]) for s in (first, first + 1)
        )
        assert not a & b, f"sources {first} and {first + 1} merged"


@pytest.mark.xfail(
    strict=True,
    reason="phash and dhash see luminance structure only: the same photo layout in two colours "
    "that are both darker than the backdrop hashes alike. Needs a colour signature column.",
)
def test_identical_layout_in_two_colours_is_distinct(tmp_path: Path) -> None:
    look = Look("star", "plain", (30, 45, 95), (240, 236, 230), 0.5, 0.5, 0.3, seed=1)
    rows = []
    for k, colour in enumerate([(30, 45, 95), (120, 25, 45)]):
        path = tmp_path / f"{k}.jpg"
        draw_look(replace(look, colour=colour)).save(path, quality=92)
        rows.append(_row(k, f"sha{k}", path=str(path)))
    frame = pl.DataFrame(rows)
    clusters = duplicate_clusters(frame, compute_image_hashes(frame.select("sha256", "path")))
    assert clusters["cluster_id"].n_unique() == 2


# ---------------------------------------------------------------------------------------------
# Unit tests on hand-made hashes


def _row(index: int, sha: str | None, **overrides: object) -> dict:
    row = {
        "row_id": f"id{index:04d}",
        "row_index": index,
        "sha256": sha,
        "width": 100,
        "height": 100,
        "title": f"title {index}",
        "category3_code": "BAGS",
        "full_price": 10.0,
    }
    return {**row, **overrides}


def _hashes(**by_sha: tuple[int | None, int | None]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "sha256": list(by_sha),
            "phash": [p for p, _ in by_sha.values()],
            "dhash": [d for _, d in by_sha.values()],
        },
        schema=IMAGE_HASHES_SCHEMA,
    )


FAR = 0x0F0F_0F0F_0F0F_0F0F  # 32 bits away from 0 and from ~0


def by_row(clusters: pl.DataFrame) -> dict[str, dict]:
    return {r["row_id"]: r for r in clusters.iter_rows(named=True)}


def test_exact_duplicates_share_a_cluster() -> None:
    images = pl.DataFrame([_row(0, "a"), _row(1, "a"), _row(2, "b")])
    out = by_row(duplicate_clusters(images, _hashes(a=(0, 0), b=(FAR, FAR))))
    assert out["id0001"]["cluster_id"] == "id0000"
    assert out["id0001"]["match_kind"] == "exact"
    assert out["id0001"]["hamming_to_canonical"] == 0
    assert out["id0000"]["cluster_size"] == 2
    assert out["id0002"]["cluster_size"] == 1
    assert out["id0002"]["match_kind"] == "canonical"


def test_undecodable_images_match_only_their_own_bytes() -> None:
    big = 1 << 63  # 2**63 and 2**63 + 2047 are the same float64: hashes must stay integers
    images = pl.DataFrame([_row(k, sha) for k, sha in enumerate("aabcde")])
    hashes = _hashes(a=(None, None), b=(None, None), c=(big, 0), d=(big + 2047, 0), e=(0, None))
    out = by_row(duplicate_clusters(images, hashes))
    assert out["id0001"]["cluster_id"] == "id0000"
    assert [out[f"id000{k}"]["cluster_size"] for k in range(6)] == [2, 2, 1, 1, 1, 1]


def test_canonical_is_largest_then_earliest() -> None:
    near = (0b111, 0b1)  # within both limits of (0, 0)
    images = pl.DataFrame(
        [
            _row(0, "small", width=50, height=50),
            _row(1, "big_first", width=400, height=300),
            _row(2, "big_second", width=300, height=400),
            _row(3, "mid", width=200, height=200),
        ]
    ).sort("row_index", descending=True)
    hashes = _hashes(small=(0, 0), big_first=near, big_second=(0, 0), mid=near)
    out = by_row(duplicate_clusters(images, hashes))
    assert {r["cluster_id"] for r in out.values()} == {"id0001"}
    assert out["id0001"]["is_canonical"] and out["id0001"]["match_kind"] == "canonical"
    assert out["id0000"]["match_kind"] == "near"
    assert out["id0000"]["hamming_to_canonical"] == 3
    assert out["id0003"]["hamming_to_canonical"] == 0  # same phash, other bytes: still "near"
    assert out["id0003"]["match_kind"] == "near"


def _random_catalogue(n: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, n // 2, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, n // 2).astype(np.uint64)
    phash = np.concatenate([base, base ^ flips])  # every image has a 1-bit neighbour
    shas = [f"s{k:05d}" for k in range(n)]
    hashes = pl.DataFrame(
        {"sha256": shas, "phash": phash, "dhash": phash}, schema=IMAGE_HASHES_SCHEMA
    )
    picks = rng.integers(0, n, n + 50)  # some rows share bytes
    images = pl.DataFrame(
        [
            _row(k, shas[p], width=int(rng.integers(1, 4)) * 100, full_price=float(k % 3))
            for k, p in enumerate(picks)
        ]
    )
    return images, hashes


def test_output_is_deterministic_under_row_shuffling() -> None:
    images, hashes = _random_catalogue(400, seed=3)
    first = duplicate_clusters(images, hashes)
    second = duplicate_clusters(images.sample(fraction=1.0, shuffle=True, seed=1), hashes)
    assert first.equals(second)
    assert first["row_index"].to_list() == sorted(images["row_index"].to_list())
    assert first.schema == pl.Schema(DUPLICATE_CLUSTERS_SCHEMA)
    assert first["cluster_size"].max() > 1


def test_placeholder_is_flagged_but_shared_product_photo_is_not() -> None:
    unrelated = ["Check Scarf", "Leather Belt", "Trench Coat", "Polo Shirt", "Wool Hat", "Tote"]
    same = ["Check Wool Scarf"] * 4 + ["Check Wool Scarf Navy", "Logo Tote"]
    images = pl.DataFrame(
        [_row(k, "ph", title=t) for k, t in enumerate(unrelated)]
        + [_row(10 + k, "photo", title=t) for k, t in enumerate(same)]
        + [_row(20 + k, "few", title=t) for k, t in enumerate(unrelated[:4])]
    )
    hashes = _hashes(ph=(0, 0), photo=(FAR, FAR), few=(~FAR & (2**64 - 1), 0))
    out = duplicate_clusters(images, hashes)
    flagged = out.filter(pl.col("is_placeholder"))["sha256"].unique().to_list()
    assert flagged == ["ph"]
    placeholders = out.filter(pl.col("is_placeholder"))
    assert placeholders["cluster_id"].n_unique() == 1 and placeholders.height == len(unrelated)


def test_near_duplicate_cluster_of_unrelated_titles_is_a_placeholder() -> None:
    titles = ["Scarf", "Belt", "Coat", "Shirt", "Hat"]
    images = pl.DataFrame([_row(k, f"s{k}", title=t) for k, t in enumerate(titles)])
    hashes = _hashes(**{f"s{k}": (1 << k, 0) for k in range(5)})  # each 2 bits from every other
    out = duplicate_clusters(images, hashes)
    assert out["cluster_size"].to_list() == [5] * 5
    assert out["is_placeholder"].all()


def test_label_conflicts_are_flagged_not_merged() -> None:
    images = pl.DataFrame(
        [
            _row(0, "a", width=300),
            _row(1, "a", category3_code="SHOES"),
            _row(2, "b", full_price=99.0),
            _row(3, "b"),
            _row(4, "c", category3_code=None),
        ]
    )
    out = duplicate_clusters(images, _hashes(a=(0, 0), b=(1, 1), c=(FAR, FAR)))
    assert out["label_conflict"].to_list() == [False, True, True, False, False]
    assert out["cluster_size"].to_list() == [4, 4, 4, 4, 1]  # still one cluster
    conflicted = out.filter(pl.col("label_conflict").any().over("cluster_id")).sort("row_index")
    assert conflicted["row_id"].to_list() == ["id0000", "id0001", "id0002", "id0003"]
    canonical = conflicted.filter(pl.col("is_canonical")).join(images, on="row_id")
    assert canonical["category3_code"].to_list() == ["BAGS"]


def test_empty_input_gives_typed_empty_frame() -> None:
    empty = pl.DataFrame([_row(0, None)]).clear()
    out = duplicate_clusters(empty, _hashes())
    assert out.height == 0
    assert out.schema == pl.Schema(DUPLICATE_CLUSTERS_SCHEMA)
    only_missing = duplicate_clusters(pl.DataFrame([_row(0, None)]), _hashes())
    assert only_missing.height == 0


# ---------------------------------------------------------------------------------------------
# near_duplicate_pairs


def _planted(n: int, n_near: int, max_flips: int, seed: int) -> np.ndarray:
    """n random hashes whose last n_near are copies of the first ones, <= max_flips bits apart."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for k in range(n_near):
        bits = rng.choice(64, size=int(rng.integers(0, max_flips + 1)), replace=False)
        hashes[n - 1 - k] = hashes[k] ^ np.uint64(sum(1 << int(b) for b in bits))
    return hashes


def _brute_force(hashes: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(hashes.size, 1)
    dist = popcount64(hashes[i] ^ hashes[j])
    keep = dist <= d
    return np.stack([i[keep], j[keep]], 1), dist[keep]


@pytest.mark.parametrize("max_distance", [0, 4, 10])
def test_near_duplicate_pairs_equals_brute_force(max_distance: int) -> None:
    hashes = _planted(2000, 200, max_flips=12, seed=max_distance)
    hashes[500:800] = hashes[499]  # a giant bucket of identical hashes
    pairs, dist = near_duplicate_pairs(hashes, max_distance)
    expected_pairs, expected_dist = _brute_force(hashes, max_distance)
    assert len(expected_pairs) > 300 * 299 // 2
    np.testing.assert_array_equal(pairs, expected_pairs)
    np.testing.assert_array_equal(dist, expected_dist)


def test_popcount_lookup_table_matches_bitwise_count(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).integers(0, 2**64 - 1, 1000, np.uint64, endpoint=True)
    fast = popcount64(values)
    monkeypatch.setattr("curation.dedupe._HAS_BITWISE_COUNT", False)
    np.testing.assert_array_equal(popcount64(values), fast)
    assert fast.max() <= 64 and popcount64(np.array([2**64 - 1], np.uint64))[0] == 64


def test_near_duplicate_pairs_scales_to_200k_hashes() -> None:
    d = DEFAULT_MAX_PHASH_DISTANCE
    n, n_near = 200_000, 1000
    hashes = _planted(n, n_near, max_flips=d, seed=42)
    start = time.perf_counter()
    pairs, dist = near_duplicate_pairs(hashes, d)
    elapsed = time.perf_counter() - start
    print(f"near_duplicate_pairs: {n} hashes, d={d}: {len(pairs)} pairs in {elapsed:.2f}s")
    found = {tuple(p) for p in pairs.tolist()}
    assert all((k, n - 1 - k) in found for k in range(n_near))
    assert (dist <= d).all()


def test_greedy_band_cover_is_exact() -> None:
    """Every set of m - d untouched bands holds a whole table, so no pair within d is missed."""
    m, d, r = 17, 10, 5
    tables = np.array(_band_cover(m, d, r), dtype=np.int64)
    assert len(tables) < math.comb(m, r) // 2  # the point of a cover: far fewer tables
    assert all(bin(int(t)).count("1") == r for t in tables)
    untouched = np.array(
        [sum(1 << b for b in c) for c in combinations(range(m), m - d)], dtype=np.int64
    )
    holds = ((untouched[:, None] & tables[None, :]) == tables[None, :]).any(axis=1)
    assert holds.all()


def test_greedy_layout_on_threads_equals_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    # Large inputs take greedy covers and threads; force that path on a brute-forceable size.
    monkeypatch.setattr("curation.dedupe._COVER_MIN_HASHES", 0)
    monkeypatch.setattr("curation.dedupe._TABLE_THREADS", 2)
    d = DEFAULT_MAX_PHASH_DISTANCE
    hashes = _planted(3000, 300, max_flips=d, seed=7)
    m, tables = _band_layout(hashes.size, d)
    assert len(tables) < math.comb(m, m - d)  # a greedy cover, not all subsets
    pairs, dist = near_duplicate_pairs(hashes, d)
    expected_pairs, expected_dist = _brute_force(hashes, d)
    assert {(k, 2999 - k) for k in range(300)} <= {tuple(p) for p in expected_pairs.tolist()}
    np.testing.assert_array_equal(pairs, expected_pairs)
    np.testing.assert_array_equal(dist, expected_dist)
