"""Data-quality report: what happened to every catalogue row, and why, on one page.

Pure: frames in, strings out. The `data_quality_report` asset attaches `markdown` and `summary`
as Dagster metadata and writes `html` with `write_report_html`; nothing here imports dagster.

Every catalogue string (titles, categories, reasons, URLs) is untrusted: it is HTML-escaped in
the page, Markdown-escaped in the metadata and `$`-escaped in plot labels (mathtext). The page
embeds its plots and thumbnails as data URIs, so it renders offline with no external resource.
"""

from __future__ import annotations

import base64
import html as html_lib
import io
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np
import polars as pl
from matplotlib.figure import Figure
from PIL import Image, ImageOps, UnidentifiedImageError

from curation.image_store import write_bytes_atomic
from schemas.tables import (
    CURATION_LEDGER_SCHEMA,
    DUPLICATE_CLUSTERS_SCHEMA,
    IMAGE_STATUS_OK,
    LEDGER_OUTCOMES,
    OUTCOME_BAD_IMAGE,
    OUTCOME_CURATED,
    OUTCOME_DOWNLOAD_FAILED,
    PRODUCT_IMAGES_SCHEMA,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
)

# Enough classes to see the long tail start; the rest collapse into one "more" row.
TOP_CLASSES = 25
TOP_REASONS_PER_OUTCOME = 5
TOP_CLUSTERS_TABLE = 10
# Thumbnail galleries: a page a person scrolls, not a dump (each thumbnail costs ~5 KB).
THUMB_PX = 96
GALLERY_CLUSTERS = 6
GALLERY_MEMBERS = 8
GALLERY_SAMPLES = 12
# Stored images already passed the download caps; these guard paths that point elsewhere.
MAX_THUMB_SOURCE_BYTES = 32 * 1024 * 1024
MAX_THUMB_PIXELS = 64_000_000
QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("p25", 0.25),
    ("median", 0.5),
    ("p75", 0.75),
    ("max", 1.0),
)
OUTCOME_COLOURS: dict[str, str] = {
    "curated": "#2f855a",
    "invalid": "#c53030",
    "download_failed": "#dd6b20",
    "bad_image": "#805ad5",
    "duplicate": "#718096",
}
OTHER_COLOUR = "#a0aec0"
NO_REASON = "(no reason)"

Cell = str | int | float | None


@dataclass(frozen=True)
class DataQualityReport:
    markdown: str  # compact, for Dagster metadata
    html: str  # standalone page (plots and thumbnails embedded)
    summary: dict[str, int | float | None]  # plain numbers for metadata and dashboards


@dataclass(frozen=True)
class _Table:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    # One letter per column ("l"/"r"); numbers read best right-aligned.
    align: str = ""
    note: str = ""


@dataclass
class _Section:
    anchor: str
    heading: str
    intro: str
    tables: list[_Table]
    # Trusted markup (plots, galleries) around the tables; the markdown has only the tables.
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    grid: bool = False  # tables side by side


# ---------------------------------------------------------------------------------------------
# Small formatting helpers


def _h(value: object) -> str:
    return html_lib.escape("" if value is None else str(value), quote=True)


# Not "_": CommonMark ignores it inside words, and codes like download_failed stay readable.
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~#&!])")


def _md(text: str) -> str:
    # Backslash-escaping ASCII punctuation is CommonMark's way to make it literal: a title like
    # `[x](javascript:…)` or `<img onerror=…>` stays text in Dagster's markdown viewer.
    return _MD_SPECIAL.sub(r"\\\1", text.replace("\r", " ").replace("\n", " "))


def _mpl(text: str) -> str:
    # Matplotlib parses `$…$` as mathtext; an unmatched `$` in a category would raise.
    return text.replace("$", r"\$")


def _clip(text: str | None, limit: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return value


def _pct(part: int | float, whole: int | float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def _price(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024 or unit == "MiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} MiB"


def _conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Add the schema's missing columns as nulls, so a bare `pl.DataFrame()` is a valid input."""
    if df.width == 0:
        return pl.DataFrame(schema=schema)
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in df]
    return df.with_columns(missing) if missing else df


def _reason_kind() -> pl.Expr:
    """The text before the first ':' ("http_status: 404" -> "http_status"), for grouping.

    Where that only repeats the outcome ("duplicate: exact") the whole reason is the kind.
    """
    kind = pl.col("reason").str.split(":").list.first().str.strip_chars()
    kind = pl.when(kind == pl.col("outcome")).then(pl.col("reason")).otherwise(kind)
    return pl.when(kind.is_null() | (kind == "")).then(pl.lit(NO_REASON)).otherwise(kind)


def _quantiles(series: pl.Series) -> list[float | None]:
    values = series.drop_nulls()
    if values.dtype.is_float():
        values = values.filter(values.is_finite())
    if values.is_empty():
        return [None] * len(QUANTILES)
    return [float(values.quantile(q, interpolation="nearest")) for _, q in QUANTILES]


# ---------------------------------------------------------------------------------------------
# Statistics (shared by the markdown and the HTML)


def _outcome_counts(ledger: pl.DataFrame) -> list[tuple[str, int]]:
    """Every known outcome (zeros included, so the table shape is stable), then unknown ones."""
    found = ledger.group_by(pl.col("outcome").fill_null("(missing)")).len()
    counts = {str(k): int(n) for k, n in found.iter_rows()}
    order = list(LEDGER_OUTCOMES) + sorted(k for k in counts if k not in LEDGER_OUTCOMES)
    return [(name, counts.get(name, 0)) for name in order]


def _outcome_table(counts: list[tuple[str, int]]) -> _Table:
    total = sum(n for _, n in counts)
    rows: list[tuple[Cell, ...]] = [(name, n, _pct(n, total)) for name, n in counts]
    rows.append(("total", total, _pct(total, total)))
    return _Table("Rows per outcome", ("Outcome", "Rows", "Share"), rows, "lrr")


def _reasons_table(ledger: pl.DataFrame) -> _Table:
    order = {name: i for i, name in enumerate(LEDGER_OUTCOMES)}
    grouped = (
        ledger.filter(pl.col("outcome").fill_null("") != OUTCOME_CURATED)
        .with_columns(kind=_reason_kind(), full=pl.col("reason").fill_null(NO_REASON))
        .group_by("outcome", "kind")
        .agg(n=pl.len(), example=pl.col("full").mode().sort().first())
        .with_columns(rank=pl.col("outcome").replace_strict(order, default=len(order)))
        .sort(["rank", "outcome", "n", "kind"], descending=[False, False, True, False])
        .group_by("outcome", maintain_order=True)
        .head(TOP_REASONS_PER_OUTCOME)
    )
    rows: list[tuple[Cell, ...]] = [
        (r["outcome"], r["kind"], r["n"], _clip(r["example"], 90))
        for r in grouped.iter_rows(named=True)
    ]
    return _Table(
        "Top reasons",
        ("Outcome", "Reason", "Rows", "Most common full reason"),
        rows,
        "llrl",
        f"Grouped by the text before the first ':'; top {TOP_REASONS_PER_OUTCOME} per outcome.",
    )


def _invalid_fields_table(rejected: pl.DataFrame) -> _Table:
    grouped = (
        rejected.with_columns(pl.col("field").fill_null("(row)"))
        .group_by("field")
        .agg(n=pl.col("row_id").n_unique(), example=pl.col("reason").drop_nulls().mode().sort())
        .with_columns(example=pl.col("example").list.first())
        .sort(["n", "field"], descending=[True, False])
    )
    rows: list[tuple[Cell, ...]] = [
        (r["field"], r["n"], _clip(r["example"], 90)) for r in grouped.iter_rows(named=True)
    ]
    note = "A row can fail on several fields, so these can sum to more than the invalid rows."
    return _Table("Invalid rows by field", ("Field", "Rows", "Example"), rows, "lrl", note)


def _class_counts(validated: pl.DataFrame, curated_ids: pl.Series, column: str) -> pl.DataFrame:
    return (
        validated.select(
            cls=pl.col(column).fill_null("(null)"),
            cur=pl.col("row_id").is_in(curated_ids.implode()),
        )
        .group_by("cls")
        .agg(validated=pl.len(), curated=pl.col("cur").sum())
        .sort(["validated", "cls"], descending=[True, False])
    )


def _class_table(counts: pl.DataFrame, column: str) -> _Table:
    top, rest = counts.head(TOP_CLASSES), counts.slice(TOP_CLASSES)
    rows: list[tuple[Cell, ...]] = [
        (r["cls"], r["validated"], r["curated"], _pct(r["curated"], r["validated"]))
        for r in top.iter_rows(named=True)
    ]
    if rest.height:
        v, c = int(rest["validated"].sum()), int(rest["curated"].sum())
        rows.append((f"… {rest.height} more classes", v, c, _pct(c, v)))
    note = f"{counts.height} classes among validated rows."
    headers = (column, "Validated", "Curated", "Kept")
    return _Table(f"Class balance: {column}", headers, rows, "lrrr", note)


def _discounted(validated: pl.DataFrame) -> pl.Expr:
    # The flag where present, else what the prices say.
    return pl.coalesce(pl.col("flg_discount"), pl.col("price") < pl.col("full_price"))


def _price_table(validated: pl.DataFrame) -> _Table:
    rows: list[tuple[Cell, ...]] = [
        (label, *_quantiles(validated[column]))
        for column, label in (("full_price", "Full price"), ("price", "Price"))
    ]
    share = validated.select(_discounted(validated).mean()).item() if validated.height else None
    currencies = ", ".join(sorted(validated["currency_code"].drop_nulls().unique().to_list()))
    note = f"Discounted rows: {_pct(share, 1) if share is not None else '–'}"
    note += f" · currency: {currencies or '–'}"
    headers = ("Column", *(name for name, _ in QUANTILES))
    return _Table("Prices (validated rows)", headers, rows, "lrrrrr", note)


def _image_size_table(ok: pl.DataFrame) -> _Table:
    def as_px(values: list[float | None]) -> list[Cell]:
        return [None if v is None else int(v) for v in values]

    rows: list[tuple[Cell, ...]] = [
        ("Width (px)", *as_px(_quantiles(ok["width"]))),
        ("Height (px)", *as_px(_quantiles(ok["height"]))),
        ("File size", *(_fmt_bytes(v) for v in _quantiles(ok["bytes"]))),
    ]
    headers = ("Stored images", *(name for name, _ in QUANTILES))
    return _Table(f"Image sizes ({ok.height:,} stored)", headers, rows, "lrrrrr")


def _share_table(title: str, series: pl.Series, label: str) -> _Table:
    counts = series.fill_null("(none)").value_counts(sort=True, name="n")
    counts = counts.sort(["n", series.name], descending=[True, False])
    total = int(counts["n"].sum())
    rows: list[tuple[Cell, ...]] = [(k, n, _pct(n, total)) for k, n in counts.iter_rows()]
    return _Table(title, (label, "Rows", "Share"), rows, "lrr")


def _clusters_by_id(members: pl.DataFrame) -> pl.DataFrame:
    """One row per multi-member cluster, largest first; members carry the row info columns."""
    kind = pl.col("match_kind")
    return (
        members.filter(pl.col("cluster_size") > 1)
        .group_by("cluster_id")
        .agg(
            size=pl.len(),
            exact=(kind == "exact").sum(),
            near=(kind == "near").sum(),
            max_distance=pl.col("hamming_to_canonical").max(),
            placeholder=pl.col("is_placeholder").fill_null(False).any(),
            conflict=pl.col("label_conflict").fill_null(False).any(),
            canonical=pl.col("canonical_row_id").first(),
            titles=pl.col("title").drop_nulls().unique(maintain_order=True),
            categories=pl.col("category3_code").drop_nulls().unique().sort(),
            prices=pl.col("full_price").drop_nulls().unique().sort(),
            canonical_index=pl.col("row_index").filter(pl.col("is_canonical")).first(),
        )
        .sort(["size", "cluster_id"], descending=[True, False])
    )


def _cluster_label(r: dict) -> str:
    index = r["canonical_index"]
    title = r["titles"][0] if r["titles"] else r["canonical"]
    return f"#{index} {_clip(title, 50)}" if index is not None else _clip(title, 50)


def _clusters_table(by_id: pl.DataFrame) -> _Table:
    rows: list[tuple[Cell, ...]] = [
        (
            _cluster_label(r),
            r["size"],
            r["exact"],
            r["near"],
            r["max_distance"],
            "placeholder" if r["placeholder"] else ("label conflict" if r["conflict"] else ""),
        )
        for r in by_id.head(TOP_CLUSTERS_TABLE).iter_rows(named=True)
    ]
    rows_in = int(by_id["size"].sum()) if by_id.height else 0
    sizes = ", ".join(str(s) for s in by_id["size"].head(10).to_list()) or "–"
    note = f"{by_id.height:,} clusters with more than one row, {rows_in:,} rows in them."
    note += f" Largest sizes: {sizes}."
    headers = ("Canonical row", "Rows", "Exact", "Near", "Max distance", "Flag")
    return _Table("Largest duplicate clusters", headers, rows, "lrrrrl", note)


def _placeholder_table(by_id: pl.DataFrame) -> _Table:
    ph = by_id.filter(pl.col("placeholder"))
    rows: list[tuple[Cell, ...]] = [
        (
            _cluster_label(r),
            r["size"],
            len(r["titles"]),
            len(r["categories"]),
            _clip("; ".join(r["titles"][:3]), 90),
        )
        for r in ph.iter_rows(named=True)
    ]
    headers = ("Image (canonical row)", "Rows", "Titles", "Categories", "Example titles")
    note = "One image shared by rows with unrelated titles: a stand-in, not a product photo."
    return _Table("Placeholder clusters", headers, rows, "lrrrl", note)


def _conflict_table(by_id: pl.DataFrame) -> _Table:
    # Placeholders disagree on labels by nature: real products come first.
    conflicts = by_id.filter(pl.col("conflict")).sort(
        ["placeholder", "size", "cluster_id"], descending=[False, True, False]
    )
    rows: list[tuple[Cell, ...]] = [
        (
            _cluster_label(r),
            r["size"],
            _clip(", ".join(r["categories"]), 70),
            _clip(", ".join(_price(p) for p in r["prices"]), 50),
            "yes" if r["placeholder"] else "",
        )
        for r in conflicts.head(TOP_CLUSTERS_TABLE).iter_rows(named=True)
    ]
    headers = ("Cluster (canonical row)", "Rows", "category3_code", "Full prices", "Placeholder")
    note = f"{conflicts.height:,} clusters whose rows share an image but not a label."
    return _Table("Clusters with conflicting labels", headers, rows, "lrllr", note)


# ---------------------------------------------------------------------------------------------
# Plots (the object-oriented matplotlib API: no pyplot, no global backend, thread-safe)


def _png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # No "Software" entry: the same data gives the same bytes, whatever matplotlib built it.
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tidy(ax) -> None:  # noqa: ANN001 - matplotlib Axes
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _plot_outcomes(counts: list[tuple[str, int]]) -> str | None:
    total = sum(n for _, n in counts)
    if not total:
        return None
    fig = Figure(figsize=(7.5, 0.42 * len(counts) + 0.9))
    ax = fig.add_subplot()
    names = [_mpl(name) for name, _ in counts]
    colours = [OUTCOME_COLOURS.get(name, OTHER_COLOUR) for name, _ in counts]
    bars = ax.barh(names, [n for _, n in counts], color=colours)
    ax.bar_label(bars, labels=[f"{n:,} ({_pct(n, total)})" for _, n in counts], padding=3, size=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(n for _, n in counts) * 1.3)
    ax.set_title("Rows per outcome", fontsize=10, loc="left")
    _tidy(ax)
    return _png_data_uri(fig)


def _plot_class_balance(panels: list[tuple[str, pl.DataFrame]]) -> str | None:
    panels = [(name, df.head(TOP_CLASSES)) for name, df in panels if df.height]
    if not panels:
        return None
    rows = max(df.height for _, df in panels)
    fig = Figure(figsize=(12, 0.22 * rows + 1.3))
    for ax, (name, df) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        y = np.arange(df.height)
        ax.barh(y, df["validated"].to_numpy(), color="#cbd5e0", label="validated")
        ax.barh(y, df["curated"].to_numpy(), color=OUTCOME_COLOURS["curated"], label="curated")
        ax.set_yticks(y, [_mpl(_clip(c, 32)) for c in df["cls"].to_list()])
        ax.invert_yaxis()
        ax.set_title(f"{name} (top {df.height})", fontsize=10, loc="left")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
        _tidy(ax)
    fig.tight_layout()
    return _png_data_uri(fig)


def _plot_prices(validated: pl.DataFrame) -> str | None:
    full = validated["full_price"].drop_nulls()
    full = full.filter(full.is_finite()).to_numpy()
    if full.size == 0:
        return None
    sale = validated.filter(_discounted(validated).fill_null(False))["price"].drop_nulls()
    sale = sale.filter(sale.is_finite()).to_numpy()
    low, high = float(full.min()), float(full.max())
    log_scale = low > 0 and high / low > 20  # retail prices span decades: log bins read better
    bins = np.geomspace(low, high, 31) if log_scale else 30
    fig = Figure(figsize=(7.5, 3.2))
    ax = fig.add_subplot()
    ax.hist(full, bins=bins, color="#3182ce", alpha=0.85, label="full price")
    if sale.size:
        ax.hist(sale, bins=bins, color="#dd6b20", alpha=0.6, label="price (discounted rows)")
    if log_scale:
        ax.set_xscale("log")
    ax.set_xlabel("price", fontsize=8)
    ax.set_ylabel("rows", fontsize=8)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Price distribution", fontsize=10, loc="left")
    _tidy(ax)
    return _png_data_uri(fig)


def _plot_image_sizes(ok: pl.DataFrame) -> str | None:
    dims = ok.select("width", "height").drop_nulls()
    sizes = ok["bytes"].drop_nulls().to_numpy() / 1024
    if dims.is_empty() and sizes.size == 0:
        return None
    fig = Figure(figsize=(11, 3.4))
    left, right = fig.subplots(1, 2)
    left.scatter(dims["width"].to_numpy(), dims["height"].to_numpy(), s=10, alpha=0.4)
    left.set_xlabel("width (px)", fontsize=8)
    left.set_ylabel("height (px)", fontsize=8)
    left.set_title("Image dimensions", fontsize=10, loc="left")
    right.hist(sizes, bins=30, color="#805ad5", alpha=0.85)
    right.set_xlabel("file size (KiB)", fontsize=8)
    right.set_ylabel("images", fontsize=8)
    right.set_title("File sizes", fontsize=10, loc="left")
    for ax in (left, right):
        _tidy(ax)
    fig.tight_layout()
    return _png_data_uri(fig)


def _plot_html(uri: str | None, alt: str) -> str:
    if uri is None:
        return '<p class="empty">Nothing to plot.</p>'
    return f'<img class="plot" src="{uri}" alt="{_h(alt)}">'


# ---------------------------------------------------------------------------------------------
# Thumbnails


@dataclass(frozen=True)
class _Thumb:
    uri: str | None
    problem: str | None


def _resolve(path: str, root: str | None) -> str:
    if root is None or "://" in path or os.path.isabs(path):
        return path
    return f"{root.rstrip('/')}/{path}"


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return im.convert("RGB")


def _make_thumb(path: str) -> _Thumb:
    try:
        with fsspec.open(path, "rb") as handle:
            data = handle.read(MAX_THUMB_SOURCE_BYTES + 1)
        if len(data) > MAX_THUMB_SOURCE_BYTES:
            return _Thumb(None, "file too large to preview")
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_THUMB_PIXELS:
                return _Thumb(None, f"too many pixels to preview ({im.width}x{im.height})")
            im.draft("RGB", (THUMB_PX * 2, THUMB_PX * 2))  # JPEG: decode at reduced scale
            small = ImageOps.exif_transpose(im)
            small.thumbnail((THUMB_PX, THUMB_PX))
            rgb = _to_rgb(small)
    except FileNotFoundError:
        return _Thumb(None, "stored file missing")
    except UnidentifiedImageError:
        return _Thumb(None, "cannot decode: not an image")
    except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways; show, don't crash
        return _Thumb(None, _clip(f"cannot decode: {type(exc).__name__}: {exc}", 90))
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=80)
    return _Thumb("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), None)


class _Thumbnails:
    """Each path read and encoded once: exact duplicates share one content-addressed file."""

    def __init__(self, root: str | None) -> None:
        self._root = root
        self._cache: dict[str, _Thumb] = {}

    def get(self, path: str | None) -> _Thumb:
        if not path:
            return _Thumb(None, "no stored image")
        if path not in self._cache:
            self._cache[path] = _make_thumb(_resolve(path, self._root))
        return self._cache[path]


def _figure(
    thumb: _Thumb, caption: Sequence[str], tooltip: str, box_text: str | None = None
) -> str:
    if thumb.uri is not None:
        media = f'<img src="{thumb.uri}" alt="">'
    else:
        media = f'<div class="nothumb">{_h(_clip(box_text or thumb.problem, 60))}</div>'
    lines = "".join(f"<span>{_h(line)}</span>" for line in caption if line)
    return (
        f'<figure class="thumb" title="{_h(tooltip)}">{media}<figcaption>{lines}</figcaption>'
        "</figure>"
    )


def _member_caption(m: dict) -> list[str]:
    if m["is_canonical"]:
        match = "canonical"
    else:
        match = f"{m['match_kind'] or 'match'} d={_fmt(m['hamming_to_canonical'])}"
    return [f"#{m['row_index']} · {match}", _clip(m["title"], 34), m["outcome"] or ""]


def _conflict_caption(m: dict) -> list[str]:
    return [
        f"#{m['row_index']} · {_price(m['full_price'])}",
        _clip(m["title"], 34),
        _clip(m["category3_code"], 34),
    ]


def _cluster_gallery(
    ctx: _Context, chosen: pl.DataFrame, caption: Callable[[dict], list[str]]
) -> str:
    blocks = []
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
        more = rows.height - GALLERY_MEMBERS
        if more > 0:
            figures.append(f'<div class="more">+{more:,} more</div>')
        head = f"{_h(_cluster_label(r))} <small>{r['size']:,} rows</small>"
        blocks.append(f'<div class="cluster"><h4>{head}</h4><div class="gallery">')
        blocks.append("".join(figures) + "</div></div>")
    return "".join(blocks)


def _placeholder_gallery(ctx: _Context, chosen: pl.DataFrame) -> str:
    figures = []
    for r in chosen.iter_rows(named=True):
        canonical = ctx.members.filter(pl.col("row_id") == r["canonical"]).head(1)
        path = canonical["path"].item() if canonical.height else None
        titles = "\n".join(r["titles"][:10])
        caption = [f"{r['size']:,} rows", f"{len(r['titles']):,} titles"]
        figures.append(_figure(ctx.thumbs.get(path), caption, titles))
    return f'<div class="gallery">{"".join(figures)}</div>' if figures else ""


def _bad_image_gallery(ctx: _Context) -> str:
    bad = ctx.info.filter(pl.col("outcome") == OUTCOME_BAD_IMAGE).sort("row_index")
    figures = []
    for r in bad.head(GALLERY_SAMPLES).iter_rows(named=True):
        reason = r["reason"] or r["image_reason"] or NO_REASON
        thumb = ctx.thumbs.get(r["path"])
        tooltip = f"{r['title'] or r['row_id']}\n{r['url'] or ''}\n{reason}"
        caption = [f"#{r['row_index']}", _clip(r["title"], 34)]
        if thumb.uri is not None:
            caption.append(_clip(reason, 60))
        figures.append(_figure(thumb, caption, tooltip, box_text=reason))
    if not figures:
        return ""
    shown = "all shown" if bad.height == len(figures) else f"first {len(figures)} shown"
    more = f"<p class='note'>{bad.height:,} bad images, {shown}.</p>"
    return f'<h3>Sample bad images</h3><div class="gallery">{"".join(figures)}</div>{more}'


# ---------------------------------------------------------------------------------------------
# Sections: the same tables feed the markdown and the page; the page adds plots and galleries


@dataclass(frozen=True)
class _Context:
    ledger: pl.DataFrame
    validated: pl.DataFrame
    rejected: pl.DataFrame
    images: pl.DataFrame
    info: pl.DataFrame  # one row per ledger row: outcome, reason, title, labels, image path
    members: pl.DataFrame  # duplicate_clusters joined with info
    by_id: pl.DataFrame  # one row per multi-member cluster, largest first
    counts: list[tuple[str, int]]
    curated_ids: pl.Series
    thumbs: _Thumbnails


def _row_info(ledger: pl.DataFrame, validated: pl.DataFrame, images: pl.DataFrame) -> pl.DataFrame:
    def first_per_row(df: pl.DataFrame) -> pl.DataFrame:
        return df.unique("row_id", keep="first", maintain_order=True)

    labels = validated.select("row_id", "title", "category2_code", "category3_code", "full_price")
    fetch = images.select(
        "row_id", "url", "path", "format", image_reason=pl.col("reason"), image_status="status"
    )
    base = ledger.select("row_id", "row_index", "outcome", "reason")
    return (
        first_per_row(base)
        .join(first_per_row(labels), on="row_id", how="left")
        .join(first_per_row(fetch), on="row_id", how="left")
    )


def _context(
    ledger: pl.DataFrame,
    validated: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    clusters: pl.DataFrame,
    thumbnails_root: str | None,
) -> _Context:
    ledger = _conform(ledger, CURATION_LEDGER_SCHEMA)
    validated = _conform(validated, VALIDATED_PRODUCTS_SCHEMA)
    images = _conform(images, PRODUCT_IMAGES_SCHEMA)
    clusters = _conform(clusters, DUPLICATE_CLUSTERS_SCHEMA)
    info = _row_info(ledger, validated, images)
    members = clusters.join(info.drop("row_index"), on="row_id", how="left")
    return _Context(
        ledger=ledger,
        validated=validated,
        rejected=_conform(rejected, REJECTED_ROWS_SCHEMA),
        images=images,
        info=info,
        members=members,
        by_id=_clusters_by_id(members),
        counts=_outcome_counts(ledger),
        curated_ids=ledger.filter(pl.col("outcome") == OUTCOME_CURATED)["row_id"],
        thumbs=_Thumbnails(thumbnails_root),
    )


def _download_failures_table(ctx: _Context) -> _Table:
    failed = ctx.info.filter(pl.col("outcome") == OUTCOME_DOWNLOAD_FAILED).sort("row_index")
    rows: list[tuple[Cell, ...]] = [
        (r["row_index"], _clip(r["title"], 40), _clip(r["reason"], 60), _clip(r["url"], 70))
        for r in failed.head(GALLERY_SAMPLES).iter_rows(named=True)
    ]
    note = f"First {len(rows)} of {failed.height:,}; URLs shown as text, never as links."
    return _Table("Sample download failures", ("Row", "Title", "Reason", "URL"), rows, "rlll", note)


def _outcome_section(ctx: _Context) -> _Section:
    tables = [_outcome_table(ctx.counts), _reasons_table(ctx.ledger)]
    if ctx.rejected.height:
        tables.append(_invalid_fields_table(ctx.rejected))
    failures = _download_failures_table(ctx)
    after = [_html_table(failures)] if failures.rows else []
    plot = _plot_html(_plot_outcomes(ctx.counts), "rows per outcome")
    intro = "Every catalogue row ends in exactly one outcome."
    return _Section("outcomes", "Outcomes", intro, tables, [plot], after)


def _class_section(ctx: _Context) -> _Section:
    panels = [
        (column, _class_counts(ctx.validated, ctx.curated_ids, column))
        for column in ("category2_code", "category3_code")
    ]
    tables = [_class_table(counts, column) for column, counts in panels]
    plot = _plot_html(_plot_class_balance(panels), "class balance")
    intro = "Validated rows per class and how many of them were curated."
    return _Section("classes", "Class balance", intro, tables, [plot], grid=True)


def _price_section(ctx: _Context) -> _Section:
    plot = _plot_html(_plot_prices(ctx.validated), "price histogram")
    return _Section("prices", "Prices", "", [_price_table(ctx.validated)], [plot])


def _image_section(ctx: _Context) -> _Section:
    ok = ctx.images.filter(pl.col("status") == IMAGE_STATUS_OK)
    tables = [
        _image_size_table(ok),
        _share_table("Stored image formats", ok["format"], "Format"),
        _share_table("Fetch status", ctx.images["status"], "Status"),
    ]
    plot = _plot_html(_plot_image_sizes(ok), "image sizes")
    gallery = _bad_image_gallery(ctx)
    return _Section("images", "Images", "", tables, [plot], [gallery] if gallery else [])


def _duplicate_section(ctx: _Context) -> _Section:
    real = ctx.by_id.filter(~pl.col("placeholder")).head(GALLERY_CLUSTERS)
    gallery = _cluster_gallery(ctx, real, _member_caption)
    intro = "Rows whose images are the same picture (exact bytes or near-identical by phash)."
    after = ["<h3>Largest clusters</h3>" + gallery] if gallery else []
    return _Section(
        "duplicates", "Duplicate clusters", intro, [_clusters_table(ctx.by_id)], [], after
    )


def _placeholder_section(ctx: _Context) -> _Section:
    chosen = ctx.by_id.filter(pl.col("placeholder"))
    gallery = _placeholder_gallery(ctx, chosen)
    table = _placeholder_table(ctx.by_id)
    return _Section("placeholders", "Placeholder images", "", [table], [], [gallery])


def _conflict_section(ctx: _Context) -> _Section:
    chosen = ctx.by_id.filter(pl.col("conflict") & ~pl.col("placeholder")).head(GALLERY_CLUSTERS)
    gallery = _cluster_gallery(ctx, chosen, _conflict_caption)
    intro = "The same image labelled with different categories or prices: one label is wrong."
    intro += " Placeholder clusters are listed in the table but not pictured again."
    return _Section(
        "conflicts", "Label conflicts", intro, [_conflict_table(ctx.by_id)], [], [gallery]
    )


# ---------------------------------------------------------------------------------------------
# Rendering


def _align(t: _Table) -> str:
    n = len(t.headers)
    return (t.align or "l" + "r" * (n - 1)).ljust(n, "l")


def _md_table(t: _Table) -> str:
    lines = [f"**{_md(t.title)}**", ""]
    if t.rows:
        lines.append("| " + " | ".join(_md(h) for h in t.headers) + " |")
        lines.append("|" + "|".join("---:" if a == "r" else "---" for a in _align(t)) + "|")
        lines += ["| " + " | ".join(_md(_fmt(c)) for c in row) + " |" for row in t.rows]
    else:
        lines.append("None.")
    if t.note:
        lines += ["", f"*{_md(t.note)}*"]
    return "\n".join(lines)


def _html_table(t: _Table) -> str:
    classes = ['class="num"' if a == "r" else "" for a in _align(t)]
    head = "".join(f"<th {c}>{_h(h)}</th>" for c, h in zip(classes, t.headers, strict=True))
    body = "".join(
        "<tr>" + "".join(f"<td {c}>{_h(_fmt(v))}</td>" for c, v in zip(classes, row, strict=True))
        for row in t.rows
    )
    if not t.rows:
        body = f'<tr><td colspan="{len(t.headers)}" class="empty">None.</td></tr>'
    note = f'<p class="note">{_h(t.note)}</p>' if t.note else ""
    return (
        f'<div class="tbl"><h3>{_h(t.title)}</h3><div class="scroll"><table><thead><tr>{head}'
        f"</tr></thead><tbody>{body}</tbody></table></div>{note}</div>"
    )


def _headline(counts: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in counts)
    curated = dict(counts).get(OUTCOME_CURATED, 0)
    others = [f"{n:,} {name}" for name, n in counts if n and name != OUTCOME_CURATED]
    head = f"{total:,} catalogue rows → {curated:,} curated ({_pct(curated, total)})"
    return head + (" · " + " · ".join(others) if others else "")


def _render_markdown(counts: list[tuple[str, int]], sections: list[_Section]) -> str:
    parts = [f"**{_md(_headline(counts))}**"]
    for s in sections:
        parts.append(f"### {s.heading}")
        parts += [_md_table(t) for t in s.tables]
    return "\n\n".join(parts) + "\n"


_CSS = """
:root{--fg:#1a202c;--muted:#5a6778;--line:#e2e8f0;--bg:#f4f6f9;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 20px 48px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:0 0 4px}
h3{font-size:14px;margin:14px 0 6px}h4{font-size:13px;margin:12px 0 6px}
h4 small{color:var(--muted);font-weight:400;margin-left:6px}
.lead{color:var(--muted);margin:0 0 16px;font-size:15px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:8px;
margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-left:4px solid #cbd5e0;
border-radius:6px;padding:8px 12px}
.card b{display:block;font-size:22px;font-variant-numeric:tabular-nums}
.card span{color:var(--muted);font-size:12px}
.stack{display:flex;height:26px;border-radius:5px;overflow:hidden;background:var(--line)}
.stack div{height:100%}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin:8px 0 0;font-size:12px;color:var(--muted)}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px}
nav{margin:18px 0 0;font-size:13px}nav a{color:#2b6cb0;margin-right:14px;text-decoration:none}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:16px 20px;margin:16px 0}
.intro,.note{color:var(--muted);font-size:12px;margin:2px 0 8px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:0 24px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:12.5px;margin:0 0 4px;min-width:50%}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{background:#f7fafc;font-weight:600;white-space:nowrap}
td{overflow-wrap:anywhere}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tbody tr:hover td{background:#f7fafc}
td.empty,p.empty{color:var(--muted);font-style:italic}
img.plot{display:block;max-width:100%;height:auto;margin:6px 0 10px}
.gallery{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.cluster{border-top:1px solid var(--line);padding-top:4px}
figure.thumb{margin:0;width:112px}
figure.thumb img,.nothumb{display:block;width:96px;height:96px;border:1px solid var(--line);
border-radius:4px;background:#fff}
figure.thumb img{object-fit:scale-down}
.nothumb{display:flex;align-items:center;justify-content:center;text-align:center;padding:6px;
font-size:10px;line-height:1.25;color:#9b2c2c;overflow:hidden;overflow-wrap:anywhere;
border:1px dashed #feb2b2;
background:repeating-linear-gradient(45deg,#fff5f5 0 6px,#fed7d7 6px 12px)}
figcaption{font-size:11px;line-height:1.3;color:var(--muted);margin-top:3px}
figcaption span{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
figcaption span:first-child{color:var(--fg);font-weight:600}
.more{width:96px;height:96px;display:flex;align-items:center;justify-content:center;
border:1px dashed var(--line);border-radius:4px;color:var(--muted);font-size:12px}
"""

# Defence in depth behind the escaping: the page may run no script and load nothing from outside.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _stack_bar(counts: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in counts)
    segments = "".join(
        f'<div style="width:{100.0 * n / total:.3f}%;background:'
        f'{OUTCOME_COLOURS.get(name, OTHER_COLOUR)}" title="{_h(name)}: {n:,}"></div>'
        for name, n in counts
        if n
    )
    legend = "".join(
        f'<span><i style="background:{OUTCOME_COLOURS.get(name, OTHER_COLOUR)}"></i>'
        f"{_h(name)} {n:,} ({_pct(n, total)})</span>"
        for name, n in counts
    )
    return f'<div class="stack">{segments}</div><div class="legend">{legend}</div>'


def _cards(counts: list[tuple[str, int]], summary: dict[str, int | float | None]) -> str:
    total = sum(n for _, n in counts)
    cards = [("catalogue rows", f"{total:,}", "", "#2d3748")]
    cards += [
        (name, f"{n:,}", _pct(n, total), OUTCOME_COLOURS.get(name, OTHER_COLOUR))
        for name, n in counts
    ]
    cards += [
        ("duplicate clusters", f"{summary['n_clusters']:,}", "", "#4a5568"),
        ("placeholder rows", f"{summary['n_placeholder_rows']:,}", "", "#4a5568"),
        ("conflicting clusters", f"{summary['n_label_conflicts']:,}", "", "#4a5568"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card" style="border-left-color:{colour}"><b>{_h(value)}</b>'
            f"<span>{_h(label)}{' · ' + _h(extra) if extra else ''}</span></div>"
            for label, value, extra, colour in cards
        )
        + "</div>"
    )


def _section_html(s: _Section) -> str:
    tables = "".join(_html_table(t) for t in s.tables)
    if s.grid:
        tables = f'<div class="grid">{tables}</div>'
    intro = f'<p class="intro">{_h(s.intro)}</p>' if s.intro else ""
    return (
        f'<section id="{s.anchor}"><h2>{_h(s.heading)}</h2>{intro}{"".join(s.before)}'
        f"{tables}{''.join(s.after)}</section>"
    )


def _render_html(
    counts: list[tuple[str, int]], sections: list[_Section], summary: dict[str, int | float | None]
) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{_h(s.heading)}</a>' for s in sections)
    return "".join(
        [
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width,initial-scale=1">',
            f"<title>Data quality report</title><style>{_CSS}</style></head><body><main>",
            f'<header><h1>Data quality report</h1><p class="lead">{_h(_headline(counts))}</p>',
            _cards(counts, summary),
            _stack_bar(counts),
            f"<nav>{nav}</nav></header>",
            *(_section_html(s) for s in sections),
            "</main></body></html>\n",
        ]
    )


def _summary(ctx: _Context) -> dict[str, int | float | None]:
    counts = dict(ctx.counts)
    total = sum(counts.values())
    known = {f"n_{name}": counts.get(name, 0) for name in LEDGER_OUTCOMES}
    clusters = ctx.members
    price = _quantiles(ctx.validated["full_price"])[2]
    discount = ctx.validated.select(_discounted(ctx.validated).mean()).item()
    return {
        "total_rows": total,
        **known,
        "n_other_outcome": total - sum(known.values()),
        "curated_share": round(counts.get(OUTCOME_CURATED, 0) / total, 4) if total else None,
        "n_validated": ctx.validated.height,
        "n_rejected_rows": ctx.rejected["row_id"].n_unique(),  # distinct rows, not failures
        "n_images_ok": ctx.images.filter(pl.col("status") == IMAGE_STATUS_OK).height,
        "n_clusters": ctx.by_id.height,  # clusters with more than one row
        "n_rows_in_clusters": int(ctx.by_id["size"].sum()),
        "largest_cluster_size": int(ctx.by_id["size"].max() or 0),
        "n_placeholder_rows": clusters.filter(pl.col("is_placeholder").fill_null(False)).height,
        "n_placeholder_images": ctx.by_id.filter(pl.col("placeholder")).height,
        "n_label_conflicts": ctx.by_id.filter(pl.col("conflict")).height,  # clusters
        "n_label_conflict_rows": clusters.filter(pl.col("label_conflict").fill_null(False)).height,
        "n_category2": ctx.validated["category2_code"].n_unique(),
        "n_category3": ctx.validated["category3_code"].n_unique(),
        "median_full_price": price,
        "discount_share": None if discount is None else round(float(discount), 4),
    }


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
    ctx = _context(ledger, validated, rejected, images, clusters, thumbnails_root)
    sections = [
        _outcome_section(ctx),
        _class_section(ctx),
        _price_section(ctx),
        _image_section(ctx),
        _duplicate_section(ctx),
        _placeholder_section(ctx),
        _conflict_section(ctx),
    ]
    summary = _summary(ctx)
    return DataQualityReport(
        markdown=_render_markdown(ctx.counts, sections),
        html=_render_html(ctx.counts, sections, summary),
        summary=summary,
    )


def write_report_html(html: str, path: str) -> None:
    """Write the page so a reader never sees half of it (tmp + rename, or one upload)."""
    write_bytes_atomic(path, html.encode("utf-8"))
