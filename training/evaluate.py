"""Base vs tuned on the test split: `python -m training.evaluate --config eval.json`.

Greedy generation, a strict answer parser, and metrics that mean something: the reference's
"price error" parsed the last teacher-forced token and scored failures as 0.0; here an answer
either parses completely or counts as a miss, and price errors are over parsed answers only
(read them together with parse_rate). Writes eval.json (docs/design.md shape) and eval.html.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from schemas.atomic import write_text_atomic
from schemas.progress import Progress, progress_lines
from schemas.prompt import ParsedAnswer, parse_answer
from training.artefacts import load_model_for_eval
from training.config import EvalConfig
from training.data import load_splits
from training.eval_page import flat_metrics, headline_table, render_page
from training.generate import generate_answers
from training.pipes import dagster_pipes_session, report_materialization
from training.run import emit
from training.storage import fetch, join

METRIC_KEYS: tuple[str, ...] = (
    "parse_rate",
    "category_accuracy",
    "title_similarity",
    "price_mae",
    "price_mape",
)
TRUTH_COLUMNS: tuple[str, ...] = ("title", "category3_code", "full_price")


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def title_similarity(predicted: str, truth: str) -> float:
    """1 - normalised Levenshtein distance (case/whitespace-insensitive), in [0, 1]."""
    a, b = _normalise(predicted), _normalise(truth)
    if not a and not b:
        return 1.0
    return 1.0 - edit_distance(a, b) / max(len(a), len(b))


@dataclass(frozen=True)
class Truth:
    title: str
    category: str
    price: float


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score(truths: Sequence[Truth], predictions: Sequence[ParsedAnswer | None]) -> dict[str, Any]:
    """Rates are over all rows (a miss is wrong); price errors over parsed rows only."""
    n = len(truths)
    pairs = [(t, p) for t, p in zip(truths, predictions, strict=True) if p is not None]
    errors = [abs(p.price - t.price) for t, p in pairs]
    relative = [abs(p.price - t.price) / t.price for t, p in pairs if t.price > 0]
    return {
        "parse_rate": len(pairs) / n if n else None,
        "category_accuracy": sum(p.category == t.category for t, p in pairs) / n if n else None,
        "title_similarity": sum(title_similarity(p.title, t.title) for t, p in pairs) / n
        if n
        else None,
        "price_mae": _mean(errors),
        "price_mape": _mean(relative),
    }


def score_with_breakdown(
    truths: Sequence[Truth], predictions: Sequence[ParsedAnswer | None]
) -> dict[str, Any]:
    metrics = score(truths, predictions)
    per_category: dict[str, Any] = {}
    for category in sorted({t.category for t in truths}):
        idx = [i for i, t in enumerate(truths) if t.category == category]
        part = score([truths[i] for i in idx], [predictions[i] for i in idx])
        per_category[category] = {"n": len(idx), **part}
    return {**metrics, "per_category": per_category}


def baselines(train_truths: Sequence[Truth], test_truths: Sequence[Truth]) -> dict[str, Any]:
    """No-model floors: always the train majority category / always the train median price."""
    majority = Counter(t.category for t in train_truths).most_common(1)[0][0]
    median = statistics.median(t.price for t in train_truths)
    n = len(test_truths)
    majority_metrics = dict.fromkeys(METRIC_KEYS)
    majority_metrics["category_accuracy"] = sum(t.category == majority for t in test_truths) / n
    median_metrics = dict.fromkeys(METRIC_KEYS)
    median_metrics["price_mae"] = _mean([abs(median - t.price) for t in test_truths])
    median_metrics["price_mape"] = _mean(
        [abs(median - t.price) / t.price for t in test_truths if t.price > 0]
    )
    return {
        "majority_category": {**majority_metrics, "value": majority},
        "median_price": {**median_metrics, "value": median},
    }


def truth_of(row: dict[str, Any]) -> Truth:
    return Truth(str(row["title"]), str(row["category3_code"]), float(row["full_price"]))


def original_train_truths(train: Any) -> list[Truth]:
    """Baseline statistics from real catalogue rows: synthetic variants (oversampling,
    augmentations) would skew the majority category and the median price."""
    columns = [c for c in (*TRUTH_COLUMNS, "is_synthetic") if c in train.column_names]
    return [truth_of(r) for r in train.select_columns(columns) if not r.get("is_synthetic")]


def progress_events(label: str) -> Progress:
    """Generation progress as `progress` events (run log under Pipes, stdout standalone)."""
    return progress_lines(label, lambda line: emit("progress", message=line), unit="rows")


def evaluate(config: EvalConfig) -> dict[str, Any]:
    model_dir = fetch(config.model_dir)  # a local copy when the model is on an object store
    out_dir = config.output_dir or config.model_dir
    torch.manual_seed(config.seed)
    dataset = load_splits(config.dataset_dir)
    test = dataset[config.split]
    if config.max_samples:
        test = test.select(range(min(config.max_samples, len(test))))
    rows = [test[i] for i in range(len(test))]
    truths = [truth_of(r) for r in rows]
    model, processor, preset = load_model_for_eval(model_dir, with_adapter=True)
    gen = {"batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens}
    predictions = {
        "tuned": generate_answers(
            model, processor, preset, rows, **gen, progress=progress_events("eval tuned")
        )
    }
    if config.include_base:
        with model.disable_adapter():  # same weights minus LoRA and modules_to_save
            predictions["base"] = generate_answers(
                model, processor, preset, rows, **gen, progress=progress_events("eval base")
            )
    train_truths = original_train_truths(dataset["train"])
    result: dict[str, Any] = {"n_test": len(rows)}
    for name in ("tuned", "base"):
        texts = predictions.get(name)
        parsed = [parse_answer(t) for t in texts] if texts is not None else None
        result[name] = (
            score_with_breakdown(truths, parsed) if parsed else dict.fromkeys(METRIC_KEYS)
        )
    result["baselines"] = baselines(train_truths, truths)
    result["samples"] = [
        {"row_id": r["row_id"], "truth": r["answer"], **{k: v[i] for k, v in predictions.items()}}
        for i, r in enumerate(rows[:20])
    ]
    write_text_atomic(join(out_dir, "eval.json"), json.dumps(result, indent=2))
    tuned = [parse_answer(text) for text in predictions["tuned"]]
    page = render_page(result, rows, truths, tuned, predictions, config.html_rows)
    write_text_atomic(join(out_dir, "eval.html"), page)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="EvalConfig JSON file")
    args = parser.parse_args(argv)
    with dagster_pipes_session():
        result = evaluate(EvalConfig.load(args.config))
        # The page's headline table rides along, so the UI shows it without opening eval.html.
        report_materialization({**flat_metrics(result), "metrics": headline_table(result)})
    summary = {k: result[k] for k in ("n_test", "tuned", "base", "baselines")}
    for block in (summary["tuned"], summary["base"]):
        block.pop("per_category", None)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
