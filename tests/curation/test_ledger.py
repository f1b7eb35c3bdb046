from __future__ import annotations

import polars as pl
import pytest

from curation.ledger import NO_IMAGE_RESULT, build_curation_ledger, select_curated_products
from schemas.tables import (
    CURATED_PRODUCTS_SCHEMA,
    CURATION_LEDGER_SCHEMA,
    DUPLICATE_CLUSTERS_SCHEMA,
    IMAGE_QUALITY_SCHEMA,
    PRODUCT_IMAGES_SCHEMA,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
)

IDS = [f"r{i}" for i in range(8)]


def _frames():
    raw = pl.DataFrame({"row_index": list(range(8)), "row_id": IDS})
    rejected = pl.DataFrame(
        [
            {"row_index": 0, "row_id": "r0", "field": "title", "reason": "title is empty"},
            {"row_index": 0, "row_id": "r0", "field": "price", "reason": "negative"},
        ],
        schema=REJECTED_ROWS_SCHEMA,
    )
    image = {"url": "u", "format": "JPEG", "bytes": 1, "attempts": 1, "elapsed_s": 0.1}
    images = pl.DataFrame(
        [
            {**image, "row_id": "r1", "status": "download_failed", "reason": "http_status: 404"},
            {**image, "row_id": "r2", "status": "bad_image", "reason": "not_image: html"},
            *[
                {
                    **image,
                    "row_id": rid,
                    "status": "ok",
                    "sha256": f"s{rid}",
                    "path": f"p/{rid}",
                    "width": 10,
                    "height": 10,
                }
                for rid in ("r3", "r4", "r5", "r6")
            ],
        ],
        schema=PRODUCT_IMAGES_SCHEMA,
    )  # r7 validated but (bug) no download result
    cluster = {
        "cluster_size": 1,
        "hamming_to_canonical": 0,
        "is_placeholder": False,
        "label_conflict": False,
        "sha256": "s",
    }
    clusters = pl.DataFrame(
        [
            {
                **cluster,
                "row_id": "r3",
                "row_index": 3,
                "cluster_id": "r3",
                "canonical_row_id": "r3",
                "is_canonical": True,
                "match_kind": "canonical",
                "cluster_size": 2,
            },
            {
                **cluster,
                "row_id": "r4",
                "row_index": 4,
                "cluster_id": "r3",
                "canonical_row_id": "r3",
                "is_canonical": False,
                "match_kind": "near",
                "hamming_to_canonical": 3,
                "cluster_size": 2,
            },
            {
                **cluster,
                "row_id": "r5",
                "row_index": 5,
                "cluster_id": "r5",
                "canonical_row_id": "r5",
                "is_canonical": True,
                "match_kind": "canonical",
                "is_placeholder": True,
                "cluster_size": 9,
            },
            {
                **cluster,
                "row_id": "r6",
                "row_index": 6,
                "cluster_id": "r6",
                "canonical_row_id": "r6",
                "is_canonical": True,
                "match_kind": "canonical",
            },
        ],
        schema=DUPLICATE_CLUSTERS_SCHEMA,
    )
    return raw, rejected, images, clusters


def test_every_raw_row_gets_exactly_one_outcome_with_reason() -> None:
    raw, rejected, images, clusters = _frames()
    ledger = build_curation_ledger(raw, rejected, images, clusters)
    assert ledger.schema == pl.Schema(CURATION_LEDGER_SCHEMA)
    assert ledger["row_id"].to_list() == IDS
    outcome = dict(zip(ledger["row_id"], ledger["outcome"], strict=True))
    assert outcome == {
        "r0": "invalid",
        "r1": "download_failed",
        "r2": "bad_image",
        "r3": "curated",
        "r4": "duplicate",
        "r5": "bad_image",
        "r6": "curated",
        "r7": "download_failed",
    }
    reason = dict(zip(ledger["row_id"], ledger["reason"], strict=True))
    assert reason["r0"] == "price: negative; title: title is empty"
    assert reason["r1"] == "http_status: 404"
    assert reason["r4"].startswith("duplicate: near")
    assert reason["r5"].startswith("placeholder:")
    assert reason["r7"] == NO_IMAGE_RESULT  # an upstream gap is recorded, never dropped
    assert reason["r3"] is None
    dup_of = dict(zip(ledger["row_id"], ledger["duplicate_of"], strict=True))
    assert dup_of["r4"] == "r3" and dup_of["r3"] is None


def test_curated_products_are_the_curated_rows_with_images() -> None:
    raw, rejected, images, clusters = _frames()
    ledger = build_curation_ledger(raw, rejected, images, clusters)
    validated = pl.DataFrame(
        [
            {
                "row_index": i,
                "row_id": rid,
                "title": "t",
                "full_price": 1.0,
                "price": 1.0,
                "category3_code": "C",
            }
            for i, rid in enumerate(IDS)
            if rid != "r0"
        ],
        schema=VALIDATED_PRODUCTS_SCHEMA,
    )
    curated = select_curated_products(ledger, validated, images, clusters)
    assert curated.schema == pl.Schema(CURATED_PRODUCTS_SCHEMA)
    assert curated["row_id"].to_list() == ["r3", "r6"]
    assert curated["image_path"].to_list() == ["p/r3", "p/r6"]
    assert curated["cluster_id"].to_list() == ["r3", "r6"]


def _quality() -> pl.DataFrame:
    """r6's image is a 16x12 thumbnail that is also blurry; r3's is clean."""
    rows = [
        {"sha256": "sr3", "quality_flags": [], "quality_reasons": []},
        {
            "sha256": "sr6",
            "width": 16,
            "height": 12,
            "quality_flags": ["too_small", "blurry"],
            "quality_reasons": ["too_small (16x12 < 64 px)", "blurry (sharpness 0.010 < 0.12)"],
        },
    ]
    return pl.DataFrame(rows, schema=IMAGE_QUALITY_SCHEMA)


def test_quality_policy_moves_a_row_between_bad_image_and_curated() -> None:
    raw, rejected, images, clusters = _frames()
    by_default = build_curation_ledger(raw, rejected, images, clusters, _quality())
    r6 = by_default.filter(pl.col("row_id") == "r6").row(0, named=True)
    assert r6["outcome"] == "bad_image"
    assert r6["reason"] == "quality: too_small (16x12 < 64 px)"
    assert r6["quality_flags"] == ["too_small", "blurry"]
    assert by_default.filter(pl.col("row_id") == "r1")["quality_flags"][0] is None  # no image

    marked_only = build_curation_ledger(raw, rejected, images, clusters, _quality(), ())
    r6 = marked_only.filter(pl.col("row_id") == "r6").row(0, named=True)
    assert r6["outcome"] == "curated" and r6["reason"] is None
    validated = pl.DataFrame(
        [{"row_index": i, "row_id": rid} for i, rid in enumerate(IDS)],
        schema=VALIDATED_PRODUCTS_SCHEMA,
    )
    curated = select_curated_products(marked_only, validated, images, clusters)
    assert curated.filter(pl.col("row_id") == "r6")["quality_flags"].to_list() == [
        ["too_small", "blurry"]
    ]

    strict = build_curation_ledger(raw, rejected, images, clusters, _quality(), ["blurry"])
    r6 = strict.filter(pl.col("row_id") == "r6").row(0, named=True)
    assert r6["reason"] == "quality: blurry (sharpness 0.010 < 0.12)"
    with pytest.raises(ValueError, match="unknown quality flags"):
        build_curation_ledger(raw, rejected, images, clusters, _quality(), ["fuzzy"])
