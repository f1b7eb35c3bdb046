"""Group `images`: fetch every validated row's image, hash it, cluster duplicates."""

from collections.abc import Iterator
from dataclasses import replace

import dagster as dg
import polars as pl

from assets._common import counts_markdown, log_progress, table_output
from assets._shards import (
    RESULT_OUT,
    TASKS_OUT,
    ShardResult,
    ShardTask,
    plan,
    run_shard,
    shard_metadata,
    shard_store,
    sharded_asset,
)
from assets.resources import DownloadSettings, PipelineSettings
from curation.dedupe import duplicate_clusters as cluster_duplicates
from curation.dedupe_confirm import DEFAULT_RULE
from curation.download import DownloadPolicy, fetch_images, fetch_stats
from curation.images.hashing import REUSABLE_HASHES, compute_image_hashes
from curation.images.normalised import attach_normalised
from curation.images.quality import (
    DEFAULT_THRESHOLDS,
    REUSABLE_MEASURES,
    compute_image_quality,
    flag_counts,
)
from curation.images.sniff import DEFAULT_ALLOWED_FORMATS
from curation.shards import SHARD_COLUMN, gather, unanswered, with_shards
from schemas.tables import (
    IMAGE_HASHES_SCHEMA,
    IMAGE_QUALITY_SCHEMA,
    IMAGE_STATUS_OK,
    PRODUCT_IMAGES_SCHEMA,
)

GROUP = "images"
# Network-bound: a flaky network or a restarted bucket is worth a couple of step retries.
NETWORK_RETRY = dg.RetryPolicy(max_retries=2, delay=10, backoff=dg.Backoff.EXPONENTIAL)


# DownloadSettings fields that DownloadPolicy takes as they are (same name and unit); schemes
# and formats are comma-separated in the settings and sets in the policy.
POLICY_KNOBS = (
    "connect_timeout_s",
    "read_timeout_s",
    "deadline_s",
    "max_attempts",
    "max_bytes",
    "max_pixels",
    "index_batch_size",
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


# One row per distinct image URL: what the downloader and the normaliser made of it.
FETCHED_SCHEMA = {c: t for c, t in PRODUCT_IMAGES_SCHEMA.items() if c != "row_id"}


class ProductImagesConfig(dg.Config):
    """When a shard is fetched again."""

    # Off (the default): a shard whose URLs all have a result keeps it, failures included, so a
    # refresh after a catalogue edit touches only the shards the edit reached. On: the shards
    # holding failed URLs run again and retry them (stored images are never fetched twice).
    retry_failed: bool = False


def _wanted_urls(validated_products: pl.DataFrame, n_shards: int) -> pl.DataFrame:
    urls = validated_products.select(pl.col("imageurl").alias("url")).unique(maintain_order=True)
    return with_shards(urls, "url", n_shards)


@dg.op(out=TASKS_OUT)
def plan_download_shards(
    context: dg.OpExecutionContext,
    config: ProductImagesConfig,
    pipeline: PipelineSettings,
    validated_products: pl.DataFrame,
) -> Iterator[dg.DynamicOutput[ShardTask]]:
    reusable = pl.col("status") == IMAGE_STATUS_OK if config.retry_failed else pl.lit(True)
    wanted = _wanted_urls(validated_products, pipeline.image_shards)
    yield from plan(context, shard_store(pipeline, "product_images"), wanted, "url", reusable)


@dg.op(out=RESULT_OUT, retry_policy=NETWORK_RETRY)
def download_shard(
    context: dg.OpExecutionContext,
    pipeline: PipelineSettings,
    downloads: DownloadSettings,
    task: ShardTask,
    validated_products: pl.DataFrame,
) -> ShardResult:
    """Fetches and normalises one shard's images."""

    def work(rows: pl.DataFrame, previous: pl.DataFrame | None) -> tuple[pl.DataFrame, dict]:
        fetched, stats = fetch_images(
            rows["url"].to_list(),
            store_root=pipeline.data_dir,
            policy=download_policy(pipeline, downloads),
            workers=downloads.workers,
            previous=previous,
            progress=log_progress(context, f"download, shard {task.shard}"),
        )
        fetched = attach_normalised(
            fetched,
            pipeline.data_dir,
            previous=previous,
            progress=log_progress(context, f"normalise, shard {task.shard}"),
        )
        context.log.info(f"images, shard {task.shard}: {stats.as_dict()}")
        counts = {"computed": stats.attempted, "attempted": stats.attempted}
        return fetched, {**counts, "reused": stats.reused, "ok": stats.ok}

    wanted = _wanted_urls(validated_products, task.n_shards)
    return run_shard(pipeline, "product_images", task, wanted, "url", work)


@dg.op
def collect_product_images(
    pipeline: PipelineSettings, validated_products: pl.DataFrame, shards: list[ShardResult]
) -> dg.Output:
    store = shard_store(pipeline, "product_images")
    wanted = _wanted_urls(validated_products, store.n_shards)
    fetched = gather(wanted, store, "url", FETCHED_SCHEMA)
    frame = (
        validated_products.select("row_id", pl.col("imageurl").alias("url"))
        .join(fetched, on="url", how="left")
        .select(list(PRODUCT_IMAGES_SCHEMA))
    )
    attempted = sum(r.counts["attempted"] for r in shards)
    newly_stored = sum(r.counts["ok"] - r.counts["reused"] for r in shards)
    stats = fetch_stats(fetched, attempted=attempted, reused=0)
    return table_output(
        frame,
        version_columns=[c for c in PRODUCT_IMAGES_SCHEMA if c not in ("attempted", "elapsed_s")],
        attempted=attempted,
        reused=stats.ok - newly_stored,
        ok=stats.ok,
        failed=stats.failed,
        bad_image=stats.bad_image,
        failure_reasons=dg.MetadataValue.md(counts_markdown(stats.reasons, "reason")),
        **shard_metadata(store, wanted, shards),
    )


@sharded_asset(GROUP, "3", ProductImagesConfig, "plan_download_shards")
def product_images(validated_products: pl.DataFrame) -> pl.DataFrame:
    """One row per validated row: where its image came from, what happened, where it lives,
    and where its normalised picture (what training sees) lives. Downloaded in shards of the
    image URLs (PIPELINE_IMAGE_SHARDS), each a step of its own."""
    tasks = plan_download_shards(validated_products)
    results = tasks.map(lambda task: download_shard(task, validated_products))
    return collect_product_images(validated_products, results.collect())


def _wanted_images(product_images: pl.DataFrame, n_shards: int) -> pl.DataFrame:
    stored = (
        product_images.filter(pl.col("status") == IMAGE_STATUS_OK)
        .select("sha256", "path")
        .unique(subset="sha256", keep="first", maintain_order=True)
    )
    return with_shards(stored, "sha256", n_shards)


def _computed(rows: pl.DataFrame, previous: pl.DataFrame | None, reusable: pl.Expr) -> int:
    return unanswered(rows.select("sha256"), previous, "sha256", reusable)


@dg.op(out=TASKS_OUT)
def plan_hash_shards(
    context: dg.OpExecutionContext, pipeline: PipelineSettings, product_images: pl.DataFrame
) -> Iterator[dg.DynamicOutput[ShardTask]]:
    wanted = _wanted_images(product_images, pipeline.image_shards)
    store = shard_store(pipeline, "image_hashes")
    yield from plan(context, store, wanted, "sha256", REUSABLE_HASHES)


@dg.op(out=RESULT_OUT)
def hash_shard(
    context: dg.OpExecutionContext,
    pipeline: PipelineSettings,
    task: ShardTask,
    product_images: pl.DataFrame,
) -> ShardResult:
    def work(rows: pl.DataFrame, previous: pl.DataFrame | None) -> tuple[pl.DataFrame, dict]:
        progress = log_progress(context, f"hashing, shard {task.shard}")
        hashes = compute_image_hashes(rows, previous=previous, progress=progress)
        return hashes, {"computed": _computed(rows, previous, REUSABLE_HASHES)}

    wanted = _wanted_images(product_images, task.n_shards)
    return run_shard(pipeline, "image_hashes", task, wanted, "sha256", work)


@dg.op
def collect_image_hashes(
    pipeline: PipelineSettings, product_images: pl.DataFrame, shards: list[ShardResult]
) -> dg.Output:
    store = shard_store(pipeline, "image_hashes")
    wanted = _wanted_images(product_images, store.n_shards)
    hashes = gather(wanted, store, "sha256", IMAGE_HASHES_SCHEMA).sort("sha256")
    computed = sum(r.computed for r in shards)
    return table_output(
        hashes,
        reused=hashes.height - computed,
        computed=computed,
        **shard_metadata(store, wanted, shards),
    )


@sharded_asset(GROUP, "3")
def image_hashes(product_images: pl.DataFrame) -> pl.DataFrame:
    """phash + dhash of the whole picture, its content box and its centre, and each view's
    colour signature, per distinct stored image; computed once, in shards of the sha256s."""
    tasks = plan_hash_shards(product_images)
    results = tasks.map(lambda task: hash_shard(task, product_images))
    return collect_image_hashes(product_images, results.collect())


class ImageQualityConfig(dg.Config):
    """Where the size and shape flags start (the tonal and blur thresholds are the labelled
    set's, curation.images.quality)."""

    # Short side in px below which an image is `too_small`.
    min_short_side: int = DEFAULT_THRESHOLDS.min_short_side
    # Long side / short side above which an image is `odd_aspect_ratio` (a banner).
    max_aspect_ratio: float = DEFAULT_THRESHOLDS.max_aspect_ratio


@dg.op(out=TASKS_OUT)
def plan_quality_shards(
    context: dg.OpExecutionContext, pipeline: PipelineSettings, product_images: pl.DataFrame
) -> Iterator[dg.DynamicOutput[ShardTask]]:
    wanted = _wanted_images(product_images, pipeline.image_shards)
    store = shard_store(pipeline, "image_quality")
    yield from plan(context, store, wanted, "sha256", REUSABLE_MEASURES)


@dg.op(out=RESULT_OUT)
def measure_shard(
    context: dg.OpExecutionContext,
    pipeline: PipelineSettings,
    task: ShardTask,
    product_images: pl.DataFrame,
) -> ShardResult:
    def work(rows: pl.DataFrame, previous: pl.DataFrame | None) -> tuple[pl.DataFrame, dict]:
        progress = log_progress(context, f"image quality, shard {task.shard}")
        quality = compute_image_quality(rows, previous, progress=progress)
        return quality, {"computed": _computed(rows, previous, REUSABLE_MEASURES)}

    wanted = _wanted_images(product_images, task.n_shards)
    return run_shard(pipeline, "image_quality", task, wanted, "sha256", work)


@dg.op
def collect_image_quality(
    config: ImageQualityConfig,
    pipeline: PipelineSettings,
    product_images: pl.DataFrame,
    shards: list[ShardResult],
) -> dg.Output:
    """The shards' measurements, flagged by today's thresholds (no file is opened here)."""
    store = shard_store(pipeline, "image_quality")
    wanted = _wanted_images(product_images, store.n_shards)
    measured = gather(wanted, store, "sha256", IMAGE_QUALITY_SCHEMA)
    thresholds = replace(
        DEFAULT_THRESHOLDS,
        min_short_side=config.min_short_side,
        max_aspect_ratio=config.max_aspect_ratio,
    )
    quality = compute_image_quality(wanted.drop(SHARD_COLUMN), measured, thresholds)
    counts = flag_counts(quality["quality_flags"].to_list())
    computed = sum(r.computed for r in shards)
    return table_output(
        quality,
        reused=quality.height - computed,
        computed=computed,
        flagged_images=int((quality["quality_flags"].list.len() > 0).sum()),
        flags=dg.MetadataValue.md(counts_markdown(counts, "flag")),
        **{f"flag/{name}": n for name, n in counts.items()},
        **shard_metadata(store, wanted, shards),
    )


@sharded_asset(GROUP, "2", ImageQualityConfig, "collect_image_quality")
def image_quality(product_images: pl.DataFrame) -> pl.DataFrame:
    """Quality measurements and flags per distinct stored image (its normalised picture),
    measured once, in shards of the sha256s; flags follow today's thresholds."""
    tasks = plan_quality_shards(product_images)
    results = tasks.map(lambda task: measure_shard(task, product_images))
    return collect_image_quality(product_images, results.collect())


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
