"""Group `curation`: one ledger row per raw row, the curated set, the data-quality report."""

import dagster as dg
import polars as pl

from assets._common import counts_markdown, one_pass_tables, table_output
from assets.resources import PipelineSettings
from curation.ledger import (
    DEFAULT_EXCLUDED_FLAGS,
    build_curation_ledger,
    ledger_counts,
    row_flag_counts,
    select_curated_products,
)
from curation.report import build_data_quality_report, write_report_html

GROUP = "curation"


class CurationConfig(dg.Config):
    """The quality policy: which image-quality flags make a row `bad_image`; every other flag
    only marks the row (curated_products.quality_flags) for review."""

    exclude_quality_flags: list[str] = list(DEFAULT_EXCLUDED_FLAGS)


@one_pass_tables(GROUP, "2", "curation_ledger", "curated_products")
def curation_ledger(
    context: dg.AssetExecutionContext,
    config: CurationConfig,
    raw_catalogue: pl.DataFrame,
    validated_products: pl.DataFrame,
    rejected_rows: pl.DataFrame,
    product_images: pl.DataFrame,
    duplicate_clusters: pl.DataFrame,
    image_quality: pl.DataFrame,
):
    """Every raw row's outcome and reason; the rows that go on to training."""
    ledger = build_curation_ledger(
        raw_catalogue,
        rejected_rows,
        product_images,
        duplicate_clusters,
        image_quality,
        exclude_flags=config.exclude_quality_flags,
    )
    curated = select_curated_products(
        ledger, validated_products, product_images, duplicate_clusters
    )
    counts = ledger_counts(ledger)
    flagged = row_flag_counts(ledger)
    if "curation_ledger" in context.selected_output_names:
        yield table_output(
            ledger,
            output_name="curation_ledger",
            outcomes=dg.MetadataValue.md(counts_markdown(counts, "outcome")),
            quality_flags=dg.MetadataValue.md(counts_markdown(flagged, "flag")),
            **{f"outcome/{name}": n for name, n in counts.items()},
            **{f"quality/{name}": n for name, n in flagged.items()},
        )
    if "curated_products" in context.selected_output_names:
        marked = row_flag_counts(curated)
        yield table_output(
            curated,
            output_name="curated_products",
            quality_flags=dg.MetadataValue.md(counts_markdown(marked, "flag")),
            **{f"quality/{name}": n for name, n in marked.items()},
        )


@dg.asset_check(
    asset="curation_ledger",
    blocking=True,
    additional_ins={"raw_catalogue": dg.AssetIn()},
    description="count(ledger) == count(raw_catalogue) and every raw row_id appears once.",
)
def ledger_accounts_for_every_raw_row(
    raw_catalogue: pl.DataFrame, curation_ledger: pl.DataFrame
) -> dg.AssetCheckResult:
    raw_ids = set(raw_catalogue["row_id"])
    ledger_ids = curation_ledger["row_id"]
    repeated = ledger_ids.len() - ledger_ids.n_unique()
    missing = len(raw_ids - set(ledger_ids))
    return dg.AssetCheckResult(
        passed=curation_ledger.height == raw_catalogue.height and not repeated and not missing,
        metadata={
            "ledger_rows": curation_ledger.height,
            "raw_rows": raw_catalogue.height,
            "repeated_row_ids": repeated,
            "missing_row_ids": missing,
        },
    )


@dg.asset(group_name=GROUP, code_version="1", kinds={"html"})
def data_quality_report(
    pipeline: PipelineSettings,
    curation_ledger: pl.DataFrame,
    validated_products: pl.DataFrame,
    rejected_rows: pl.DataFrame,
    product_images: pl.DataFrame,
    duplicate_clusters: pl.DataFrame,
) -> dg.MaterializeResult:
    """The page a data lead opens first: outcomes, reasons, balance, prices, duplicates."""
    report = build_data_quality_report(
        curation_ledger, validated_products, rejected_rows, product_images, duplicate_clusters
    )
    path = pipeline.path("reports", "data_quality.html")
    write_report_html(report.html, path)
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.md(report.markdown),
            "report_path": dg.MetadataValue.path(path),
            **{
                key: value
                for key, value in report.summary.items()
                if isinstance(value, int | float | str)
            },
        },
    )
