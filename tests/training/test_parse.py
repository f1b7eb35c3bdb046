"""The strict answer parser and the metrics built on it."""

from __future__ import annotations

import pytest

from schemas.prompt import ParsedAnswer, format_answer, parse_answer
from training.evaluate import (
    Truth,
    baselines,
    score,
    title_similarity,
)


def test_parses_the_training_format():
    text = format_answer("Check Wool Scarf", "Scarves", 450.0)
    assert parse_answer(text) == ParsedAnswer("Check Wool Scarf", "Scarves", 450.0)
    assert parse_answer(format_answer("Tote", "Bags", 12.5)).price == 12.5


def test_commas_in_title_parse_from_the_right():
    title = "Vintage Check, Cotton, Category: Nope Shirt"
    parsed = parse_answer(format_answer(title, "Shirts", 1290))
    assert parsed == ParsedAnswer(title, "Shirts", 1290.0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "Product: Scarf, Category: Scarves",  # partial: no price
        "Product: Scarf, Full Price: 10",  # no category
        "Scarf, Category: Scarves, Full Price: 10",  # no prefix
        "Product: , Category: Scarves, Full Price: 10",  # empty title
        "Product: Scarf, Category: , Full Price: 10",  # empty category
        "Product: Scarf, Category: Scarves, Full Price: ten",
        "Product: Scarf, Category: Scarves, Full Price: 10 USD",
        "Product: Scarf, Category: Scarves, Full Price: 1,290",
        "Product: Scarf, Category: Scarves, Full Price: -5",
    ],
)
def test_malformed_and_partial_answers_are_misses(text):
    assert parse_answer(text) is None


def test_whitespace_around_the_answer_is_tolerated():
    assert parse_answer("  Product: A, Category: B, Full Price: 3\n") == ParsedAnswer("A", "B", 3.0)


def test_title_similarity_bounds():
    assert title_similarity("Check Scarf", "check  scarf") == 1.0
    assert title_similarity("abc", "xyz") == 0.0
    assert 0.0 < title_similarity("Check Scarf", "Check Shirt") < 1.0


def test_score_counts_misses_as_wrong_and_prices_over_parsed():
    truths = [Truth("A", "X", 100.0), Truth("B", "Y", 200.0)]
    preds = [ParsedAnswer("A", "X", 110.0), None]
    m = score(truths, preds)
    assert m["parse_rate"] == 0.5
    assert m["category_accuracy"] == 0.5
    assert m["title_similarity"] == 0.5
    assert m["price_mae"] == pytest.approx(10.0)
    assert m["price_mape"] == pytest.approx(0.1)
    assert score(truths, [None, None])["price_mae"] is None


def test_baselines_use_train_statistics_and_null_what_does_not_apply():
    train = [Truth("a", "X", 10.0), Truth("b", "X", 20.0), Truth("c", "Y", 90.0)]
    test = [Truth("d", "X", 20.0), Truth("e", "Y", 40.0)]
    b = baselines(train, test)
    assert b["majority_category"]["category_accuracy"] == 0.5
    assert b["majority_category"]["price_mae"] is None
    assert b["majority_category"]["title_similarity"] is None
    assert b["median_price"]["price_mae"] == pytest.approx(10.0)  # median 20
    assert b["median_price"]["category_accuracy"] is None


def test_baseline_statistics_ignore_synthetic_variants():
    import datasets

    from training.evaluate import original_train_truths

    train = datasets.Dataset.from_dict(
        {
            "title": ["a", "b", "c"],
            "category3_code": ["X", "Y", "Y"],
            "full_price": [10.0, 20.0, 20.0],
            "is_synthetic": [False, False, True],
        }
    )
    assert original_train_truths(train) == [Truth("a", "X", 10.0), Truth("b", "Y", 20.0)]
