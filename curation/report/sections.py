"""The report's sections: which tables, plots and thumbnail galleries each one shows.

Sections are plain data; `render` turns them into markdown (tables only) and into the HTML
page (everything). No markup is built here, so nothing here can forget to escape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from curation.report.plots import plot_class_balance, plot_image_sizes, plot_outcomes, plot_prices
from curation.report.statistics import (
    NO_REASON,
    Cell,
    Table,
    class_counts,
    class_table,
    clip,
    cluster_label,
    clusters_by_id,
    clusters_table,
    conflict_table,
    conform,
    fmt_cell,
    fmt_price,
    image_size_table,
    invalid_fields_table,
    outcome_counts,
    outcome_table,
    placeholder_table,
    price_table,
    reasons_table,
    row_info,
    share_table,
)
from curation.report.thumbnails import Thumb, Thumbnails
from schemas.tables import (
    CURATION_LEDGER_SCHEMA,
    DUPLICATE_CLUSTERS_SCHEMA,
    IMAGE_STATUS_OK,
    OUTCOME_BAD_IMAGE,
    OUTCOME_CURATED,
    OUTCOME_DOWNLOAD_FAILED,
    PRODUCT_IMAGES_SCHEMA,
    QUALITY_FLAGS,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
)

# Thumbnail galleries: a page a person scrolls, not a dump (each thumbnail costs ~5 KB).
GALLERY_CLUSTERS = 6
GALLERY_MEMBERS = 8
GALLERY_SAMPLES = 12


@dataclass(frozen=True)
class Plot:
    uri: str | None  # PNG data URI; None when there is nothing to plot
    alt: str


@dataclass(frozen=True)
class Figure:
    """One thumbnail: the picture, or a box saying why there is none."""

    uri: str | None
    box_text: str
    caption: list[str]
    tooltip: str


@dataclass(frozen=True)
class FigureGroup:
    figures: list[Figure]
    label: str | None = None  # a cluster's canonical row; None for a flat gallery
    size: int = 0
    more: int = 0  # members not pictured


@dataclass(frozen=True)
class Gallery:
    groups: list[FigureGroup]
    heading: str = ""
    note: str = ""


@dataclass
class Section:
    anchor: str
    heading: str
    intro: str
    tables: list[Table]
    # The page shows plots above the tables, then more tables and galleries below them; the
    # markdown has only `tables`.
    plots: list[Plot] = field(default_factory=list)
    tables_below: list[Table] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    grid: bool = False  # tables side by side


@dataclass(frozen=True)
class Context:
    ledger: pl.DataFrame
    validated: pl.DataFrame
    rejected: pl.DataFrame
    images: pl.DataFrame
    info: pl.DataFrame  # one row per ledger row: outcome, reason, title, labels, image path
    members: pl.DataFrame  # duplicate_clusters joined with info
    by_id: pl.DataFrame  # one row per multi-member cluster, largest first
    counts: list[tuple[str, int]]
    curated_ids: pl.Series
    thumbs: Thumbnails


def build_context(
    ledger: pl.DataFrame,
    validated: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
    thumbnails_root: str | None,
) -> Context:
    ledger = conform(ledger, CURATION_LEDGER_SCHEMA)
    validated = conform(validated, VALIDATED_PRODUCTS_SCHEMA)
    images = conform(images, PRODUCT_IMAGES_SCHEMA)
    clusters = conform(clusters, DUPLICATE_CLUSTERS_SCHEMA)
    info = row_info(ledger, validated, images)
    members = clusters.join(info.drop("row_index"), on="row_id", how="left")
    return Context(
        ledger=ledger,
        validated=validated,
        rejected=conform(rejected, REJECTED_ROWS_SCHEMA),
        images=images,
        info=info,
        members=members,
        by_id=clusters_by_id(members),
        counts=outcome_counts(ledger),
        curated_ids=ledger.filter(pl.col("outcome") == OUTCOME_CURATED)["row_id"],
        thumbs=Thumbnails(thumbnails_root),
    )


# ---------------------------------------------------------------------------------------------
# Galleries


def _figure(thumb: Thumb, caption: list[str], tooltip: str, box_text: str | None = None) -> Figure:
    box = clip(box_text or thumb.problem, 60) if thumb.uri is None else ""
    return Figure(thumb.uri, box, [line for line in caption if line], tooltip)


def _member_caption(m: dict) -> list[str]:
    if m["is_canonical"]:
        match = "canonical"
    else:
        match = f"{m['match_kind'] or 'match'} d={fmt_cell(m['hamming_to_canonical'])}"
    return [f"#{m['row_index']} · {match}", clip(m["title"], 34), m["outcome"] or ""]


def _conflict_caption(m: dict) -> list[str]:
    return [
        f"#{m['row_index']} · {fmt_price(m['full_price'])}",
        clip(m["title"], 34),
        clip(m["category3_code"], 34),
    ]


def _cluster_gallery(
    ctx: Context, chosen: pl.DataFrame, caption: Callable[[dict], list[str]], heading: str = ""
) -> list[Gallery]:
    groups = []
    for r in chosen.iter_rows(named=True):
        rows = ctx.members.filter(pl.col("cluster_id") == r["cluster_id"]).sort(
            ["is_canonical", "hamming_to_canonical", "row_index"],
            descending=[True, False, False],
            nulls_last=True,
        )
        figures = [
            _figure(ctx.thumbs.get(m["path"]), caption(m), m["title"] or m["row_id"])
            for m in rows.head(GALLERY_MEMBERS).iter_rows(named=True)
        ]
        more = max(0, rows.height - GALLERY_MEMBERS)
        groups.append(FigureGroup(figures, cluster_label(r), r["size"], more))
    return [Gallery(groups, heading)] if groups else []


def _placeholder_gallery(ctx: Context, chosen: pl.DataFrame) -> list[Gallery]:
    figures = []
    for r in chosen.iter_rows(named=True):
        canonical = ctx.members.filter(pl.col("row_id") == r["canonical"]).head(1)
        path = canonical["path"].item() if canonical.height else None
        titles = "\n".join(r["titles"][:10])
        caption = [f"{r['size']:,} rows", f"{len(r['titles']):,} titles"]
        figures.append(_figure(ctx.thumbs.get(path), caption, titles))
    return [Gallery([FigureGroup(figures)])] if figures else []


def _bad_image_gallery(ctx: Context) -> list[Gallery]:
    bad = ctx.info.filter(pl.col("outcome") == OUTCOME_BAD_IMAGE).sort("row_index")
    figures = []
    for r in bad.head(GALLERY_SAMPLES).iter_rows(named=True):
        reason = r["reason"] or r["image_reason"] or NO_REASON
        thumb = ctx.thumbs.get(r["path"])
        tooltip = f"{r['title'] or r['row_id']}\n{r['url'] or ''}\n{reason}"
        caption = [f"#{r['row_index']}", clip(r["title"], 34)]
        if thumb.uri is not None:
            caption.append(clip(reason, 60))
        figures.append(_figure(thumb, caption, tooltip, box_text=reason))
    return _sample_gallery(figures, bad.height, "Sample bad images", "bad images")


def _sample_gallery(figures: list[Figure], total: int, heading: str, what: str) -> list[Gallery]:
    """The first few of `total` rows as one gallery, saying how many are shown."""
    if not figures:
        return []
    shown = "all shown" if total == len(figures) else f"first {len(figures)} shown"
    return [Gallery([FigureGroup(figures)], heading, f"{total:,} {what}, {shown}.")]


# ---------------------------------------------------------------------------------------------
# Sections: the same tables feed the markdown and the page; the page adds plots and galleries


def _download_failures_table(ctx: Context) -> Table:
    failed = ctx.info.filter(pl.col("outcome") == OUTCOME_DOWNLOAD_FAILED).sort("row_index")
    rows: list[tuple[Cell, ...]] = [
        (r["row_index"], clip(r["title"], 40), clip(r["reason"], 60), clip(r["url"], 70))
        for r in failed.head(GALLERY_SAMPLES).iter_rows(named=True)
    ]
    note = f"First {len(rows)} of {failed.height:,}; URLs shown as text, never as links."
    return Table("Sample download failures", ("Row", "Title", "Reason", "URL"), rows, "rlll", note)


def _outcome_section(ctx: Context) -> Section:
    tables = [outcome_table(ctx.counts), reasons_table(ctx.ledger)]
    if ctx.rejected.height:
        tables.append(invalid_fields_table(ctx.rejected))
    failures = _download_failures_table(ctx)
    plot = Plot(plot_outcomes(ctx.counts), "rows per outcome")
    intro = "Every catalogue row ends in exactly one outcome."
    below = [failures] if failures.rows else []
    return Section("outcomes", "Outcomes", intro, tables, [plot], tables_below=below)


def _class_section(ctx: Context) -> Section:
    panels = [
        (column, class_counts(ctx.validated, ctx.curated_ids, column))
        for column in ("category2_code", "category3_code")
    ]
    tables = [class_table(counts, column) for column, counts in panels]
    plot = Plot(plot_class_balance(panels), "class balance")
    intro = "Validated rows per class and how many of them were curated."
    return Section("classes", "Class balance", intro, tables, [plot], grid=True)


def _price_section(ctx: Context) -> Section:
    plot = Plot(plot_prices(ctx.validated), "price histogram")
    return Section("prices", "Prices", "", [price_table(ctx.validated)], [plot])


def _image_section(ctx: Context) -> Section:
    ok = ctx.images.filter(pl.col("status") == IMAGE_STATUS_OK)
    tables = [
        image_size_table(ok),
        share_table("Stored image formats", ok["format"], "Format"),
        share_table("Fetch status", ctx.images["status"], "Status"),
    ]
    plot = Plot(plot_image_sizes(ok), "image sizes")
    return Section("images", "Images", "", tables, [plot], galleries=_bad_image_gallery(ctx))


def _flagged_rows(ctx: Context) -> pl.DataFrame:
    flags = ctx.ledger.select("row_id", "quality_flags")
    return (
        ctx.info.join(flags, on="row_id", how="left")
        .filter(pl.col("quality_flags").list.len() > 0)
        .sort("row_index")
    )


def _quality_table(ctx: Context, flagged: pl.DataFrame) -> Table:
    rows: list[tuple[Cell, ...]] = []
    for flag in QUALITY_FLAGS:
        carrying = flagged.filter(pl.col("quality_flags").list.contains(flag))
        excluded = carrying.filter(
            pl.col("reason").fill_null("").str.contains(f"quality: (.*; )?{flag} \\(")
        )
        curated = carrying.filter(pl.col("outcome") == OUTCOME_CURATED)
        rows.append((flag, carrying.height, excluded.height, curated.height))
    note = "A row can carry several flags; the policy's flags make a row bad_image."
    headers = ("Flag", "Rows", "Excluded (bad_image)", "Curated, marked")
    return Table("Image-quality flags", headers, rows, "lrrr", note)


def _quality_gallery(flagged: pl.DataFrame, ctx: Context) -> list[Gallery]:
    figures = []
    for r in flagged.head(GALLERY_SAMPLES).iter_rows(named=True):
        thumb = ctx.thumbs.get(r["path"])
        flags = ", ".join(r["quality_flags"])
        tooltip = f"{r['title'] or r['row_id']}\n{flags}\n{r['reason'] or ''}"
        caption = [f"#{r['row_index']} · {r['outcome']}", clip(r["title"], 34), clip(flags, 60)]
        figures.append(_figure(thumb, caption, tooltip, box_text=flags))
    return _sample_gallery(figures, flagged.height, "Flagged rows", "flagged rows")


def _quality_section(ctx: Context) -> Section:
    flagged = _flagged_rows(ctx)
    intro = (
        "Checks on each stored image's normalised picture (curation.images.quality): too "
        "small, odd aspect ratio, low information, too dark, too light, blurry, grayscale."
    )
    tables = [_quality_table(ctx, flagged)]
    return Section(
        "quality", "Image quality", intro, tables, galleries=_quality_gallery(flagged, ctx)
    )


def _duplicate_section(ctx: Context) -> Section:
    real = ctx.by_id.filter(~pl.col("placeholder")).head(GALLERY_CLUSTERS)
    gallery = _cluster_gallery(ctx, real, _member_caption, "Largest clusters")
    intro = "Rows whose images are the same picture (exact bytes or near-identical by phash)."
    tables = [clusters_table(ctx.by_id)]
    return Section("duplicates", "Duplicate clusters", intro, tables, galleries=gallery)


def _placeholder_section(ctx: Context) -> Section:
    gallery = _placeholder_gallery(ctx, ctx.by_id.filter(pl.col("placeholder")))
    tables = [placeholder_table(ctx.by_id)]
    return Section("placeholders", "Placeholder images", "", tables, galleries=gallery)


def _conflict_section(ctx: Context) -> Section:
    chosen = ctx.by_id.filter(pl.col("conflict") & ~pl.col("placeholder")).head(GALLERY_CLUSTERS)
    gallery = _cluster_gallery(ctx, chosen, _conflict_caption)
    intro = "The same image labelled with different categories or prices: one label is wrong."
    intro += " Placeholder clusters are listed in the table but not pictured again."
    tables = [conflict_table(ctx.by_id)]
    return Section("conflicts", "Label conflicts", intro, tables, galleries=gallery)


def build_sections(ctx: Context) -> list[Section]:
    return [
        _outcome_section(ctx),
        _class_section(ctx),
        _price_section(ctx),
        _image_section(ctx),
        _quality_section(ctx),
        _duplicate_section(ctx),
        _placeholder_section(ctx),
        _conflict_section(ctx),
    ]
