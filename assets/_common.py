"""Small helpers every asset module shares: metadata previews, data versions, and the shape of
a multi-asset whose tables come from one pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dagster as dg
import fsspec
import polars as pl

from assets.resources import PipelineSettings
from curation.catalogue import frame_fingerprint
from schemas.markdown import markdown_table
from schemas.progress import Progress, progress_lines

PREVIEW_ROWS = 10


def frame_markdown(frame: pl.DataFrame, max_rows: int = PREVIEW_ROWS, max_chars: int = 60) -> str:
    """A frame as a markdown table, cells clipped so the Dagster UI stays readable."""
    if frame.is_empty():
        return "_(no rows)_"
    table = markdown_table(frame.columns, frame.head(max_rows).rows(), max_chars=max_chars)
    more = f"\n\n_{frame.height - max_rows} more rows_" if frame.height > max_rows else ""
    return table + more


def log_progress(context: dg.AssetExecutionContext, label: str, unit: str = "images") -> Progress:
    """Progress lines of a long step, in the run log (and so on the terminal that runs it)."""
    return progress_lines(label, context.log.info, unit)


def table_output(
    frame: pl.DataFrame,
    output_name: str = "result",
    version_columns: list[str] | None = None,
    **metadata: Any,
) -> dg.Output:
    """Output with a content-derived data version, row count and preview.

    The data version is a hash of the content: a rerun with identical results keeps it, so
    no automation condition downstream fires (the chain stops here).
    `version_columns` leaves out bookkeeping (timings, attempt counts) that changes on every run
    without changing what downstream assets see.
    """
    return dg.Output(
        frame,
        output_name=output_name,
        data_version=dg.DataVersion(frame_fingerprint(frame, version_columns)),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(frame.height),
            "preview": dg.MetadataValue.md(frame_markdown(frame)),
            **metadata,
        },
    )


def one_pass_tables(group: str, code_version: str, *tables: str) -> Callable[..., Any]:
    """`@dg.multi_asset` for tables one computation yields together, each of which can be
    rebuilt alone (`--select rejected_rows`): no output is required, so selecting one does not
    demand its sibling; the function yields only what `context.selected_output_names` holds."""
    return dg.multi_asset(
        group_name=group,
        code_version=code_version,
        outs={
            name: dg.AssetOut(kinds={"polars"}, code_version="1", is_required=False)
            for name in tables
        },
        can_subset=True,
    )


def no_rows_check(offenders: pl.DataFrame, count_key: str) -> dg.AssetCheckResult:
    """A check that passes when `offenders` is empty, with their count and a preview."""
    return dg.AssetCheckResult(
        passed=offenders.is_empty(),
        metadata={count_key: offenders.height, "examples": frame_markdown(offenders)},
    )


def counts_markdown(counts: dict[str, int], key: str = "value") -> str:
    if not counts:
        return "_(none)_"
    return markdown_table((key, "rows"), sorted(counts.items(), key=lambda item: -item[1]))


def previous_table(settings: PipelineSettings, name: str) -> pl.DataFrame | None:
    """The asset's last stored output, for row-level reuse (None on the first run)."""
    path = settings.path(f"{name}.parquet")
    fs, fs_path = fsspec.core.url_to_fs(path)
    if not fs.exists(fs_path):
        return None
    with fs.open(fs_path, "rb") as handle:
        return pl.read_parquet(handle)
