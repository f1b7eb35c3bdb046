"""eval.html: what a reader decides from first, then the rows.

Order: the metrics table (tuned, base, no-model baselines) with the check's verdict, accuracy
per category, a confusion matrix of the most frequent categories, predicted vs true price, the
worst errors with their pictures, then the first rows with long generations clipped. Rendered
from a Jinja2 template with autoescape (package data); Jinja2 comes with torch, so a bare GPU
box has it. `headline_table` and `evaluation_failures` are also the asset's metadata and check.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("parse_rate", "parse rate"),
    ("category_accuracy", "category accuracy"),
    ("title_similarity", "title similarity"),
    ("price_mae", "price MAE"),
    ("price_mape", "price MAPE"),
)
CONFUSION_CATEGORIES = 8
WORST_ERRORS = 12
CLIP_CHARS = 160  # a base model's answer can run to max_new_tokens of anything
NO_ANSWER = "(unparsed)"
OTHER = "(other)"


def flat_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """`who/metric` -> value for every numeric metric (the asset's metadata and its check)."""
    blocks = [("tuned", result["tuned"]), ("base", result["base"]), *result["baselines"].items()]
    flat: dict[str, Any] = {"n_test": result["n_test"]}
    for who, block in blocks:
        for metric, value in block.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                flat[f"{who}/{metric}"] = value
    return flat


def evaluation_failures(metrics: Mapping[str, Any]) -> list[str]:
    """Why a tuned model does not beat its base and the no-model baselines (empty: it does).
    `metrics` as flat_metrics names them; the page's verdict and the asset check's."""
    tuned_acc = metrics.get("tuned/category_accuracy") or 0.0
    tuned_mae = metrics.get("tuned/price_mae")
    failures = []
    if tuned_acc <= (metrics.get("base/category_accuracy") or 0.0):
        failures.append("category accuracy not above base")
    if tuned_acc <= (metrics.get("majority_category/category_accuracy") or 0.0):
        failures.append("category accuracy not above the majority baseline")
    baseline_mae = metrics.get("median_price/price_mae")
    if tuned_mae is None or (baseline_mae is not None and tuned_mae >= baseline_mae):
        failures.append("price MAE not below the median-price baseline")
    return failures


def headline_table(result: dict[str, Any]) -> dict[str, Any]:
    """headline_rows as a Pipes table value (dagster turns it into MetadataValue.table)."""
    schema = [{"name": "model", "type": "string"}]
    schema += [
        {"name": key, "type": "float", "description": label} for key, label in METRIC_COLUMNS
    ]
    return {"raw_value": {"records": headline_rows(result), "schema": schema}, "type": "table"}


def headline_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model or baseline: the page's first table and the asset's metadata table."""
    blocks = [("tuned", result["tuned"]), ("base", result["base"])]
    blocks += [(f"baseline: {name}", block) for name, block in result["baselines"].items()]
    return [
        {"model": name, **{key: block.get(key) for key, _ in METRIC_COLUMNS}}
        for name, block in blocks
    ]


def confusion(
    truths: Sequence[str], predicted: Sequence[str | None], k: int = CONFUSION_CATEGORIES
) -> tuple[list[str], list[str], list[list[int]]]:
    """Counts over the k most frequent true categories; predictions outside them are OTHER,
    unparsed answers NO_ANSWER. Returns (row labels, column labels, counts)."""
    top = [name for name, _ in Counter(truths).most_common(k)]
    columns = [*top, OTHER, NO_ANSWER]
    index = {name: i for i, name in enumerate(columns)}
    counts = [[0] * len(columns) for _ in top]
    for truth, guess in zip(truths, predicted, strict=True):
        if truth not in index or index[truth] >= len(top):
            continue
        column = NO_ANSWER if guess is None else guess if guess in top else OTHER
        counts[index[truth]][index[column]] += 1
    return top, columns, counts


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    ok: bool  # category right


def price_points(
    pairs: Sequence[tuple[float, float, bool]], size: int = 320, pad: int = 30
) -> dict[str, Any]:
    """(true, predicted, category right) -> SVG coordinates on shared linear axes."""
    if not pairs:
        return {"points": [], "size": size, "pad": pad, "top": 0.0}
    top = max(max(t, p) for t, p, _ in pairs) or 1.0
    span = size - 2 * pad

    def scale(value: float) -> float:
        return pad + span * min(value, top) / top

    points = [Point(scale(t), size - scale(p), ok) for t, p, ok in pairs]
    return {"points": points, "size": size, "pad": pad, "top": top}


def thumbnail_data_uri(image: Any, size: int = 96) -> str:
    thumb = image.copy()
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("training", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["metric"] = _format_metric
    return env.get_template("eval.html.j2")


def _format_metric(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def render_page(
    result: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    truths: Sequence[Any],
    tuned: Sequence[Any],
    predictions: dict[str, list[str]],
    limit: int,
) -> str:
    """The self-contained page (thumbnails inlined). `rows` are the evaluated test rows,
    `truths` their Truth, `tuned` the tuned model's parsed answers (None = unparsed) and
    `predictions` each model's raw answers, all in the same order."""
    top, columns, counts = confusion(
        [t.category for t in truths], [p.category if p else None for p in tuned]
    )
    pairs = [
        (t.price, p.price, p.category == t.category)
        for t, p in zip(truths, tuned, strict=True)
        if p
    ]
    context = {
        "n_test": result["n_test"],
        "metric_columns": METRIC_COLUMNS,
        "headline": headline_rows(result),
        "failures": evaluation_failures(flat_metrics(result)),
        "per_category": _per_category(result),
        "confusion": {"rows": top, "columns": columns, "counts": counts},
        "price": price_points(pairs),
        "worst": _worst_errors(rows, truths, tuned, predictions["tuned"]),
        "models": list(predictions),
        "rows": _row_cells(rows[:limit], predictions),
    }
    return _template().render(**context)


def _per_category(result: dict[str, Any]) -> list[dict[str, Any]]:
    tuned = result["tuned"].get("per_category") or {}
    base = result["base"].get("per_category") or {}
    return sorted(
        (
            {
                "category": name,
                "n": block["n"],
                "tuned": block.get("category_accuracy"),
                "base": (base.get(name) or {}).get("category_accuracy"),
            }
            for name, block in tuned.items()
        ),
        key=lambda row: -row["n"],
    )


def _worst_errors(
    rows: Sequence[dict[str, Any]], truths: Sequence[Any], parsed: Sequence[Any], texts: list[str]
) -> list[dict[str, Any]]:
    """Unparsed or wrong-category answers first, then the largest relative price errors."""

    def badness(i: int) -> tuple[int, float]:
        p, t = parsed[i], truths[i]
        if p is None or p.category != t.category:
            return (1, 0.0 if p is None else abs(p.price - t.price) / max(t.price, 1.0))
        return (0, abs(p.price - t.price) / max(t.price, 1.0))

    order = sorted(range(len(rows)), key=badness, reverse=True)[:WORST_ERRORS]
    return [
        {
            "image": thumbnail_data_uri(rows[i]["image"]),
            "truth": rows[i]["answer"],
            "answer": clip(texts[i]),
            "full": texts[i],
        }
        for i in order
        if badness(i) > (0, 0.0)
    ]


def _row_cells(rows: Sequence[dict[str, Any]], predictions: dict[str, list[str]]) -> list[Any]:
    cells = []
    for i, row in enumerate(rows):
        answers = []
        for name in predictions:
            text = predictions[name][i]
            answers.append({"text": clip(text), "full": text, "ok": text.strip() == row["answer"]})
        cells.append(
            {"image": thumbnail_data_uri(row["image"]), "truth": row["answer"], "answers": answers}
        )
    return cells
