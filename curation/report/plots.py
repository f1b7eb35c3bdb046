"""The report's plots as PNG data URIs, so the page renders offline.

The object-oriented matplotlib API: no pyplot, no global backend, safe in any thread.
matplotlib is imported when a plot is drawn: every process that loads the code location (code
server, run worker, each step's process) imports this module, and only the report step draws.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from curation.report.statistics import TOP_CLASSES, clip, discounted, pct

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OUTCOME_COLOURS: dict[str, str] = {
    "curated": "#2f855a",
    "invalid": "#c53030",
    "download_failed": "#dd6b20",
    "bad_image": "#805ad5",
    "duplicate": "#718096",
}
OTHER_COLOUR = "#a0aec0"


def _mpl(text: str) -> str:
    # Matplotlib parses `$…$` as mathtext; an unmatched `$` in a category would raise.
    return text.replace("$", r"\$")


def _figure(**kwargs: Any) -> Figure:
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # No "Software" entry: the same data gives the same bytes, whatever matplotlib built it.
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _tidy(ax) -> None:  # noqa: ANN001 - matplotlib Axes
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def plot_outcomes(counts: list[tuple[str, int]]) -> str | None:
    total = sum(n for _, n in counts)
    if not total:
        return None
    fig = _figure(figsize=(7.5, 0.42 * len(counts) + 0.9))
    ax = fig.add_subplot()
    names = [_mpl(name) for name, _ in counts]
    colours = [OUTCOME_COLOURS.get(name, OTHER_COLOUR) for name, _ in counts]
    bars = ax.barh(names, [n for _, n in counts], color=colours)
    ax.bar_label(bars, labels=[f"{n:,} ({pct(n, total)})" for _, n in counts], padding=3, size=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(n for _, n in counts) * 1.3)
    ax.set_title("Rows per outcome", fontsize=10, loc="left")
    _tidy(ax)
    return _png_data_uri(fig)


def plot_class_balance(panels: list[tuple[str, pl.DataFrame]]) -> str | None:
    panels = [(name, df.head(TOP_CLASSES)) for name, df in panels if df.height]
    if not panels:
        return None
    rows = max(df.height for _, df in panels)
    fig = _figure(figsize=(12, 0.22 * rows + 1.3))
    for ax, (name, df) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        y = np.arange(df.height)
        ax.barh(y, df["validated"].to_numpy(), color="#cbd5e0", label="validated")
        ax.barh(y, df["curated"].to_numpy(), color=OUTCOME_COLOURS["curated"], label="curated")
        ax.set_yticks(y, [_mpl(clip(c, 32)) for c in df["cls"].to_list()])
        ax.invert_yaxis()
        ax.set_title(f"{name} (top {df.height})", fontsize=10, loc="left")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
        _tidy(ax)
    fig.tight_layout()
    return _png_data_uri(fig)


def plot_prices(validated: pl.DataFrame) -> str | None:
    full = validated["full_price"].drop_nulls()
    full = full.filter(full.is_finite()).to_numpy()
    if full.size == 0:
        return None
    sale = validated.filter(discounted(validated).fill_null(False))["price"].drop_nulls()
    sale = sale.filter(sale.is_finite()).to_numpy()
    low, high = float(full.min()), float(full.max())
    log_scale = low > 0 and high / low > 20  # retail prices span decades: log bins read better
    bins = np.geomspace(low, high, 31) if log_scale else 30
    fig = _figure(figsize=(7.5, 3.2))
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


def plot_image_sizes(ok: pl.DataFrame) -> str | None:
    dims = ok.select("width", "height").drop_nulls()
    sizes = ok["bytes"].drop_nulls().to_numpy() / 1024
    if dims.is_empty() and sizes.size == 0:
        return None
    fig = _figure(figsize=(11, 3.4))
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
