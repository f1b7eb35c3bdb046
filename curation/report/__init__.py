"""Data-quality report: what happened to every catalogue row, and why, on one page.

Pure: frames in, strings out. The `data_quality_report` asset attaches `markdown` and `summary`
as Dagster metadata and writes `html` with `write_report_html`; nothing here imports dagster.

- `statistics`: every table and headline number, from the frames.
- `plots` and `thumbnails`: matplotlib PNGs and image previews, embedded as data URIs.
- `sections`: which tables, plots and galleries each section shows (plain data).
- `render`: the markdown, and the page through `templates/report.html.j2` + `report.css`.

Every catalogue string (titles, categories, reasons, URLs) is untrusted: it is HTML-escaped in
the page, Markdown-escaped in the metadata and `$`-escaped in plot labels (mathtext). The page
embeds its plots and thumbnails as data URIs, so it renders offline with no external resource.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from curation.report.render import render_html, render_markdown
from curation.report.sections import build_context, build_sections
from curation.report.statistics import summary as summarise
from schemas.atomic import write_bytes_atomic


@dataclass(frozen=True)
class DataQualityReport:
    markdown: str  # compact, for Dagster metadata
    html: str  # standalone page (plots and thumbnails embedded)
    summary: dict[str, int | float | None]  # plain numbers for metadata and dashboards


def build_data_quality_report(
    ledger: pl.DataFrame,
    validated: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
    thumbnails_root: str | None = None,
) -> DataQualityReport:
    """Markdown for Dagster metadata, a standalone HTML page, and the headline numbers.

    `thumbnails_root` resolves relative `path` values in `images`; absolute paths and URLs
    are read as they are (through fsspec). Empty frames give a report that says so.
    """
    ctx = build_context(ledger, validated, rejected, images, clusters, thumbnails_root)
    sections = build_sections(ctx)
    numbers = summarise(ctx.counts, ctx.validated, ctx.rejected, ctx.images, ctx.members, ctx.by_id)
    return DataQualityReport(
        markdown=render_markdown(ctx.counts, sections),
        html=render_html(ctx.counts, sections, numbers),
        summary=numbers,
    )


def write_report_html(html: str, path: str) -> None:
    """Write the page so a reader never sees half of it (tmp + rename, or one upload)."""
    write_bytes_atomic(path, html.encode("utf-8"))


__all__ = ["DataQualityReport", "build_data_quality_report", "write_report_html"]
