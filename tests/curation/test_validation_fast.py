"""The vectorised validation path must agree exactly with the pure-pydantic reference."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from curation import validation
from curation.catalogue import load_raw_catalogue
from curation.validation import validate_catalogue, validate_catalogue_reference
from demo import DemoCatalogue
from schemas.tables import CATALOGUE_COLUMNS, RAW_CATALOGUE_SCHEMA

# Mostly printable ASCII (what the vectorised path decides), plus the characters where Python
# and polars could disagree: tabs, newlines, NUL, NBSP, em space, non-ASCII letters and digits.
ALPHABET = st.sampled_from(
    list("abcXYZ019 .,-+:/?#[]_eE") + ["\t", "\n", "\x00", "\x85", "\xa0", "\u2003", "é", "ß", "١"]
)
FREE_TEXT = st.text(ALPHABET, max_size=12)


def _cell(*edge_cases: str) -> st.SearchStrategy[str | None]:
    return st.one_of(st.none(), st.sampled_from(edge_cases), FREE_TEXT)


CATEGORY = _cell(
    "WOMAN",
    "man",
    " Bags  Small ",
    "N.A.",
    "na",
    "n/a",
    "None",
    "NULL",
    "",
    "  ",
    "A" * 80,
    "A" * 81,
    "\tKIDS",
)
PRODUCT_CODE = _cell("80123456", "80123456.0", " 42 ", "", " ", "12.50", "8 0", "007.0", "1.00")
TITLE = _cell(
    "Check Scarf",
    "  Check   Scarf ",
    "",
    "   ",
    "x" * 300,
    "x" * 301,
    " x" * 151,
    "Caf\u00e9 Tote",
    "a\tb",
)
PRICE_EDGES = (
    "0",
    "-0.0",
    "1,250.00",
    "990",
    " 990 ",
    "1e3",
    "1E+400",
    "nan",
    "NaN",
    "inf",
    "-5",
    "1_000",
    ".5",
    "5.",
    "+3",
    "1.2.3",
    ",",
    "0x10",
    "\u0661\u0662",
    ", 5",
    "1 000",
)
PRESENT_PRICE = st.one_of(
    st.sampled_from(PRICE_EDGES),
    FREE_TEXT.map(lambda text: text if text.strip() else f"{text}1"),
    st.floats(min_value=0, max_value=1e6, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.integers(-10, 5000).map(str),
)
PRICE = st.one_of(st.none(), st.just(""), st.just("  "), PRESENT_PRICE)
URL = st.one_of(
    _cell(
        "http://a/b",
        "https://cdn.example/p.jpg",
        "file:///tmp/a",
        "file:/",
        "file://host",
        "file:x",
        "memory://x",
        "javascript:alert(1)",
        "data:image/png;base64,xx",
        "ftp://h/x",
        "http://",
        "http:///x",
        "HTTP://A/B",
        "http://[::1]/x",
        "http://[bad/x",
        "http://a b/c",
        "  http://a/b  ",
        "s3://bucket/k",
        "//host/path",
        "http:x",
        "1http://a",
        "http://a?b",
        "http://#x",
        "file:///",
        "file://h/?q",
        "gs://b/o#f",
    ),
    st.builds(
        lambda scheme, rest: f"{scheme}{rest}",
        st.sampled_from(["http://", "https:", "file:", "S3://", "memory:", "x-y+z.1:", ""]),
        FREE_TEXT,
    ),
)
FLAG = _cell("1", "0", "1.0", "0.0", "true", "True", "T", "yes", "n", "NO", "maybe", "", " ", "2")
COLUMN_STRATEGIES = {
    **dict.fromkeys(CATALOGUE_COLUMNS, _cell("Maison Demo", "  spaced   out ", "", "usa")),
    **dict.fromkeys(("category1_code", "category2_code", "category3_code"), CATEGORY),
    "product_code": PRODUCT_CODE,
    "title": TITLE,
    "imageurl": URL,
    **dict.fromkeys(("full_price", "price", "full_price_eur", "price_eur"), PRICE),
    "flg_discount": FLAG,
}
ROW = st.fixed_dictionaries(COLUMN_STRATEGIES)


def _spellings(x: float) -> st.SearchStrategy[str]:
    return st.sampled_from([f"{x:,.2f}", f"{x:.1f}", f"{x:g}", f"{int(x)}", f" {x} ", f"{x:e}"])


def _number(low: float, high: float) -> st.SearchStrategy[str]:
    return st.floats(low, high, allow_nan=False).flatmap(_spellings)


# Rows the vectorised path should accept (so its normalisation is what gets compared), each
# with up to two cells replaced by hostile ones.
VALID_CELLS = {
    **dict.fromkeys(CATALOGUE_COLUMNS, st.sampled_from([None, "", "  Maison   Demo ", "usa"])),
    **dict.fromkeys(
        ("category1_code", "category2_code", "category3_code"),
        st.sampled_from(["WOMAN", " man ", "Bags  Small", "tote bags", "A" * 80]),
    ),
    "product_code": st.sampled_from(["80123456", "80123456.0", " 42 ", "007.0", "12.50", "8 0"]),
    "title": st.sampled_from(["Check Scarf", "  Check   Scarf ", "x" * 300, " x" * 150]),
    "imageurl": st.sampled_from(
        [
            "http://a/b",
            "https://cdn.example/p.jpg?w=1",
            "file:///tmp/a",
            "file://host/x",
            "file:x",
            "memory://x",
            "HTTP://A/B",
            "  http://a/b  ",
            "s3://bucket/k",
            "gs://b/o#f",
        ]
    ),  # fmt: skip
    "full_price": _number(1000, 1e6),
    "price": _number(0, 999),
    **dict.fromkeys(
        ("full_price_eur", "price_eur"),
        st.one_of(st.sampled_from([None, "", " "]), _number(0, 1e6)),
    ),
    "flg_discount": st.sampled_from(["1", "0", "1.0", "0.0", "True", "T", "yes", "NO", "", None]),
}


@st.composite
def mostly_valid_row(draw: st.DrawFn) -> dict[str, str | None]:
    row = draw(st.fixed_dictionaries(VALID_CELLS))
    for name in draw(st.lists(st.sampled_from(CATALOGUE_COLUMNS), max_size=2, unique=True)):
        row[name] = draw(COLUMN_STRATEGIES[name])
    return row


def _raw(rows: list[dict[str, str | None]]) -> pl.DataFrame:
    records = [
        {"row_index": i, "row_id": f"r{i}", **{name: row[name] for name in CATALOGUE_COLUMNS}}
        for i, row in enumerate(rows)
    ]
    return pl.DataFrame(records, schema=RAW_CATALOGUE_SCHEMA)


def _assert_same(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    fast_ok, fast_bad = validate_catalogue(raw)
    ref_ok, ref_bad = validate_catalogue_reference(raw)
    assert_frame_equal(fast_ok, ref_ok)
    assert set(fast_bad.select("row_id", "field").iter_rows()) == set(
        ref_bad.select("row_id", "field").iter_rows()
    )
    assert_frame_equal(fast_bad, ref_bad)  # same messages, same order
    return fast_ok, fast_bad


@pytest.fixture(scope="module")
def demo_raw(demo_catalogue: DemoCatalogue) -> pl.DataFrame:
    return load_raw_catalogue(str(demo_catalogue.catalogue_path))


def test_demo_catalogue_matches_reference_and_pydantic_sees_only_bad_rows(
    demo_raw: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = validation._validate_records

    def counting(frame: pl.DataFrame):  # type: ignore[no-untyped-def]
        seen.append(frame.height)
        return original(frame)

    monkeypatch.setattr(validation, "_validate_records", counting)
    fast_ok, fast_bad = validate_catalogue(demo_raw)
    assert seen == [fast_bad["row_id"].n_unique()]  # every valid row took the fast path
    monkeypatch.undo()
    _assert_same(demo_raw)
    assert fast_ok.height + fast_bad["row_id"].n_unique() == demo_raw.height
    assert fast_bad.height > 0


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(rows=st.lists(st.one_of(mostly_valid_row(), ROW), min_size=1, max_size=25))
def test_hostile_rows_match_reference(rows: list[dict[str, str | None]]) -> None:
    _assert_same(_raw(rows))


def _valid_row(**changes: str | None) -> dict[str, str | None]:
    row: dict[str, str | None] = dict.fromkeys(CATALOGUE_COLUMNS, None)
    row.update(
        category1_code="woman",
        category2_code=" bags ",
        category3_code="TOTE  BAGS",
        product_code="80123456.0",
        title="  The   Tote ",
        imageurl="https://cdn.example/a.jpg",
        full_price="1,250.00",
        price="990",
        full_price_eur="1162.5",
        price_eur="920.70",
        flg_discount="Yes",
    )
    row.update(changes)
    return row


def test_fast_path_normalises_like_the_model() -> None:
    ok, bad = _assert_same(_raw([_valid_row(), _valid_row(price="1_000", title="Caf\u00e9")]))
    assert bad.is_empty()
    first = ok.row(0, named=True)
    assert (first["category2_code"], first["category3_code"]) == ("BAGS", "TOTE BAGS")
    assert (first["product_code"], first["title"]) == ("80123456", "The Tote")
    assert (first["full_price"], first["price"], first["flg_discount"]) == (1250.0, 990.0, True)
    assert ok.row(1, named=True)["price"] == 1000.0  # decided by pydantic, merged in order


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"category3_code": "N.A."}, "category3_code"),
        ({"title": "   "}, "title"),
        ({"price": "NaN"}, "price"),
        ({"price": "-1"}, "price"),
        ({"price": "2000"}, "price"),  # above full_price: a model-level error
        ({"imageurl": "javascript:alert(1)"}, "imageurl"),
        ({"imageurl": "file:///"}, "imageurl"),
        ({"flg_discount": "maybe"}, "flg_discount"),
    ],
)
def test_fast_path_rejects_what_the_model_rejects(change: dict[str, str], field: str) -> None:
    ok, bad = _assert_same(_raw([_valid_row(), _valid_row(**change)]))
    assert ok["row_id"].to_list() == ["r0"]
    assert bad["field"].to_list() == [field]


def test_non_text_columns_take_the_reference_path() -> None:
    rows = [_valid_row(full_price="1250"), _valid_row(full_price="1250", price="5")]
    raw = _raw(rows).with_columns(pl.col("full_price").cast(pl.Float64))
    ok, _ = _assert_same(raw)
    assert ok["full_price"].to_list() == [1250.0, 1250.0]


def test_empty_catalogue() -> None:
    ok, bad = _assert_same(_raw([]))
    assert ok.is_empty() and bad.is_empty()


def test_blank_optional_price_is_null() -> None:
    ok, _ = _assert_same(_raw([_valid_row(price_eur="", full_price_eur=None)]))
    assert ok["price_eur"].to_list() == [None]
