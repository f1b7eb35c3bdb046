"""Group `images`: fetch every validated row's image, hash it, cluster duplicates."""

from dataclasses import replace

import dagster as dg
import fsspec
import polars as pl

from assets._common import counts_markdown, log_progress, table_output
from assets.resources import DownloadSettings, PipelineSettings
from curation.dedupe import duplicate_clusters as cluster_duplicates
from curation.dedupe_confirm import DEFAULT_RULE
from curation.download import DownloadPolicy, fetch_images
from curation.images.hashing import compute_image_hashes
from curation.images.normalised import attach_normalised
from curation.images.quality import DEFAULT_THRESHOLDS, compute_image_quality, flag_counts
from curation.images.sniff import DEFAULT_ALLOWED_FORMATS
from schemas.tables import IMAGE_STATUS_OK, PRODUCT_IMAGES_SCHEMA

GROUP = "images"
# Network-bound: a flaky network or a restarted bucket is worth a couple of step retries.
NETWORK_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


def previous_table(settings: PipelineSettings, name: str) -> pl.DataFrame | None:
    """The asset's last stored output, for row-level reuse (None on the first run)."""
    path = settings.path(f"{name}.parquet")
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        return None
    with fs.open(fs_path, "rb") as handle:
        return pl.read_parquet(handle)


# DownloadSettings fields that DownloadPolicy takes as they are (same name and unit); schemes
# and formats are comma-separated in the settings and sets in the policy.
POLICY_KNOBS = (
    "connect_timeout_s",
    "read_timeout_s",
    "deadline_s",
    "max_attempts",
    "max_bytes",
    "max_pixels",
)


def download_policy(settings: PipelineSettings, downloads: DownloadSettings) -> DownloadPolicy:
    """http(s) always; local files only for a catalogue the operator put on this machine."""
    schemes = {"http", "https"} | {s.strip() for s in downloads.extra_schemes.split(",") if s}
    uri = settings.catalogue_uri
    if settings.is_demo or "://" not in uri or uri.startswith("file://"):
        schemes.add("file")
    formats = {f.strip().lower() for f in downloads.allowed_formats.split(",") if f.strip()}
    knobs = {name: getattr(downloads, name) for name in POLICY_KNOBS}
    return DownloadPolicy(
        allowed_schemes=frozenset(schemes),
        allowed_formats=frozenset(formats) or DEFAULT_ALLOWED_FORMATS,
        allow_private_hosts=downloads.private_hosts_allowed,
        **knobs,
    )


@dg.asset(group_name=GROUP, code_version="2", kinds={"polars"}, retry_policy=NETWORK_RETRY)
def product_images(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    downloads: DownloadSettings,
    validated_products: pl.DataFrame,
) -> dg.Output:
    """One row per validated row: where its image came from, what happened, where it lives,
    and where its normalised picture (what training sees) lives."""
    previous = previous_table(pipeline, "product_images")
    fetched, stats = fetch_images(
        validated_products["imageurl"].to_list(),
        store_root=pipeline.data_dir,
        policy=download_policy(pipeline, downloads),
        workers=downloads.workers,
        previous=previous,
        progress=log_progress(context, "download"),
    )
    fetched = attach_normalised(
        fetched, pipeline.data_dir, previous=previous, progress=log_progress(context, "normalise")
    )
    frame = (
        validated_products.select("row_id", pl.col("imageurl").alias("url"))
        .join(fetched, on="url", how="left")
        .select(list(PRODUCT_IMAGES_SCHEMA))
    )
    context.log.info(f"images: {stats.as_dict()}")
    return table_output(
        frame,
        version_columns=[c for c in PRODUCT_IMAGES_SCHEMA if c not in ("attempts", "elapsed_s")],
        attempted=stats.attempted,
        reused=stats.reused,
        ok=stats.ok,
        failed=stats.failed,
        bad_image=stats.bad_image,
        failure_reasons=dg.MetadataValue.md(counts_markdown(stats.reasons, "reason")),
    )


@dg.asset(group_name=GROUP, code_version="2", kinds={"polars"})
def image_hashes(
    context: dg.AssetExecutionContext, pipeline: PipelineSettings, product_images: pl.DataFrame
) -> dg.Output:
    """phash + dhash of the whole picture, its content box and its centre, and each view's
    colour signature, per distinct stored image; computed once and reused across runs."""
    stored = product_images.filter(pl.col("status") == IMAGE_STATUS_OK).select("sha256", "path")
    previous = previous_table(pipeline, "image_hashes")
    hashes = compute_image_hashes(
        stored, previous=previous, progress=log_progress(context, "hashing")
    )
    reused = 0 if previous is None else hashes.join(previous, on="sha256", how="semi").height
    return table_output(hashes, reused=reused, computed=hashes.height - reused)


class ImageQualityConfig(dg.Config):
    """Where the size and shape flags start (the tonal and blur thresholds are the labelled
    set's, curation.images.quality)."""

    # Short side in px below which an image is `too_small`.
    min_short_side: int = DEFAULT_THRESHOLDS.min_short_side
    # Long side / short side above which an image is `odd_aspect_ratio` (a banner).
    max_aspect_ratio: float = DEFAULT_THRESHOLDS.max_aspect_ratio


@dg.asset(group_name=GROUP, code_version="1", kinds={"polars"})
def image_quality(
    context: dg.AssetExecutionContext,
    config: ImageQualityConfig,
    pipeline: PipelineSettings,
    product_images: pl.DataFrame,
) -> dg.Output:
    """Quality measurements and flags per distinct stored image (its normalised picture),
    measured once and reused across runs; flags follow today's thresholds."""
    stored = product_images.filter(pl.col("status") == IMAGE_STATUS_OK).select("sha256", "path")
    previous = previous_table(pipeline, "image_quality")
    thresholds = replace(
        DEFAULT_THRESHOLDS,
        min_short_side=config.min_short_side,
        max_aspect_ratio=config.max_aspect_ratio,
    )
    quality = compute_image_quality(
        stored, previous, thresholds, progress=log_progress(context, "image quality")
    )
    counts = flag_counts(quality["quality_flags"].to_list())
    return table_output(
        quality,
        flagged_images=int((quality["quality_flags"].list.len() > 0).sum()),
        flags=dg.MetadataValue.md(counts_markdown(counts, "flag")),
        **{f"flag/{name}": n for name, n in counts.items()},
    )


class DedupeConfig(dg.Config):
    """What counts as one product photo (the limits are the labelled set's,
    curation.dedupe_confirm.DEFAULT_RULE)."""

    # Colourways of one design (the same shot in another colour) are other products and stay
    # apart; on, the colour look is skipped and they join one cluster (one row per design).
    merge_colour_variants: bool = False


@dg.asset(group_name=GROUP, code_version="2", kinds={"polars"})
def duplicate_clusters(
    config: DedupeConfig,
    validated_products: pl.DataFrame,
    product_images: pl.DataFrame,
    image_hashes: pl.DataFrame,
) -> dg.Output:
    """Exact and near-duplicate clusters per row, with placeholder and label-conflict flags."""
    images = (
        product_images.filter(pl.col("status") == IMAGE_STATUS_OK)
        .select("row_id", "sha256", "width", "height")
        .join(
            validated_products.select(
                "row_id", "row_index", "title", "category3_code", "full_price"
            ),
            on="row_id",
        )
    )
    rule = replace(DEFAULT_RULE, merge_colour_variants=config.merge_colour_variants)
    clusters = cluster_duplicates(images, image_hashes, rule=rule)
    multi = clusters.filter(pl.col("cluster_size") > 1)
    return table_output(
        clusters,
        clusters_with_duplicates=multi["cluster_id"].n_unique(),
        duplicate_rows=clusters.filter(~pl.col("is_canonical")).height,
        placeholder_rows=int(clusters["is_placeholder"].sum()),
        label_conflict_rows=int(clusters["label_conflict"].sum()),
        merge_colour_variants=config.merge_colour_variants,
    )
