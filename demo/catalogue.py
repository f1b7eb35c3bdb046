"""The embedded demo catalogue: DBQ-shaped rows, drawn pictures, planted defects, ground truth.

Deterministic by seed and built locally (no network), so `make demo`, the tests and the
benchmarks all see the same 3,040 rows. The manifest beside the catalogue records, for every
planted defect, the outcome the pipeline must reach; tests compare the ledger against it.

Products are drawn apart by the pipeline's own near-duplicate rule (`curation.dedupe`'s
thresholds over `curation.images.hashing`), so the only duplicates are the planted ones and a
change to the rule redraws the demo rather than silently planting new ones. That makes `demo`
a layer above `curation`: it imports curation, curation never imports it.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from curation.dedupe_confirm import DEFAULT_RULE, confirmed_pairs
from curation.images.decode import normalise, open_image
from curation.images.hashing import hash_image_bytes
from demo.images import draw_product, encode, near_duplicate, placeholder_image
from demo.looks import COLOURS, ProductLook
from demo.taxonomy import MATERIALS, MODEL_NAMES, NOUNS, STYLES, TAXONOMY, category_looks
from schemas.atomic import atomic_path, write_bytes_atomic
from schemas.tables import CATALOGUE_COLUMNS, IMAGE_HASHES_SCHEMA

DEMO_VERSION = "demo-v8"  # bump when the generator changes, so cached copies are rebuilt
DEMO_ROWS = 3040
DEMO_SEED = 20231117
_HASH_VALUES_SCHEMA = {
    k: v for k, v in IMAGE_HASHES_SCHEMA.items() if k not in ("sha256", "hash_version")
}

# How many rows carry each planted defect (disjoint row sets).
INVALID_KINDS: dict[str, tuple[str, int]] = {  # kind -> (field the validator must name, count)
    "na_category3": ("category3_code", 16),
    "na_category2": ("category2_code", 6),
    "empty_title": ("title", 6),
    "whitespace_title": ("title", 5),
    "negative_price": ("price", 6),
    "nan_price": ("full_price", 6),
    "price_above_full_price": ("price", 8),
    "bad_url": ("imageurl", 8),
}
IMAGE_DEFECTS: dict[str, tuple[str, int]] = {  # kind -> (expected outcome, count)
    "missing_image": ("download_failed", 15),
    "html_error_page": ("bad_image", 10),
    "truncated_jpeg": ("bad_image", 10),
}
# Real-world encodings and unusable pictures (curation/images): kind -> (expected outcome, count,
# how the reason must start). The encodings must come out curated, upright and on white; the
# thumbnail and the blank picture are excluded by the default quality policy.
ENCODING_DEFECTS: dict[str, tuple[str, int, str | None]] = {
    "exif_rotated_jpeg": ("curated", 3, None),
    "transparent_png": ("curated", 3, None),
    "sixteen_bit_png": ("curated", 2, None),
    "avif": ("curated", 2, None),
    "cmyk_jpeg": ("curated", 1, None),
    "tiny_thumbnail": ("bad_image", 2, "quality: too_small"),
    "blank_picture": ("bad_image", 2, "quality: low_information"),
}
N_EXACT_DUPLICATES = 30
N_LABEL_CONFLICTS = 5  # of the exact duplicates, re-listed at another price
N_NEAR_DUPLICATES = 30  # split evenly over re-encode / resize / crop
N_PLACEHOLDER_ROWS = 24
BAD_URLS = ("htp:/broken-link", "ftp://images.example.com/x.jpg", "javascript:alert(1)", "")
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>Try again later.</p></body></html>"
)


@dataclass
class DemoRow:
    values: dict[str, str]
    look: ProductLook
    seed: int
    defect: str = "none"
    expected_outcome: str = "curated"
    invalid_field: str | None = None
    source_of: DemoRow | None = None  # the original row a duplicate was copied from
    extras: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoCatalogue:
    """Where the generated demo lives."""

    root: Path
    catalogue_path: Path
    manifest_path: Path
    images_dir: Path

    def manifest(self) -> dict:
        return json.loads(self.manifest_path.read_text())


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _category_weights(rng: random.Random) -> list[tuple[str, str, tuple[int, int], tuple]]:
    """Skewed class sizes (Zipf-like), as in a real catalogue where bags dwarf umbrellas."""
    entries = [(c2, c3, prices, c1s) for c2, items in TAXONOMY.items() for c3, prices, c1s in items]
    rng.shuffle(entries)
    return entries


def _product_rows(n_rows: int, rng: random.Random) -> list[DemoRow]:
    """Clean rows: product groups with 1–4 colour variants that share a title and a price."""
    entries = _category_weights(rng)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(len(entries))]
    looks = category_looks()
    colour_names = list(COLOURS)
    used_titles: set[str] = set()
    rows: list[DemoRow] = []
    while len(rows) < n_rows:
        c2, c3, (low, high), c1s = rng.choices(entries, weights)[0]
        title = f"{rng.choice(STYLES)} {rng.choice(MATERIALS)} {NOUNS[c3]}"
        if title in used_titles:
            title = f"The {rng.choice(MODEL_NAMES)} {title}"
        if title in used_titles:
            continue
        used_titles.add(title)
        full_price = rng.randrange(low, high + 1, 10)
        category1 = rng.choice(c1s)
        n_colours = rng.choices([1, 2, 3, 4], [0.45, 0.3, 0.15, 0.1])[0]
        for colour in rng.sample(colour_names, n_colours):
            code = str(rng.randint(80_000_000, 80_999_999))
            discounted = rng.random() < 0.18
            price = round(full_price * rng.uniform(0.6, 0.8), -1) if discounted else full_price
            values = {
                "website_name": "MAISONDEMO.COM",
                "competence_date": "2023-11-17",
                "country_code": "USA",
                "currency_code": "USD",
                "brand": "Maison Demo",
                "category1_code": category1,
                "category2_code": c2,
                "category3_code": c3,
                "product_code": code,
                "title": title,
                "itemurl": f"https://www.maisondemo.example/{_slug(title)}-{_slug(colour)}-p{code}",
                "full_price": f"{full_price:.1f}",
                "price": f"{price:.1f}",
                "full_price_eur": f"{full_price * 0.93:.2f}",
                "price_eur": f"{price * 0.93:.2f}",
                "flg_discount": "1" if discounted else "0",
            }
            shape, pattern = looks[c3]
            look = ProductLook(shape=shape, pattern=pattern, colour=COLOURS[colour])
            rows.append(DemoRow(values=values, look=look, seed=rng.getrandbits(32)))
    return rows[:n_rows]


def _plant_invalid(row: DemoRow, kind: str, rng: random.Random) -> None:
    values = row.values
    if kind == "na_category3":
        values["category3_code"] = "N.A."
    elif kind == "na_category2":
        values["category2_code"] = "N.A."
    elif kind == "empty_title":
        values["title"] = ""
    elif kind == "whitespace_title":
        values["title"] = " \t  "
    elif kind == "negative_price":
        values["price"] = f"-{values['price']}"
    elif kind == "nan_price":
        values["full_price"] = "NaN"
    elif kind == "price_above_full_price":
        values["price"] = f"{float(values['full_price']) * 1.25:.1f}"
    elif kind == "bad_url":
        row.extras["imageurl"] = rng.choice(BAD_URLS)
    row.defect, row.expected_outcome, row.invalid_field = kind, "invalid", INVALID_KINDS[kind][0]


def _copy_row(original: DemoRow, defect: str, rng: random.Random) -> DemoRow:
    """A re-listing of the same product under a new product code."""
    values = dict(original.values)
    values["product_code"] = str(rng.randint(81_000_000, 81_999_999))
    return DemoRow(
        values=values,
        look=original.look,
        seed=original.seed,
        defect=defect,
        expected_outcome="duplicate",
        source_of=original,
    )


def _plant_defects(rows: list[DemoRow], rng: random.Random) -> list[DemoRow]:
    """Mark in-place defects on disjoint clean rows and append duplicates and placeholders."""
    pool = list(range(len(rows)))
    rng.shuffle(pool)
    taken = iter(pool)
    for kind, (_, count) in INVALID_KINDS.items():
        for _ in range(count):
            _plant_invalid(rows[next(taken)], kind, rng)
    for kind, (outcome, count) in IMAGE_DEFECTS.items():
        for _ in range(count):
            row = rows[next(taken)]
            row.defect, row.expected_outcome = kind, outcome
    extra: list[DemoRow] = []
    for i in range(N_EXACT_DUPLICATES):
        copy = _copy_row(rows[next(taken)], "exact_duplicate", rng)
        if i < N_LABEL_CONFLICTS:
            copy.defect = "label_conflict"
            copy.values["full_price"] = f"{float(copy.values['full_price']) + 100:.1f}"
            copy.values["price"] = copy.values["full_price"]
        extra.append(copy)
    for i in range(N_NEAR_DUPLICATES):
        kind = ("reencode", "resize", "crop")[i % 3]
        extra.append(_copy_row(rows[next(taken)], f"near_duplicate_{kind}", rng))
    for _ in range(N_PLACEHOLDER_ROWS):
        row = rows[next(taken)]
        clone = DemoRow(
            values=dict(row.values),
            look=row.look,
            seed=row.seed,
            defect="placeholder",
            expected_outcome="bad_image",
        )
        clone.values["product_code"] = str(rng.randint(82_000_000, 82_999_999))
        clone.values["title"] = f"{row.values['title']} ({rng.choice(MODEL_NAMES)} Edition)"
        extra.append(clone)
    # Planted last, so the rows every other defect picks stay the ones they were.
    for kind, (outcome, count, _) in ENCODING_DEFECTS.items():
        for _ in range(count):
            row = rows[next(taken)]
            row.defect, row.expected_outcome = kind, outcome
    return rows + extra


def _source_bytes(row: DemoRow) -> bytes:
    return encode(draw_product(row.look, row.seed), "PNG" if row.seed % 12 == 0 else "JPEG")


def _near_copy_bytes(row: DemoRow, original: bytes) -> bytes:
    """A planted near duplicate: its source's picture (`original`) edited. The edit's randomness
    comes from the copy's own code and its source's seed, so redrawing the source redraws it."""
    source = row.source_of
    assert source is not None
    kind = row.defect.removeprefix("near_duplicate_")
    rng = random.Random(f"{row.values['product_code']}:{source.seed}")
    altered = near_duplicate(normalise(open_image(original)), kind, rng)
    return encode(altered, "JPEG", quality=70 if kind == "reencode" else 88)


def _picture_bytes(row: DemoRow, cache: dict[tuple[int, int], bytes]) -> bytes:
    """A drawn source picture or a near-duplicate copy, cached per (row, source seed)."""
    source = row.source_of or row
    key = (id(row), source.seed)
    if key not in cache:
        if row.defect.startswith("near_duplicate_"):  # edit the cached source, not a redraw
            cache[key] = _near_copy_bytes(row, _picture_bytes(source, cache))
        else:
            cache[key] = _source_bytes(source)
    return cache[key]


def _separate_lookalikes(rows: list[DemoRow], cache: dict[tuple[int, int], bytes]) -> None:
    """Redraw products whose pictures the dedupe rule (loosened by a margin) calls the same as
    another product's picture or its planted near-duplicate copy (a copy is a chain link:
    source ~ copy ~ stranger would merge the stranger into the cluster), so the only
    duplicates in the demo are the planted ones the manifest lists."""
    undrawn = {"missing_image", "html_error_page", "placeholder"}
    pictures = [
        row
        for row in rows
        if row.defect not in undrawn
        and (row.source_of is None or row.defect.startswith("near_duplicate_"))
    ]
    family = np.array([id(row.source_of or row) for row in pictures])
    rule = DEFAULT_RULE.loosened(bits=2, colour=0.1)
    hashed: dict[tuple[int, int], dict] = {}  # a picture is hashed again only once redrawn
    # Redraw seeds come from their own stream: the catalogue rows stay the same either way.
    rng = random.Random(DEMO_VERSION)
    for _ in range(20):
        keys = [(id(row), (row.source_of or row).seed) for row in pictures]
        for row, key in zip(pictures, keys, strict=True):
            if key not in hashed:
                hashed[key] = hash_image_bytes(_picture_bytes(row, cache))
        frame = pl.DataFrame([hashed[key] for key in keys], schema=_HASH_VALUES_SCHEMA)
        pairs = confirmed_pairs(frame, rule)
        strangers = family[pairs[:, 0]] != family[pairs[:, 1]]
        close = {int(j) for j in pairs[strangers, 1]}  # the later picture of each close pair
        if not close:
            return
        for index in close:
            source = pictures[index].source_of or pictures[index]
            source.seed = rng.getrandbits(32)
    raise RuntimeError("could not draw distinct demo pictures")


def _image_bytes(row: DemoRow, cache: dict[tuple[int, int], bytes]) -> bytes | None:
    """The bytes served at the row's image URL (None: nothing there, the file is missing)."""
    if row.defect == "missing_image":
        return None
    if row.defect == "html_error_page":
        return HTML_ERROR_PAGE
    if row.defect == "placeholder":
        return encode(placeholder_image(), "PNG")
    if row.defect.startswith("near_duplicate_"):
        return _picture_bytes(row, cache)
    original = _picture_bytes(row.source_of or row, cache)
    if row.defect == "truncated_jpeg":
        return original[: len(original) // 2]
    if row.defect in ENCODING_DEFECTS:
        return _encoded_as(row.defect, normalise(open_image(original)), row.seed)
    return original


def _encoded_as(kind: str, picture: Image.Image, seed: int) -> bytes:
    """The row's picture as a shop or phone might serve it (see ENCODING_DEFECTS)."""
    if kind == "exif_rotated_jpeg":  # stored on its side; EXIF orientation 6 turns it upright
        exif = Image.Exif()
        exif[0x0112] = 6
        buffer = io.BytesIO()
        picture.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=90, exif=exif)
        return buffer.getvalue()
    if kind == "transparent_png":  # a cut-out: a transparent margin whose hidden colour is black
        rgba = picture.convert("RGBA")
        margin = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
        inner = (12, 12, rgba.width - 12, rgba.height - 12)
        margin.paste(rgba.crop(inner), inner[:2])
        return encode(margin, "PNG")
    if kind == "sixteen_bit_png":
        grey = np.asarray(picture.convert("L"), dtype=np.uint16) * 257
        return encode(Image.fromarray(grey), "PNG")
    if kind == "avif":
        return encode(picture, "AVIF")
    if kind == "cmyk_jpeg":
        return encode(picture.convert("CMYK"), "JPEG")
    if kind == "tiny_thumbnail":
        return encode(picture.resize((16, 12)), "JPEG")
    assert kind == "blank_picture", kind
    level = 200 + seed % 50
    return encode(Image.new("RGB", picture.size, (level, level, level)), "JPEG")


def _expected_duplicate_roles(rows: list[DemoRow], sizes: dict[int, int]) -> dict[int, int]:
    """Which row of each planted pair the pipeline must keep: largest image, then lowest index.

    Returns {duplicate row position: canonical row position}.
    """
    position = {id(row): i for i, row in enumerate(rows)}
    roles: dict[int, int] = {}
    for i, row in enumerate(rows):
        if row.source_of is None:
            continue
        j = position[id(row.source_of)]
        copy_key, original_key = (-sizes[i], i), (-sizes[j], j)
        roles.update({i: j} if original_key < copy_key else {j: i})
    return roles


def _manifest_rows(rows: list[DemoRow], roles: dict[int, int]) -> list[dict]:
    entries = []
    for i, row in enumerate(rows):
        duplicate_of = roles.get(i)
        if duplicate_of is not None:
            outcome = "duplicate"
        elif row.source_of is not None:
            outcome = "curated"  # the copy sorted first, so it is the one kept
        else:
            outcome = row.expected_outcome
        entries.append(
            {
                "row_index": i,
                "defect": row.defect,
                "expected_outcome": outcome,
                "field": row.invalid_field,
                "duplicate_of_row_index": duplicate_of,
                "label_conflict": row.defect == "label_conflict",
            }
        )
    return entries


def build_demo_catalogue(
    root: str | os.PathLike, n_rows: int = DEMO_ROWS, seed: int = DEMO_SEED
) -> DemoCatalogue:
    """Generate (or reuse, when already complete) the demo catalogue under `root`."""
    root = Path(root).resolve()
    demo = DemoCatalogue(root, root / "catalogue.csv", root / "manifest.json", root / "images")
    if demo.manifest_path.exists():
        meta = demo.manifest()
        if (meta.get("version"), meta.get("seed"), meta.get("n_rows")) == (
            DEMO_VERSION,
            seed,
            n_rows,
        ):
            return demo
    demo.images_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_appended = N_EXACT_DUPLICATES + N_NEAR_DUPLICATES + N_PLACEHOLDER_ROWS
    rows = _plant_defects(_product_rows(n_rows - n_appended, rng), rng)
    rng.shuffle(rows)
    cache: dict[tuple[int, int], bytes] = {}
    _separate_lookalikes(rows, cache)
    sizes: dict[int, int] = {}
    records = []
    for i, row in enumerate(rows):
        image_path = demo.images_dir / f"{row.values['product_code']}-{i:05d}"
        data = _image_bytes(row, cache)
        if data is not None:
            write_bytes_atomic(image_path, data, durable=False)  # rebuilt when missing
            sizes[i] = _pixel_count(data)
        url = row.extras.get("imageurl", image_path.as_uri())
        records.append({**row.values, "imageurl": url})
    frame = pl.DataFrame(records, schema={name: pl.String for name in CATALOGUE_COLUMNS})
    with atomic_path(demo.catalogue_path) as tmp:
        frame.write_csv(tmp)
    entries = _manifest_rows(rows, _expected_duplicate_roles(rows, sizes))
    manifest = {
        "version": DEMO_VERSION,
        "seed": seed,
        "n_rows": n_rows,
        "outcome_counts": _count(entry["expected_outcome"] for entry in entries),
        "defect_counts": _count(entry["defect"] for entry in entries),
        # defect -> how the ledger's reason must start, where the manifest can say
        "expected_reasons": {k: r for k, (_, _, r) in ENCODING_DEFECTS.items() if r},
        "rows": entries,
    }
    write_bytes_atomic(demo.manifest_path, json.dumps(manifest, indent=1).encode())
    return demo


def _pixel_count(data: bytes) -> int:
    try:
        width, height = open_image(data, max_pixels=2**62).size  # report, do not judge
        return width * height
    except Exception:  # undecodable planted bytes have no resolution
        return 0


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items()))
