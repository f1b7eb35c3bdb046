"""eval.html and the headline figures: summary first, rows last, everything escaped."""

from __future__ import annotations

from PIL import Image

from schemas.prompt import format_answer
from training.eval_page import (
    NO_ANSWER,
    OTHER,
    confusion,
    evaluation_failures,
    flat_metrics,
    headline_rows,
    render_page,
)
from training.evaluate import METRIC_KEYS, parse_answer, score_with_breakdown, truth_of


def block(**values):
    return {**dict.fromkeys(METRIC_KEYS), **values}


def result_with(tuned_acc: float, tuned_mae: float) -> dict:
    return {
        "n_test": 3,
        "tuned": block(category_accuracy=tuned_acc, price_mae=tuned_mae),
        "base": block(category_accuracy=0.1),
        "baselines": {
            "majority_category": block(category_accuracy=0.3, value="Scarves"),
            "median_price": block(price_mae=100.0, value=200.0),
        },
    }


def test_verdict_names_each_failed_bar():
    assert evaluation_failures(flat_metrics(result_with(0.8, 50.0))) == []
    assert evaluation_failures(flat_metrics(result_with(0.2, 150.0))) == [
        "category accuracy not above the majority baseline",
        "price MAE not below the median-price baseline",
    ]


def test_headline_rows_tuned_base_then_baselines():
    rows = headline_rows(result_with(0.8, 50.0))
    assert [r["model"] for r in rows] == [
        "tuned", "base", "baseline: majority_category", "baseline: median_price",
    ]  # fmt: skip
    assert rows[0]["category_accuracy"] == 0.8 and rows[3]["price_mae"] == 100.0


def test_confusion_counts_top_categories_other_and_unparsed():
    truths = ["A", "A", "A", "B", "B", "C"]
    predicted = ["A", "B", None, "B", "Z", "A"]
    rows, columns, counts = confusion(truths, predicted, k=2)
    assert rows == ["A", "B"] and columns == ["A", "B", OTHER, NO_ANSWER]
    assert counts == [[1, 1, 0, 1], [0, 1, 1, 0]]  # C (not top-2) is left out


def test_page_puts_the_summary_first_clips_and_escapes():
    image = Image.new("RGB", (40, 40), (200, 30, 30))
    answers = [format_answer("Red Scarf", "Scarves", 120.0), format_answer("Cap", "Caps", 30.0)]
    rows = [
        {"image": image, "answer": a, "title": t, "category3_code": c, "full_price": p}
        for a, t, c, p in zip(answers, ["Red Scarf", "Cap"], ["Scarves", "Caps"], [120.0, 30.0],
                              strict=True)
    ]  # fmt: skip
    long_text = "<script>alert(1)</script>" + "word " * 100
    predictions = {"tuned": [answers[0], long_text], "base": ["x", "y"]}
    truths = [truth_of(r) for r in rows]
    tuned = [parse_answer(t) for t in predictions["tuned"]]
    result = {
        "n_test": 2,
        "tuned": score_with_breakdown(truths, tuned),
        "base": score_with_breakdown(truths, [None, None]),
        "baselines": result_with(0, 0)["baselines"],
    }
    page = render_page(result, rows, truths, tuned, predictions, limit=10)
    sections = ["metrics", "per-category", "confusion", "price", "worst", "rows"]
    positions = [page.index(f'id="{name}"') for name in sections]
    assert positions == sorted(positions)
    assert "Check passes" in page and "<script>alert" not in page  # 1/2 right, MAE 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "…" in page  # the long generation is clipped in the cell (full text in title)
    worst = page[page.index('id="worst"') : page.index('id="rows"')]
    assert worst.count("<img") == 1  # only the wrong answer, with its picture
    assert page[page.index('id="rows"') :].count("<img") == 2
