"""Group `dataset`: leak-free splits, train-only synthetic variants, the HF DatasetDict."""

import dagster as dg
import polars as pl

from assets._common import (
    counts_markdown,
    frame_markdown,
    log_progress,
    no_rows_check,
    previous_table,
    table_output,
)
from assets.resources import PipelineSettings
from assets.values_io import VALUES_IO_MANAGER_KEY
from curation.catalogue import frame_fingerprint
from curation.export import dataset_card, log_dataset_artifact
from curation.snapshots import publish_snapshot
from curation.splits import (
    SPLIT_RULE_DOC,
    assign_splits,
    groups_straddling_splits,
    split_counts_table,
    split_fractions,
    split_proportion_errors,
    strata_missing_splits,
)
from curation.variants import make_synthetic_variants, variant_kind_counts
from schemas.values import DatasetSnapshot

GROUP = "dataset"
# W&B artifact of the dataset snapshots; lora_adapter asks for `{DATASET_ARTIFACT}:{fingerprint}`.
DATASET_ARTIFACT = "catalogue-dataset"


class SplitConfig(dg.Config):
    """Split fractions and the smallest category3 stratum kept as its own stratum."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    min_stratum_rows: int = 20

    @property
    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)


class VariantConfig(dg.Config):
    seed: int = 0
    image_variants_per_row: int = 1
    prompt_variants_per_row: int = 1
    # Rare categories get extra image variants until they have this many train samples.
    min_rows_per_category: int = 40


@dg.asset(group_name=GROUP, code_version="1", kinds={"polars"})
def dataset_splits(config: SplitConfig, curated_products: pl.DataFrame) -> dg.Output:
    """train / validation / test, stratified by category, duplicate clusters and colour
    variants kept together, assignment by hash so rows keep their split as the catalogue grows."""
    splits = assign_splits(
        curated_products, fractions=config.fractions, min_stratum_rows=config.min_stratum_rows
    )
    shares = split_fractions(splits)
    return table_output(
        splits,
        split_rule=dg.MetadataValue.md(f"```text\n{SPLIT_RULE_DOC.strip()}\n```"),
        counts_by_category=dg.MetadataValue.md(frame_markdown(split_counts_table(splits), 200)),
        **{f"split/{name}": round(share, 4) for name, share in shares.items()},
    )


@dg.asset_check(asset="dataset_splits", blocking=True)
def no_group_straddles_splits(dataset_splits: pl.DataFrame) -> dg.AssetCheckResult:
    """Duplicate clusters and colour variants (same normalised title) never cross splits."""
    return no_rows_check(groups_straddling_splits(dataset_splits), "straddling_groups")


@dg.asset_check(asset="dataset_splits", blocking=True)
def every_split_has_every_category(dataset_splits: pl.DataFrame) -> dg.AssetCheckResult:
    """Each stratum with enough rows and groups appears in train, validation and test."""
    return no_rows_check(strata_missing_splits(dataset_splits), "strata_missing_a_split")


@dg.asset_check(asset="dataset_splits", blocking=True)
def split_proportions_within_tolerance(
    config: SplitConfig, dataset_splits: pl.DataFrame
) -> dg.AssetCheckResult:
    """Shares within 4 standard deviations of the hash-assignment noise for these group sizes."""
    errors = split_proportion_errors(dataset_splits, config.fractions)
    return dg.AssetCheckResult(
        passed=not errors,
        metadata={"shares": str(split_fractions(dataset_splits)), "errors": str(errors)},
    )


@dg.asset(group_name=GROUP, code_version="1", kinds={"polars"})
def synthetic_variants(
    context: dg.AssetExecutionContext,
    config: VariantConfig,
    pipeline: PipelineSettings,
    dataset_splits: pl.DataFrame,
) -> dg.Output:
    """Extra train-only samples (image augmentations, prompt paraphrases, rare-class top-up)."""
    variants = make_synthetic_variants(
        dataset_splits,
        store_root=pipeline.data_dir,
        seed=config.seed,
        image_variants_per_row=config.image_variants_per_row,
        prompt_variants_per_row=config.prompt_variants_per_row,
        min_rows_per_category=config.min_rows_per_category,
        previous=previous_table(pipeline, "synthetic_variants"),
        progress=log_progress(context, "variants", unit="train rows"),
    )
    kinds = variant_kind_counts(variants)
    return table_output(variants, variant_kinds=dg.MetadataValue.md(counts_markdown(kinds, "kind")))


@dg.asset(
    group_name=GROUP,
    code_version="2",
    kinds={"huggingface"},
    io_manager_key=VALUES_IO_MANAGER_KEY,
)
def training_dataset(
    context: dg.AssetExecutionContext,
    pipeline: PipelineSettings,
    raw_catalogue: pl.DataFrame,
    curation_ledger: pl.DataFrame,
    dataset_splits: pl.DataFrame,
    synthetic_variants: pl.DataFrame,
) -> dg.Output[DatasetSnapshot]:
    """An immutable `datasets.DatasetDict` snapshot at {PIPELINE_DATA_DIR}/hf_dataset/{fingerprint}/
    (LATEST points at the newest), and the value lora_adapter trains on: where it is, what it
    holds and the data versions it was built from."""
    # Same hash as table_output's, so each value equals that input's Dagster data version.
    upstream = {
        "raw_catalogue": frame_fingerprint(raw_catalogue),
        "curation_ledger": frame_fingerprint(curation_ledger),
        "dataset_splits": frame_fingerprint(dataset_splits),
        "synthetic_variants": frame_fingerprint(synthetic_variants),
    }
    content = {k: upstream[k] for k in ("dataset_splits", "synthetic_variants")}
    info = publish_snapshot(
        pipeline.path("hf_dataset"),
        dataset_splits,
        synthetic_variants,
        curation_ledger,
        lambda: dataset_card(dataset_splits, synthetic_variants, content, SPLIT_RULE_DOC),
    )
    snapshot = DatasetSnapshot(
        uri=info.uri,
        fingerprint=info.fingerprint,
        split_sizes=info.split_sizes,
        rows_uri=info.rows_uri,
        ledger_uri=info.ledger_uri,
        catalogue_uri=pipeline.resolved_catalogue_uri(),
        catalogue_data_version=upstream["raw_catalogue"],
        upstream_data_versions=upstream,
    )
    artifact = log_dataset_artifact(info.uri, DATASET_ARTIFACT, upstream, alias=info.fingerprint)
    context.log.info(f"{'reused' if info.reused else 'saved'} {info.split_sizes} at {info.uri}")
    return dg.Output(
        snapshot,
        data_version=dg.DataVersion(info.fingerprint),
        metadata={
            "path": dg.MetadataValue.path(info.uri),
            "snapshot": info.fingerprint,
            "reused_snapshot": info.reused,
            "catalogue_data_version": snapshot.catalogue_data_version,
            **{f"rows/{name}": n for name, n in info.split_sizes.items()},
            "wandb_artifact": artifact or "(W&B disabled)",
        },
    )
