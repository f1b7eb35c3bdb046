"""The curation ledger: exactly one outcome per raw row, with the reason, nothing dropped.

Precedence (first match wins): invalid > download_failed > bad_image (undecodable, placeholder,
or an excluding quality flag) > duplicate > curated. A placeholder beats duplicate because the
image is not the product at all, so no copy of it should train; a duplicate's `duplicate_of` is
the canonical row's row_id. Every row with a stored image carries its `quality_flags`; the
policy (`exclude_flags`) says which of them make the row `bad_image` (reason `quality: …`) and
which only mark it.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from schemas.tables import (
    CURATED_PRODUCTS_SCHEMA,
    CURATION_LEDGER_SCHEMA,
    IMAGE_QUALITY_SCHEMA,
    IMAGE_STATUS_BAD_IMAGE,
    IMAGE_STATUS_DOWNLOAD_FAILED,
    IMAGE_STATUS_OK,
    OUTCOME_BAD_IMAGE,
    OUTCOME_CURATED,
    OUTCOME_DOWNLOAD_FAILED,
    OUTCOME_DUPLICATE,
    OUTCOME_INVALID,
    QUALITY_FLAGS,
    empty_frame,
)

NO_IMAGE_RESULT = "missing_result: no download result for this row"

# Flags that make a row bad_image by default: a thumbnail too small to show the product and a
# blank picture teach nothing; dark, light, blurry, grey or odd-shaped shots are still the
# product, so they are marked for review, not dropped.
DEFAULT_EXCLUDED_FLAGS: tuple[str, ...] = ("too_small", "low_information")


def check_quality_policy(exclude_flags: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(exclude_flags) - set(QUALITY_FLAGS))
    if unknown:
        raise ValueError(f"unknown quality flags {unknown}; known: {list(QUALITY_FLAGS)}")
    return tuple(flag for flag in QUALITY_FLAGS if flag in set(exclude_flags))


def _quality_columns(images: pl.DataFrame, quality: pl.DataFrame | None) -> pl.DataFrame:
    """row_id -> quality_flags and quality_reasons of its stored image (null: no image)."""
    rows = images.select("row_id", "sha256", "status")
    if quality is None:
        quality = empty_frame(IMAGE_QUALITY_SCHEMA)
    joined = rows.join(
        quality.select("sha256", "quality_flags", "quality_reasons").unique("sha256"),
        on="sha256",
        how="left",
    )
    stored = pl.col("status") == IMAGE_STATUS_OK
    return joined.select(
        "row_id",
        quality_flags=pl.when(stored).then(pl.col("quality_flags")),
        quality_reasons=pl.when(stored).then(pl.col("quality_reasons")),
    )


def _excluded_reason(exclude: tuple[str, ...]) -> pl.Expr:
    """`quality: too_small (16x12 < 64 px); …` from the excluding flags' reasons, else null."""
    if not exclude:
        return pl.lit(None, dtype=pl.String)
    pattern = "^(" + "|".join(exclude) + r") \("
    picked = pl.col("quality_reasons").list.eval(
        pl.element().filter(pl.element().str.contains(pattern))
    )
    return pl.when(picked.list.len() > 0).then(pl.lit("quality: ") + picked.list.join("; "))


def _rejection_reasons(rejected: pl.DataFrame) -> pl.DataFrame:
    """One line per rejected row: every failed field, in a stable order."""
    return (
        rejected.sort("row_index", "field", "reason")
        .with_columns((pl.col("field") + ": " + pl.col("reason")).alias("problem"))
        .group_by("row_id", maintain_order=True)
        .agg(pl.col("problem").str.join("; ").alias("invalid_reason"))
    )


def _cluster_columns(clusters: pl.DataFrame) -> pl.DataFrame:
    return clusters.select(
        "row_id",
        "cluster_id",
        "cluster_size",
        "canonical_row_id",
        "is_canonical",
        "match_kind",
        "hamming_to_canonical",
        "is_placeholder",
    )


def _evidence(
    raw: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
    quality: pl.DataFrame | None,
    exclude: tuple[str, ...],
) -> pl.DataFrame:
    """One row per raw row with everything its outcome is decided from: the rejection reason,
    the download result, the cluster and the quality flags."""
    return (
        raw.select("row_index", "row_id")
        .join(_rejection_reasons(rejected), on="row_id", how="left")
        .join(images.select("row_id", "status", "reason"), on="row_id", how="left")
        .join(_cluster_columns(clusters), on="row_id", how="left")
        .join(_quality_columns(images, quality), on="row_id", how="left")
        .with_columns(quality_excluded=_excluded_reason(exclude))
    )


def build_curation_ledger(
    raw: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
    quality: pl.DataFrame | None = None,
    exclude_flags: Sequence[str] = DEFAULT_EXCLUDED_FLAGS,
) -> pl.DataFrame:
    """raw_catalogue + rejected_rows + product_images + duplicate_clusters + image_quality ->
    ledger; `exclude_flags` are the quality flags that make a row bad_image."""
    exclude = check_quality_policy(exclude_flags)
    joined = _evidence(raw, rejected, images, clusters, quality, exclude)
    invalid = pl.col("invalid_reason").is_not_null()
    failed = pl.col("status") == IMAGE_STATUS_DOWNLOAD_FAILED
    bad = pl.col("status") == IMAGE_STATUS_BAD_IMAGE
    placeholder = pl.col("is_placeholder").fill_null(False)
    low_quality = pl.col("quality_excluded").is_not_null()
    duplicate = pl.col("is_canonical").not_().fill_null(False)
    # A validated row with no download result, or an ok image missing from the clusters, is a
    # bug upstream; it is recorded loudly, never silently curated or dropped.
    unexplained = pl.col("status").is_null() | (
        (pl.col("status") == IMAGE_STATUS_OK) & pl.col("cluster_id").is_null()
    )
    outcome = (
        pl.when(invalid).then(pl.lit(OUTCOME_INVALID))
        .when(failed | unexplained).then(pl.lit(OUTCOME_DOWNLOAD_FAILED))
        .when(bad | placeholder | low_quality).then(pl.lit(OUTCOME_BAD_IMAGE))
        .when(duplicate).then(pl.lit(OUTCOME_DUPLICATE))
        .otherwise(pl.lit(OUTCOME_CURATED))
    )  # fmt: skip
    reason = (
        pl.when(invalid).then(pl.col("invalid_reason"))
        .when(failed | bad).then(pl.col("reason"))
        .when(unexplained).then(pl.lit(NO_IMAGE_RESULT))
        .when(placeholder).then(
            pl.format("placeholder: one image shared by {} unrelated rows", pl.col("cluster_size"))
        )
        .when(low_quality).then(pl.col("quality_excluded"))
        .when(duplicate).then(
            pl.format("duplicate: {} (phash distance {})", pl.col("match_kind"),
                      pl.col("hamming_to_canonical"))
        )
        .otherwise(pl.lit(None, dtype=pl.String))
    )  # fmt: skip
    return (
        joined.with_columns(outcome.alias("outcome"), reason.alias("reason_out"))
        .with_columns(
            pl.when(pl.col("outcome") == OUTCOME_DUPLICATE)
            .then(pl.col("canonical_row_id"))
            .otherwise(pl.lit(None, dtype=pl.String))
            .alias("duplicate_of")
        )
        .select(
            "row_index",
            "row_id",
            "outcome",
            pl.col("reason_out").alias("reason"),
            "duplicate_of",
            "quality_flags",
        )
        .sort("row_index")
        .cast(CURATION_LEDGER_SCHEMA)  # type: ignore[arg-type]
    )


def select_curated_products(
    ledger: pl.DataFrame,
    validated: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
) -> pl.DataFrame:
    """Validated rows whose ledger outcome is `curated`, with their stored image and flags."""
    curated_ids = ledger.filter(pl.col("outcome") == OUTCOME_CURATED).select(
        "row_id", "quality_flags"
    )
    return (
        validated.join(curated_ids, on="row_id", how="inner")
        .join(
            images.select(
                "row_id",
                "sha256",
                pl.col("path").alias("image_path"),
                "normalised_sha256",
                "normalised_path",
                "width",
                "height",
            ),
            on="row_id",
            how="left",
        )
        .join(clusters.select("row_id", "cluster_id"), on="row_id", how="left")
        .sort("row_index")
        .select(list(CURATED_PRODUCTS_SCHEMA))
    )


def row_flag_counts(frame: pl.DataFrame) -> dict[str, int]:
    """quality flag -> rows of `frame` (a ledger or curated_products) carrying it."""
    counts = dict.fromkeys(QUALITY_FLAGS, 0)
    exploded = frame.select(pl.col("quality_flags").explode().drop_nulls())
    counts.update(dict(exploded.group_by("quality_flags").len().rows()))
    return counts


def ledger_counts(ledger: pl.DataFrame) -> dict[str, int]:
    return dict(ledger.group_by("outcome").len().sort("outcome").rows())
