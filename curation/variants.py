"""Synthetic train-only samples: label-preserving image augmentations and prompt paraphrases.

Every variant is derived from one train row and keeps that row's answer, so an augmentation must
never change what the answer describes: geometry and lighting may move a little, but colour is
part of the product (no channel swaps, no hue shifts) and only the background may be tinted.
Randomness comes from a generator seeded by (seed, parent row, slot), never from a shared
stream, so adding or removing catalogue rows leaves every other row's variants byte-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
from PIL import Image, ImageEnhance

from curation.images.decode import encode_jpeg, load_normalised
from curation.images.store import exists, sha256_hex, store_image_bytes
from schemas.progress import Progress
from schemas.prompt import DEFAULT_QUESTION
from schemas.tables import LABEL_COLUMNS, SYNTHETIC_VARIANTS_SCHEMA, empty_frame

# Bump when an op's behaviour changes: it is part of every variant_id, so old variants are not
# reused under the new rules.
VARIANTS_VERSION = "variants-v2"

# Natural ways a shopper or a catalogue tool asks the same question; the answer format does not
# change with the phrasing, which is what these samples teach.
PARAPHRASES: tuple[str, ...] = (
    "What product is this?",
    "Describe the item in this picture.",
    "Which product is shown here, and what does it cost?",
    "Identify this catalogue item.",
    "What is this item, its category and its full price?",
    "Can you tell me what this product is?",
    "What am I looking at in this photo?",
    "Name the product in the image, with category and price.",
)

# Quality for ops other than "jpeg": high enough that they do not add compression artefacts of
# their own, which is the "jpeg" op's job.
_STORE_QUALITY = 95
# A pixel within this (max-channel) distance of the border colour counts as background.
_BACKGROUND_DISTANCE = 24

ImageOp = Callable[[Image.Image, np.random.Generator], tuple[Image.Image, int]]


def _border_colour(img: Image.Image) -> tuple[int, int, int]:
    """Median of the outermost pixels: catalogue photos sit on a plain backdrop."""
    a = np.asarray(img)
    edge = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    med = np.median(edge, axis=0)
    return (int(med[0]), int(med[1]), int(med[2]))


def _crop(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Crop 2-8 % off each dimension and scale back: a slightly tighter framing."""
    w, h = img.size
    cw = max(1, round(w * (1 - rng.uniform(0.02, 0.08))))
    ch = max(1, round(h * (1 - rng.uniform(0.02, 0.08))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.resize((w, h), Image.Resampling.BICUBIC, box=(x, y, x + cw, y + ch)), _STORE_QUALITY


def _rotate(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Tilt by 1-5 degrees; corners filled with the backdrop so no black wedges appear."""
    angle = float(rng.uniform(1.0, 5.0) * rng.choice([-1.0, 1.0]))
    rotated = img.rotate(angle, Image.Resampling.BICUBIC, fillcolor=_border_colour(img))
    return rotated, _STORE_QUALITY


def _color(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Brightness and contrast within +/-15 %: lighting, not product colour (hue is kept)."""
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.85, 1.15)))
    return ImageEnhance.Contrast(img).enhance(float(rng.uniform(0.85, 1.15))), _STORE_QUALITY


def _tint(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Blend backdrop pixels toward a light tone; product pixels are left untouched."""
    a = np.asarray(img).astype(np.float32)
    bg = np.array(_border_colour(img), dtype=np.float32)
    mask = (np.abs(a - bg).max(axis=2) <= _BACKGROUND_DISTANCE)[..., None]
    tone = rng.uniform(200.0, 255.0, size=3).astype(np.float32)
    alpha = float(rng.uniform(0.15, 0.35))
    out = np.where(mask, a * (1 - alpha) + tone * alpha, a)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB"), _STORE_QUALITY


def _jpeg(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, int]:
    """Re-encode at quality 70-90: the compression real catalogue pipelines apply."""
    return img, int(rng.integers(70, 91))


IMAGE_OPS: dict[str, ImageOp] = {
    "crop": _crop,
    "rotate": _rotate,
    "color": _color,
    "tint": _tint,
    "jpeg": _jpeg,
}
_OP_NAMES: tuple[str, ...] = tuple(IMAGE_OPS)


def _rng(seed: int, row_id: str, slot: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{VARIANTS_VERSION}\x1f{seed}\x1f{row_id}\x1f{slot}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


def _variant_id(seed: int, row_id: str, parent_sha256: str | None, slot: str) -> str:
    """Stable id: same seed, parent row, parent image and slot -> same variant."""
    key = f"{VARIANTS_VERSION}\x1f{seed}\x1f{row_id}\x1f{parent_sha256}\x1f{slot}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Job:
    """One planned variant; image jobs carry the op, prompt jobs the question."""

    variant_id: str
    parent: dict
    kind: str
    slot: str
    op: str | None
    question: str


def _plan_row(row: dict, seed: int, n_image: int, n_prompt: int, n_oversample: int) -> list[_Job]:
    jobs: list[_Job] = []
    rid, sha = row["row_id"], row["sha256"]
    image_slots = [("image", k) for k in range(n_image)]
    image_slots += [("oversample", k) for k in range(n_oversample)]
    for prefix, k in image_slots:
        slot = f"{prefix}:{k}"
        op = _OP_NAMES[int(_rng(seed, rid, slot).integers(len(_OP_NAMES)))]
        vid = _variant_id(seed, rid, sha, slot)
        jobs.append(_Job(vid, row, f"{prefix}:{op}", slot, op, DEFAULT_QUESTION))
    # One permutation per row, so a row's k prompt variants use k distinct phrasings.
    order = _rng(seed, rid, "prompt").permutation(len(PARAPHRASES))
    for k in range(n_prompt):
        slot = f"prompt:{k}"
        question = PARAPHRASES[int(order[k % len(PARAPHRASES)])]
        vid = _variant_id(seed, rid, sha, slot)
        jobs.append(_Job(vid, row, "prompt:paraphrase", slot, None, question))
    return jobs


def oversample_counts(train: pl.DataFrame, min_rows_per_category: int) -> dict[str, int]:
    """row_id -> extra image variants so that each category3 reaches the minimum.

    Real train rows count toward the minimum; the deficit is spread round-robin over the
    category's rows in row_id order (a deterministic order independent of catalogue position).
    """
    if min_rows_per_category <= 0 or train.height == 0:
        return {}
    extra: dict[str, int] = {}
    for _, rows in train.sort("row_id").group_by("category3_code", maintain_order=True):
        ids = rows["row_id"].to_list()
        deficit = min_rows_per_category - len(ids)
        for i, rid in enumerate(ids):
            n = deficit // len(ids) + (1 if i < deficit % len(ids) else 0)
            if deficit > 0 and n > 0:
                extra[rid] = n
    return extra


def _run_parent(jobs: list[_Job], store_root: str, seed: int, reuse: dict[str, dict]) -> list[dict]:
    """All variants of one parent: its image is decoded at most once."""
    out: list[dict] = []
    base: Image.Image | None = None
    for job in jobs:
        parent = job.parent
        labels = {c: parent[c] for c in LABEL_COLUMNS}
        record = {"variant_id": job.variant_id, "parent_row_id": parent["row_id"]}
        record |= {"variant_kind": job.kind, "question": job.question, **labels}
        if job.op is None:
            out.append(
                record
                | {"sha256": parent["sha256"], "image_path": parent["image_path"]}
                | {k: parent[k] for k in ("normalised_sha256", "normalised_path")}
            )
            continue
        kept = reuse.get(job.variant_id)
        if kept is not None and kept["image_path"] and exists(kept["image_path"]):
            out.append(kept)
            continue
        if base is None:
            base = load_normalised(parent["normalised_path"] or parent["image_path"])
        img, quality = IMAGE_OPS[job.op](base, _rng(seed, parent["row_id"], job.slot))
        data = encode_jpeg(img, quality)
        path = store_image_bytes(store_root, data, "jpg")
        digest = sha256_hex(data)
        # An RGB JPEG we wrote is its own normalised picture.
        out.append(record | {"sha256": digest, "image_path": path} | _same_address(digest, path))
    return out


def _same_address(sha256: str, path: str) -> dict[str, str]:
    return {"normalised_sha256": sha256, "normalised_path": path}


def _reusable(previous: pl.DataFrame | None) -> dict[str, dict]:
    """Previous image variants by id; whether the file still exists is checked at use."""
    if previous is None or previous.height == 0:
        return {}
    if not set(SYNTHETIC_VARIANTS_SCHEMA) <= set(previous.columns):
        return {}  # written before the table had today's columns: render again
    rows = previous.select(list(SYNTHETIC_VARIANTS_SCHEMA)).to_dicts()
    return {r["variant_id"]: r for r in rows}


def make_synthetic_variants(
    splits: pl.DataFrame,
    store_root: str,
    seed: int = 0,
    image_variants_per_row: int = 1,
    prompt_variants_per_row: int = 1,
    min_rows_per_category: int = 0,
    previous: pl.DataFrame | None = None,
    max_workers: int = 4,
    progress: Progress | None = None,
) -> pl.DataFrame:
    """Train-only variants (SYNTHETIC_VARIANTS_SCHEMA), ordered by parent then slot.

    `previous` (last materialisation) makes the work row-incremental: a variant whose id is
    there and whose file still exists is copied, not re-rendered.
    """
    train = splits.filter((pl.col("split") == "train") & pl.col("image_path").is_not_null())
    extra = oversample_counts(train, min_rows_per_category)
    per_parent = [
        _plan_row(
            row, seed, image_variants_per_row, prompt_variants_per_row, extra.get(row["row_id"], 0)
        )
        for row in train.to_dicts()
    ]
    reuse = _reusable(previous)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        results = pool.map(lambda jobs: _run_parent(jobs, store_root, seed, reuse), per_parent)
        records: list[dict] = []
        for parents_done, batch in enumerate(results, start=1):
            records.extend(batch)
            if progress is not None:
                progress(parents_done, len(per_parent))
    if not records:
        return empty_frame(SYNTHETIC_VARIANTS_SCHEMA)
    return pl.DataFrame(records, schema=SYNTHETIC_VARIANTS_SCHEMA)


def variant_kind_counts(variants: pl.DataFrame) -> dict[str, int]:
    """variant_kind -> count, sorted by kind (for asset metadata and the dataset card)."""
    counts = variants.group_by("variant_kind").len().sort("variant_kind")
    return {str(k): int(n) for k, n in counts.iter_rows()}
