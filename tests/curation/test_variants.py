from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

import curation.variants as variants_mod
from curation.images.store import sha256_hex, store_image_bytes
from curation.splits import assign_splits
from curation.variants import (
    IMAGE_OPS,
    PARAPHRASES,
    make_synthetic_variants,
    oversample_counts,
    variant_kind_counts,
)
from schemas.prompt import DEFAULT_QUESTION
from schemas.tables import SYNTHETIC_VARIANTS_SCHEMA
from tests.curation.test_splits import curated_frame

SIZE = 64
BACKGROUND = (235, 235, 230)
PRODUCT_COLOURS = ((200, 40, 40), (30, 45, 95), (95, 105, 45))
LABELS = ("title", "category1_code", "category2_code", "category3_code", "full_price")


def product_image(colour: tuple[int, int, int], offset: int = 0) -> Image.Image:
    """A small catalogue-style photo: one coloured product on a plain light backdrop."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    ImageDraw.Draw(img).rectangle((16 + offset, 14, 46 + offset, 50), fill=colour)
    return img


def jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def stored_splits(root: Path, n: int = 48, min_stratum_rows: int = 20) -> pl.DataFrame:
    """Splits over n rows whose images really exist in a content-addressed store."""
    records = []
    for i in range(n):
        data = jpeg_bytes(product_image(PRODUCT_COLOURS[i % 3], offset=i % 5))
        path = store_image_bytes(str(root), data, "jpg")
        records.append(
            {
                "title": f"Product {i}",
                "category3_code": ("SCARVES", "BAGS", "HATS")[i % 3],
                "sha256": sha256_hex(data),
                "image_path": path,
                # a plain RGB JPEG is its own normalised picture
                "normalised_sha256": sha256_hex(data),
                "normalised_path": path,
                "width": SIZE,
                "height": SIZE,
            }
        )
    return assign_splits(curated_frame(records), min_stratum_rows=min_stratum_rows)


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    return stored_splits(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def variants(splits: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    root = tmp_path_factory.mktemp("store")
    return make_synthetic_variants(
        splits, str(root), seed=7, image_variants_per_row=2, prompt_variants_per_row=2
    )


def test_variants_are_train_only_and_keep_parent_labels(
    splits: pl.DataFrame, variants: pl.DataFrame
) -> None:
    assert variants.schema == pl.Schema(SYNTHETIC_VARIANTS_SCHEMA)
    train = splits.filter(pl.col("split") == "train")
    assert 0 < train.height < splits.height  # fixture covers held-out rows too
    assert variants.height == train.height * 4
    joined = variants.join(splits, left_on="parent_row_id", right_on="row_id", suffix="_parent")
    assert joined.height == variants.height  # every parent exists
    assert set(joined["split"]) == {"train"}
    for col in LABELS:
        assert joined[col].equals(joined[f"{col}_parent"], check_names=False)
    assert variants["variant_id"].n_unique() == variants.height


def test_prompt_variants_reuse_parent_image_with_new_question(
    splits: pl.DataFrame, variants: pl.DataFrame
) -> None:
    prompts = variants.filter(pl.col("variant_kind") == "prompt:paraphrase").join(
        splits, left_on="parent_row_id", right_on="row_id", suffix="_parent"
    )
    assert prompts["sha256"].equals(prompts["sha256_parent"], check_names=False)
    assert prompts["image_path"].equals(prompts["image_path_parent"], check_names=False)
    assert set(prompts["question"]) <= set(PARAPHRASES)
    # A row's two prompt variants use two different phrasings.
    assert (
        prompts.group_by("parent_row_id").agg(pl.col("question").n_unique())["question"].min() == 2
    )


def test_image_variants_are_stored_new_images(splits: pl.DataFrame, variants: pl.DataFrame) -> None:
    images = variants.filter(pl.col("variant_kind").str.starts_with("image:"))
    assert set(images["question"]) == {DEFAULT_QUESTION}
    assert set(images["variant_kind"]) <= {f"image:{op}" for op in IMAGE_OPS}
    assert not set(images["sha256"]) & set(splits["sha256"])
    for path, sha in images.select("image_path", "sha256").iter_rows():
        data = Path(path).read_bytes()
        assert sha256_hex(data) == sha and os.path.basename(path) == f"{sha}.jpg"
        assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)


def test_same_seed_same_variants_other_seed_differs(
    splits: pl.DataFrame, variants: pl.DataFrame, tmp_path: Path
) -> None:
    kwargs = {"image_variants_per_row": 2, "prompt_variants_per_row": 2}
    again = make_synthetic_variants(splits, str(tmp_path / "a"), seed=7, **kwargs)
    cols = ["variant_id", "variant_kind", "sha256", "question"]
    assert again.select(cols).equals(variants.select(cols))
    other = make_synthetic_variants(splits, str(tmp_path / "b"), seed=8, **kwargs)
    assert not set(other["variant_id"]) & set(variants["variant_id"])


def test_adding_rows_leaves_other_rows_variants_alone(
    splits: pl.DataFrame, variants: pl.DataFrame, tmp_path: Path
) -> None:
    kwargs = {"seed": 7, "image_variants_per_row": 2, "prompt_variants_per_row": 2}
    train_ids = splits.filter(pl.col("split") == "train")["row_id"]
    subset = splits.filter(pl.col("row_id") != train_ids[0])
    fewer = make_synthetic_variants(subset, str(tmp_path), **kwargs)
    cols = ["variant_id", "sha256", "question"]
    kept = variants.filter(pl.col("parent_row_id") != train_ids[0]).select(cols)
    assert fewer.select(cols).equals(kept)


def test_previous_variants_are_reused_and_missing_files_regenerated(
    splits: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_synthetic_variants(splits, str(tmp_path), seed=1)
    images = first.filter(pl.col("variant_kind").str.starts_with("image:"))
    os.remove(images["image_path"][0])
    stored: list[str] = []

    def counting_store(root: str, data: bytes, ext: str) -> str:
        stored.append(sha256_hex(data))
        return store_image_bytes(root, data, ext)

    monkeypatch.setattr(variants_mod, "store_image_bytes", counting_store)
    second = make_synthetic_variants(splits, str(tmp_path), seed=1, previous=first)
    assert stored == [images["sha256"][0]]  # only the deleted one was rendered again
    assert second.equals(first)
    assert Path(images["image_path"][0]).exists()


def test_oversampling_tops_small_categories_up(splits: pl.DataFrame, tmp_path: Path) -> None:
    train = splits.filter(pl.col("split") == "train")
    real = dict(train.group_by("category3_code").len().iter_rows())
    target = max(real.values()) + 3
    out = make_synthetic_variants(
        splits,
        str(tmp_path),
        image_variants_per_row=0,
        prompt_variants_per_row=0,
        min_rows_per_category=target,
    )
    assert all(k.startswith("oversample:") for k in out["variant_kind"])
    extra = dict(out.group_by("category3_code").len().iter_rows())
    assert {c: real[c] + extra.get(c, 0) for c in real} == dict.fromkeys(real, target)
    assert sum(oversample_counts(train, target).values()) == out.height
    assert oversample_counts(train, 0) == {}
    assert variant_kind_counts(out) == dict(sorted(out.group_by("variant_kind").len().iter_rows()))


@pytest.mark.parametrize("op", sorted(IMAGE_OPS))
def test_image_ops_keep_the_product_colour(op: str) -> None:
    colour = PRODUCT_COLOURS[0]
    src = product_image(colour)
    for seed in range(5):
        out, quality = IMAGE_OPS[op](src, np.random.default_rng(seed))
        assert out.size == src.size and out.mode == "RGB"
        assert 70 <= quality <= 95
        centre = np.asarray(out)[28:36, 27:35].reshape(-1, 3).mean(axis=0)
        # Same dominant channel and roughly the same colour: lighting moves, hue does not.
        assert int(np.argmax(centre)) == 0
        assert np.abs(centre - np.array(colour)).max() <= 0.2 * 255
        corners = np.asarray(out)[[0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.min() >= 150  # fills and tints stay light: no black wedges


def test_tint_changes_background_only() -> None:
    src = product_image(PRODUCT_COLOURS[1])
    out, _ = IMAGE_OPS["tint"](src, np.random.default_rng(0))
    before, after = np.asarray(src), np.asarray(out)
    product = np.abs(before.astype(int) - BACKGROUND).max(axis=2) > 24
    assert (before[product] == after[product]).all()
    assert (before[~product] != after[~product]).any()
