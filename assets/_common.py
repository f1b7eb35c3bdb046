"""Small helpers every asset module shares: metadata previews and data versions."""

from __future__ import annotations

from typing import Any

import dagster as dg
import polars as pl

from curation.catalogue import frame_fingerprint

PREVIEW_ROWS = 10


def markdown_table(frame: pl.DataFrame, max_rows: int = PREVIEW_ROWS, max_chars: int = 60) -> str:
    """A frame as a markdown table, cells clipped so the Dagster UI stays readable."""
    if frame.is_empty():
        return "_(no rows)_"
    head = frame.head(max_rows)

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= max_chars else text[: max_chars - 1] + "…"

    lines = ["| " + " | ".join(head.columns) + " |", "|" + "---|" * len(head.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in head.iter_rows()]
    if frame.height > max_rows:
        lines.append(f"\n_{frame.height - max_rows} more rows_")
    return "\n".join(lines)


def table_output(
    frame: pl.DataFrame,
    output_name: str = "result",
    version_columns: list[str] | None = None,
    **metadata: Any,
) -> dg.Output:
    """Output with a content-derived data version, row count and preview.

    The data version is a hash of the content, so rematerializing with identical results
    leaves everything downstream up to date (the wave of staleness stops here).
    `version_columns` leaves out bookkeeping (timings, attempt counts) that changes on every run
    without changing what downstream assets see.
    """
    return dg.Output(
        frame,
        output_name=output_name,
        data_version=dg.DataVersion(frame_fingerprint(frame, version_columns)),
        metadata={
            "dagster/row_count": dg.MetadataValue.int(frame.height),
            "preview": dg.MetadataValue.md(markdown_table(frame)),
            **metadata,
        },
    )


def counts_markdown(counts: dict[str, int], key: str = "value") -> str:
    if not counts:
        return "_(none)_"
    rows = "\n".join(f"| {name} | {n} |" for name, n in sorted(counts.items(), key=lambda x: -x[1]))
    return f"| {key} | rows |\n|---|---|\n{rows}"
