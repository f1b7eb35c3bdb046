from __future__ import annotations

import math

import polars as pl
import pytest
from pydantic import ValidationError

from curation.catalogue import load_raw_catalogue
from curation.validation import validate_catalogue
from demo import INVALID_KINDS
from schemas.catalogue_row import CATALOGUE_ROW_ADAPTER, row_errors

GOOD = {
    "category1_code": " woman ",
    "category2_code": "bags",
    "category3_code": "tote bags",
    "product_code": 80123456,
    "title": "  Vintage   Check Tote ",
    "imageurl": "https://cdn.example.com/img/80123456",
    "full_price": "1,290.0",
    "price": 990,
    "flg_discount": "1",
}


def errors_of(row: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        CATALOGUE_ROW_ADAPTER.validate_python(row)
    return row_errors(caught.value)


def test_good_row_is_normalised() -> None:
    row = CATALOGUE_ROW_ADAPTER.validate_python(GOOD)
    assert row.title == "Vintage Check Tote"
    assert (row.category1_code, row.category2_code) == ("WOMAN", "BAGS")
    assert row.product_code == "80123456"
    assert row.full_price == 1290.0 and row.price == 990.0
    assert row.flg_discount is True


@pytest.mark.parametrize("code", [80123456, "80123456", "80123456.0", 80123456.0, " 80123456 "])
def test_product_code_int_or_str_is_stored_as_str(code: object) -> None:
    assert CATALOGUE_ROW_ADAPTER.validate_python({**GOOD, "product_code": code}).product_code == (
        "80123456"
    )


def test_alphanumeric_product_code_kept() -> None:
    row = CATALOGUE_ROW_ADAPTER.validate_python({**GOOD, "product_code": "AB-12"})
    assert row.product_code == "AB-12"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category3_code": "N.A."}, "category3_code"),
        ({"category2_code": " n.a. "}, "category2_code"),
        ({"title": ""}, "title"),
        ({"title": " \t "}, "title"),
        ({"title": "x" * 400}, "title"),
        ({"price": -5}, "price"),
        ({"price": "NaN"}, "price"),
        ({"full_price": float("inf")}, "full_price"),
        ({"full_price": "twelve"}, "full_price"),
        ({"price": 5000}, "price"),
        ({"imageurl": "javascript:alert(1)"}, "imageurl"),
        ({"imageurl": "ftp://host/x.jpg"}, "imageurl"),
        ({"imageurl": "not a url"}, "imageurl"),
        ({"imageurl": "https://"}, "imageurl"),
    ],
)
def test_each_invalid_kind_names_its_field(change: dict, field: str) -> None:
    assert field in [name for name, _ in errors_of({**GOOD, **change})]


def test_every_error_of_a_row_is_collected() -> None:
    found = errors_of({**GOOD, "title": "", "category3_code": "N.A.", "price": -1})
    assert {name for name, _ in found} == {"title", "category3_code", "price"}


def test_demo_rejects_match_manifest_exactly(demo_catalogue, demo_manifest) -> None:
    raw = load_raw_catalogue(str(demo_catalogue.catalogue_path))
    validated, rejected = validate_catalogue(raw)
    expected = {
        entry["row_index"]: entry["field"]
        for entry in demo_manifest["rows"]
        if entry["expected_outcome"] == "invalid"
    }
    assert len(expected) == sum(count for _, count in INVALID_KINDS.values())
    got = rejected.group_by("row_index").agg(pl.col("field")).rows()
    assert {index for index, _ in got} == set(expected)
    for index, fields in got:
        assert expected[index] in fields, (index, fields)
    assert validated.height + len(expected) == raw.height
    assert all(math.isfinite(p) and p >= 0 for p in validated["price"])
