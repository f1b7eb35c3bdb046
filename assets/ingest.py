"""Group `ingest`: load the catalogue, validate every row, keep the rejects with reasons."""

import dagster as dg
import polars as pl

from assets._common import counts_markdown, one_pass_tables, table_output
from assets.resources import PipelineSettings
from curation.catalogue import (
    CatalogueError,
    load_raw_catalogue,
    source_fingerprint,
)
from curation.validation import validate_catalogue

GROUP = "ingest"


@dg.observable_source_asset(
    group_name=GROUP,
    description="The catalogue at CATALOGUE_URI.",
    # The automation sensor's look at the file; each observation is one short run.
    automation_condition=dg.AutomationCondition.cron_tick_passed("*/5 * * * *"),
)
def catalogue_source(pipeline: PipelineSettings) -> dg.DataVersion:
    """Observing it records a content fingerprint; a changed file makes raw_catalogue stale."""
    return dg.DataVersion(source_fingerprint(pipeline.resolved_catalogue_uri()))


@dg.asset(group_name=GROUP, code_version="1", kinds={"polars"}, deps=[catalogue_source])
def raw_catalogue(context: dg.AssetExecutionContext, pipeline: PipelineSettings) -> dg.Output:
    """The catalogue as loaded (all columns as text) plus `row_index` and a content `row_id`."""
    uri = pipeline.resolved_catalogue_uri()
    try:
        frame = load_raw_catalogue(uri)
    except CatalogueError as error:
        # A bad source is the user's to fix: show the message, not a traceback.
        raise dg.Failure(description=str(error), allow_retries=False) from error
    context.log.info(f"loaded {frame.height} rows from {uri}")
    return table_output(frame, catalogue_uri=dg.MetadataValue.text(uri))


@one_pass_tables(GROUP, "1", "validated_products", "rejected_rows")
def validated_products(context: dg.AssetExecutionContext, raw_catalogue: pl.DataFrame):
    """Rows that pass the pydantic schema (normalised), and one reject row per problem."""
    validated, rejected = validate_catalogue(raw_catalogue)
    by_field = dict(rejected.group_by("field").len().rows())
    selected = context.selected_output_names
    if "validated_products" in selected:
        yield table_output(
            validated,
            output_name="validated_products",
            rejected_row_count=dg.MetadataValue.int(rejected["row_id"].n_unique()),
        )
    if "rejected_rows" in selected:
        yield table_output(
            rejected,
            output_name="rejected_rows",
            rejected_row_count=dg.MetadataValue.int(rejected["row_id"].n_unique()),
            rejected_by_field=dg.MetadataValue.md(counts_markdown(by_field, "field")),
        )


@dg.asset_check(
    asset="validated_products",
    blocking=True,
    additional_ins={"raw_catalogue": dg.AssetIn(), "rejected_rows": dg.AssetIn()},
)
def every_raw_row_validated_or_rejected(
    raw_catalogue: pl.DataFrame, validated_products: pl.DataFrame, rejected_rows: pl.DataFrame
) -> dg.AssetCheckResult:
    """Validation drops nothing: each raw row is in exactly one of validated / rejected."""
    validated_ids = set(validated_products["row_id"])
    rejected_ids = set(rejected_rows["row_id"])
    overlap = validated_ids & rejected_ids
    unaccounted = set(raw_catalogue["row_id"]) - validated_ids - rejected_ids
    return dg.AssetCheckResult(
        passed=not overlap and not unaccounted,
        metadata={
            "overlap": len(overlap),
            "unaccounted": len(unaccounted),
            "raw_rows": raw_catalogue.height,
        },
    )
