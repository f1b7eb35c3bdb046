"""Polars schemas of every table asset: the column contract between curation, assets and tests.

Other tools read these Parquet files (docs/design.md, "Files other tools read"), so a change here
is a breaking change.
"""

from __future__ import annotations

import polars as pl

# Columns of the DBQ catalogue, in source order.
CATALOGUE_COLUMNS: tuple[str, ...] = (
    "website_name",
    "competence_date",
    "country_code",
    "currency_code",
    "brand",
    "category1_code",
    "category2_code",
    "category3_code",
    "product_code",
    "title",
    "itemurl",
    "imageurl",
    "full_price",
    "price",
    "full_price_eur",
    "price_eur",
    "flg_discount",
)
# What a product is labelled with: copied onto each of its variants and exported with each image.
LABEL_COLUMNS: tuple[str, ...] = (
    "title",
    "category1_code",
    "category2_code",
    "category3_code",
    "full_price",
)

# Without these a row cannot become a training sample; the rest are optional (filled with null).
REQUIRED_CATALOGUE_COLUMNS: tuple[str, ...] = (
    "category1_code",
    "category2_code",
    "category3_code",
    "product_code",
    "title",
    "imageurl",
    "full_price",
    "price",
)

# raw_catalogue: every source column kept as text (nothing is coerced before validation),
# plus the row's position in the source and a stable content hash.
RAW_CATALOGUE_SCHEMA: dict[str, pl.DataType] = {
    "row_index": pl.Int64(),
    "row_id": pl.String(),
    **{name: pl.String() for name in CATALOGUE_COLUMNS},
}

VALIDATED_PRODUCTS_SCHEMA: dict[str, pl.DataType] = {
    "row_index": pl.Int64(),
    "row_id": pl.String(),
    "website_name": pl.String(),
    "competence_date": pl.String(),
    "country_code": pl.String(),
    "currency_code": pl.String(),
    "brand": pl.String(),
    "category1_code": pl.String(),
    "category2_code": pl.String(),
    "category3_code": pl.String(),
    "product_code": pl.String(),
    "title": pl.String(),
    "itemurl": pl.String(),
    "imageurl": pl.String(),
    "full_price": pl.Float64(),
    "price": pl.Float64(),
    "full_price_eur": pl.Float64(),
    "price_eur": pl.Float64(),
    "flg_discount": pl.Boolean(),
}

REJECTED_ROWS_SCHEMA: dict[str, pl.DataType] = {
    "row_index": pl.Int64(),
    "row_id": pl.String(),
    "field": pl.String(),
    "reason": pl.String(),
}

# product_images.status values; the ledger maps them onto outcomes.
IMAGE_STATUS_OK = "ok"
IMAGE_STATUS_DOWNLOAD_FAILED = "download_failed"
IMAGE_STATUS_BAD_IMAGE = "bad_image"

# Result of fetching one URL (curation.download); product_images adds row_id in front.
IMAGE_FETCH_SCHEMA: dict[str, pl.DataType] = {
    "url": pl.String(),
    "status": pl.String(),
    "reason": pl.String(),
    "sha256": pl.String(),  # null exactly when no image was stored
    "path": pl.String(),
    "format": pl.String(),
    "width": pl.Int64(),
    "height": pl.Int64(),
    "bytes": pl.Int64(),
    "attempts": pl.Int64(),
    "elapsed_s": pl.Float64(),
}

# product_images adds the normalised picture's address (curation.images.normalised): the pixels
# every later step and the exported dataset use. It equals sha256/path where normalising
# changes nothing (a plain upright RGB JPEG); null exactly when no usable image was stored.
PRODUCT_IMAGES_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    **IMAGE_FETCH_SCHEMA,
    "normalised_sha256": pl.String(),
    "normalised_path": pl.String(),
}

IMAGE_HASHES_SCHEMA: dict[str, pl.DataType] = {
    "sha256": pl.String(),
    "phash": pl.UInt64(),  # whole picture
    "dhash": pl.UInt64(),
    # curation.images.views: the content box (uniform margins trimmed) and the centre view (null
    # when flat); each view's colour signature is 13 bytes: its mean CIELAB chroma, then a
    # 12-bin hue histogram weighted by chroma.
    "box_phash": pl.UInt64(),
    "box_dhash": pl.UInt64(),
    "centre_phash": pl.UInt64(),
    "centre_dhash": pl.UInt64(),
    "colour": pl.Binary(),
    "box_colour": pl.Binary(),
    "centre_colour": pl.Binary(),
    # curation.images.hashing.HASH_VERSION the row was computed with: others are recomputed.
    "hash_version": pl.Int32(),
}

# Image-quality flags (curation.images.quality), in the order reasons list them.
QUALITY_FLAGS: tuple[str, ...] = (
    "too_small",
    "odd_aspect_ratio",
    "low_information",
    "too_dark",
    "too_light",
    "blurry",
    "grayscale",
)

# image_quality: per stored sha256, measurements of its normalised picture (cached across runs)
# and the flags today's thresholds give them, each with its reason ("too_small (16x12 < 64 px)").
IMAGE_QUALITY_SCHEMA: dict[str, pl.DataType] = {
    "sha256": pl.String(),
    "width": pl.Int64(),  # upright (after EXIF orientation)
    "height": pl.Int64(),
    "luma_std": pl.Float64(),
    "luma_p05": pl.Float64(),
    "luma_p95": pl.Float64(),
    "sharpness": pl.Float64(),  # Laplacian std / luminance std, at <= 256 px
    "chroma_p99": pl.Float64(),
    "quality_flags": pl.List(pl.String()),
    "quality_reasons": pl.List(pl.String()),
}

DUPLICATE_CLUSTERS_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "row_index": pl.Int64(),
    "sha256": pl.String(),
    "cluster_id": pl.String(),  # the canonical member's row_id: stable and readable
    "cluster_size": pl.Int64(),
    "canonical_row_id": pl.String(),
    "is_canonical": pl.Boolean(),
    "hamming_to_canonical": pl.Int64(),  # phash distance; 0 for exact copies
    "match_kind": pl.String(),  # "canonical" | "exact" | "near"
    "is_placeholder": pl.Boolean(),  # image shared by many rows with unrelated titles
    "label_conflict": pl.Boolean(),  # same image, different category or price in the cluster
}

# Curation ledger outcomes: every raw row gets exactly one.
OUTCOME_CURATED = "curated"
OUTCOME_INVALID = "invalid"
OUTCOME_DOWNLOAD_FAILED = "download_failed"
OUTCOME_BAD_IMAGE = "bad_image"
OUTCOME_DUPLICATE = "duplicate"
LEDGER_OUTCOMES: tuple[str, ...] = (
    OUTCOME_CURATED,
    OUTCOME_INVALID,
    OUTCOME_DOWNLOAD_FAILED,
    OUTCOME_BAD_IMAGE,
    OUTCOME_DUPLICATE,
)

CURATION_LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "row_index": pl.Int64(),
    "row_id": pl.String(),
    "outcome": pl.String(),
    "reason": pl.String(),
    "duplicate_of": pl.String(),  # canonical row's row_id, for outcome == duplicate
    # the stored image's quality flags (null: no image was stored for the row)
    "quality_flags": pl.List(pl.String()),
}

# curated_products: validated columns plus where the image lives and its cluster.
CURATED_PRODUCTS_SCHEMA: dict[str, pl.DataType] = {
    **VALIDATED_PRODUCTS_SCHEMA,
    "sha256": pl.String(),
    "image_path": pl.String(),
    "normalised_sha256": pl.String(),
    "normalised_path": pl.String(),
    "width": pl.Int64(),
    "height": pl.Int64(),
    "cluster_id": pl.String(),
    "quality_flags": pl.List(pl.String()),  # marks only: excluding flags made the row bad_image
}

SPLIT_NAMES: tuple[str, ...] = ("train", "validation", "test")

DATASET_SPLITS_SCHEMA: dict[str, pl.DataType] = {
    **CURATED_PRODUCTS_SCHEMA,
    "group_key": pl.String(),  # rows sharing it (cluster, normalised title) share a split
    "stratum": pl.String(),  # category3_code, or category2_code where too small to split
    "split": pl.String(),
}

SYNTHETIC_VARIANTS_SCHEMA: dict[str, pl.DataType] = {
    "variant_id": pl.String(),
    "parent_row_id": pl.String(),
    "variant_kind": pl.String(),  # e.g. "image:crop", "prompt:paraphrase", "oversample"
    "sha256": pl.String(),
    "image_path": pl.String(),
    # the pixels the export embeds: the variant's own (already normalised) image, or for a
    # prompt-only variant its parent's normalised picture.
    "normalised_sha256": pl.String(),
    "normalised_path": pl.String(),
    "question": pl.String(),
    "title": pl.String(),
    "category1_code": pl.String(),
    "category2_code": pl.String(),
    "category3_code": pl.String(),
    "full_price": pl.Float64(),
}


def empty_frame(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A zero-row frame with the given schema (an empty catalogue still yields typed tables)."""
    return pl.DataFrame(schema=schema)
