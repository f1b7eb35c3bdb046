"""The report's numbers: every table and headline figure, computed from the pipeline's frames.

Pure polars: frames in, `Table`s and plain numbers out. The same tables feed the markdown
(Dagster metadata) and the HTML page, so the two never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from schemas.tables import IMAGE_STATUS_OK, LEDGER_OUTCOMES, OUTCOME_CURATED

# Enough classes to see the long tail start; the rest collapse into one "more" row.
TOP_CLASSES = 25
TOP_REASONS_PER_OUTCOME = 5
TOP_CLUSTERS_TABLE = 10


QUANTILES: tuple[tuple[str, float], ...] = (
    ("min", 0.0),
    ("p25", 0.25),
    ("median", 0.5),
    ("p75", 0.75),
    ("max", 1.0),
)
NO_REASON = "(no reason)"

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: list[tuple[Cell, ...]]
    # One letter per column ("l"/"r"); numbers read best right-aligned.
    align: str = ""
    note: str = ""


def clip(text: str | None, limit: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_cell(value: Cell) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return value


def pct(part: int | float, whole: int | float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "–"


def fmt_price(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024 or unit == "MiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} MiB"


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
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


def quantiles(series: pl.Series) -> list[float | None]:
    values = series.drop_nulls()
    if values.dtype.is_float():
        values = values.filter(values.is_finite())
    if values.is_empty():
        return [None] * len(QUANTILES)
    return [float(values.quantile(q, interpolation="nearest")) for _, q in QUANTILES]


def outcome_counts(ledger: pl.DataFrame) -> list[tuple[str, int]]:
    """Every known outcome (zeros included, so the table shape is stable), then unknown ones."""
    found = ledger.group_by(pl.col("outcome").fill_null("(missing)")).len()
    counts = {str(k): int(n) for k, n in found.iter_rows()}
    order = list(LEDGER_OUTCOMES) + sorted(k for k in counts if k not in LEDGER_OUTCOMES)
    return [(name, counts.get(name, 0)) for name in order]


def outcome_table(counts: list[tuple[str, int]]) -> Table:
    total = sum(n for _, n in counts)
    rows: list[tuple[Cell, ...]] = [(name, n, pct(n, total)) for name, n in counts]
    rows.append(("total", total, pct(total, total)))
    return Table("Rows per outcome", ("Outcome", "Rows", "Share"), rows, "lrr")


def reasons_table(ledger: pl.DataFrame) -> Table:
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
        (r["outcome"], r["kind"], r["n"], clip(r["example"], 90))
        for r in grouped.iter_rows(named=True)
    ]
    return Table(
        "Top reasons",
        ("Outcome", "Reason", "Rows", "Most common full reason"),
        rows,
        "llrl",
        f"Grouped by the text before the first ':'; top {TOP_REASONS_PER_OUTCOME} per outcome.",
    )


def invalid_fields_table(rejected: pl.DataFrame) -> Table:
    grouped = (
        rejected.with_columns(pl.col("field").fill_null("(row)"))
        .group_by("field")
        .agg(n=pl.col("row_id").n_unique(), example=pl.col("reason").drop_nulls().mode().sort())
        .with_columns(example=pl.col("example").list.first())
        .sort(["n", "field"], descending=[True, False])
    )
    rows: list[tuple[Cell, ...]] = [
        (r["field"], r["n"], clip(r["example"], 90)) for r in grouped.iter_rows(named=True)
    ]
    note = "A row can fail on several fields, so these can sum to more than the invalid rows."
    return Table("Invalid rows by field", ("Field", "Rows", "Example"), rows, "lrl", note)


def class_counts(validated: pl.DataFrame, curated_ids: pl.Series, column: str) -> pl.DataFrame:
    return (
        validated.select(
            cls=pl.col(column).fill_null("(null)"),
            cur=pl.col("row_id").is_in(curated_ids.implode()),
        )
        .group_by("cls")
        .agg(validated=pl.len(), curated=pl.col("cur").sum())
        .sort(["validated", "cls"], descending=[True, False])
    )


def class_table(counts: pl.DataFrame, column: str) -> Table:
    top, rest = counts.head(TOP_CLASSES), counts.slice(TOP_CLASSES)
    rows: list[tuple[Cell, ...]] = [
        (r["cls"], r["validated"], r["curated"], pct(r["curated"], r["validated"]))
        for r in top.iter_rows(named=True)
    ]
    if rest.height:
        v, c = int(rest["validated"].sum()), int(rest["curated"].sum())
        rows.append((f"… {rest.height} more classes", v, c, pct(c, v)))
    note = f"{counts.height} classes among validated rows."
    headers = (column, "Validated", "Curated", "Kept")
    return Table(f"Class balance: {column}", headers, rows, "lrrr", note)


def discounted(validated: pl.DataFrame) -> pl.Expr:
    # The flag where present, else what the prices say.
    return pl.coalesce(pl.col("flg_discount"), pl.col("price") < pl.col("full_price"))


def price_table(validated: pl.DataFrame) -> Table:
    rows: list[tuple[Cell, ...]] = [
        (label, *quantiles(validated[column]))
        for column, label in (("full_price", "Full price"), ("price", "Price"))
    ]
    share = validated.select(discounted(validated).mean()).item() if validated.height else None
    currencies = ", ".join(sorted(validated["currency_code"].drop_nulls().unique().to_list()))
    note = f"Discounted rows: {pct(share, 1) if share is not None else '–'}"
    note += f" · currency: {currencies or '–'}"
    headers = ("Column", *(name for name, _ in QUANTILES))
    return Table("Prices (validated rows)", headers, rows, "lrrrrr", note)


def image_size_table(ok: pl.DataFrame) -> Table:
    def as_px(values: list[float | None]) -> list[Cell]:
        return [None if v is None else int(v) for v in values]

    rows: list[tuple[Cell, ...]] = [
        ("Width (px)", *as_px(quantiles(ok["width"]))),
        ("Height (px)", *as_px(quantiles(ok["height"]))),
        ("File size", *(fmt_bytes(v) for v in quantiles(ok["bytes"]))),
    ]
    headers = ("Stored images", *(name for name, _ in QUANTILES))
    return Table(f"Image sizes ({ok.height:,} stored)", headers, rows, "lrrrrr")


def share_table(title: str, series: pl.Series, label: str) -> Table:
    counts = series.fill_null("(none)").value_counts(sort=True, name="n")
    counts = counts.sort(["n", series.name], descending=[True, False])
    total = int(counts["n"].sum())
    rows: list[tuple[Cell, ...]] = [(k, n, pct(n, total)) for k, n in counts.iter_rows()]
    return Table(title, (label, "Rows", "Share"), rows, "lrr")


def clusters_by_id(members: pl.DataFrame) -> pl.DataFrame:
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


def cluster_label(r: dict) -> str:
    index = r["canonical_index"]
    title = r["titles"][0] if r["titles"] else r["canonical"]
    return f"#{index} {clip(title, 50)}" if index is not None else clip(title, 50)


def clusters_table(by_id: pl.DataFrame) -> Table:
    rows: list[tuple[Cell, ...]] = [
        (
            cluster_label(r),
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
    return Table("Largest duplicate clusters", headers, rows, "lrrrrl", note)


def placeholder_table(by_id: pl.DataFrame) -> Table:
    ph = by_id.filter(pl.col("placeholder"))
    rows: list[tuple[Cell, ...]] = [
        (
            cluster_label(r),
            r["size"],
            len(r["titles"]),
            len(r["categories"]),
            clip("; ".join(r["titles"][:3]), 90),
        )
        for r in ph.iter_rows(named=True)
    ]
    headers = ("Image (canonical row)", "Rows", "Titles", "Categories", "Example titles")
    note = "One image shared by rows with unrelated titles: a stand-in, not a product photo."
    return Table("Placeholder clusters", headers, rows, "lrrrl", note)


def conflict_table(by_id: pl.DataFrame) -> Table:
    # Placeholders disagree on labels by nature: real products come first.
    conflicts = by_id.filter(pl.col("conflict")).sort(
        ["placeholder", "size", "cluster_id"], descending=[False, True, False]
    )
    rows: list[tuple[Cell, ...]] = [
        (
            cluster_label(r),
            r["size"],
            clip(", ".join(r["categories"]), 70),
            clip(", ".join(fmt_price(p) for p in r["prices"]), 50),
            "yes" if r["placeholder"] else "",
        )
        for r in conflicts.head(TOP_CLUSTERS_TABLE).iter_rows(named=True)
    ]
    headers = ("Cluster (canonical row)", "Rows", "category3_code", "Full prices", "Placeholder")
    note = f"{conflicts.height:,} clusters whose rows share an image but not a label."
    return Table("Clusters with conflicting labels", headers, rows, "lrllr", note)


def row_info(ledger: pl.DataFrame, validated: pl.DataFrame, images: pl.DataFrame) -> pl.DataFrame:
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


def summary(
    counts: list[tuple[str, int]],
    validated: pl.DataFrame,
    rejected: pl.DataFrame,
    images: pl.DataFrame,
    members: pl.DataFrame,
    by_id: pl.DataFrame,
) -> dict[str, int | float | None]:
    """The headline numbers, for metadata and dashboards."""
    by_outcome = dict(counts)
    total = sum(by_outcome.values())
    known = {f"n_{name}": by_outcome.get(name, 0) for name in LEDGER_OUTCOMES}
    price = quantiles(validated["full_price"])[2]
    discount = validated.select(discounted(validated).mean()).item()
    curated = by_outcome.get(OUTCOME_CURATED, 0)
    return {
        "total_rows": total,
        **known,
        "n_other_outcome": total - sum(known.values()),
        "curated_share": round(curated / total, 4) if total else None,
        "n_validated": validated.height,
        "n_rejected_rows": rejected["row_id"].n_unique(),  # distinct rows, not failures
        "n_images_ok": images.filter(pl.col("status") == IMAGE_STATUS_OK).height,
        "n_clusters": by_id.height,  # clusters with more than one row
        "n_rows_in_clusters": int(by_id["size"].sum()),
        "largest_cluster_size": int(by_id["size"].max() or 0),
        "n_placeholder_rows": members.filter(pl.col("is_placeholder").fill_null(False)).height,
        "n_placeholder_images": by_id.filter(pl.col("placeholder")).height,
        "n_label_conflicts": by_id.filter(pl.col("conflict")).height,  # clusters
        "n_label_conflict_rows": members.filter(pl.col("label_conflict").fill_null(False)).height,
        "n_category2": validated["category2_code"].n_unique(),
        "n_category3": validated["category3_code"].n_unique(),
        "median_full_price": price,
        "discount_share": None if discount is None else round(float(discount), 4),
    }
