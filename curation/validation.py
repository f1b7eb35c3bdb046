"""Validate raw catalogue rows against the pydantic schema: every row passes or is explained.

`schemas.catalogue_row.CatalogueRow` is the source of truth. Running it row by row costs ~20 µs
a row, so `validate_catalogue` first applies the same rules as vectorised polars expressions
and lets pydantic see only the rows those expressions reject or cannot decide. The vectorised
checks are conservative by construction: a row they accept must be one pydantic accepts, with
the same normalised values (tests/curation/test_validation_fast.py holds them to that on the
demo catalogue and on generated hostile rows); a row they doubt costs only speed. Anything
subtle (non-ASCII or control characters, over-long cells, IPv6 brackets in URLs, numbers in
unusual spellings) is left to pydantic rather than re-implemented.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import polars as pl
from pydantic import ValidationError

from schemas.catalogue_row import (
    CATALOGUE_ROW_ADAPTER,
    KNOWN_URL_SCHEMES,
    MAX_CODE_CHARS,
    MAX_TITLE_CHARS,
    MISSING_CATEGORY_MARKERS,
    row_errors,
)
from schemas.tables import (
    CATALOGUE_COLUMNS,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
)

# Cells the vectorised path decides: printable ASCII only. Unicode whitespace, case mapping and
# control characters differ in small ways between Python and Rust; pydantic handles those rows.
_UNDECIDABLE_CHAR = r"[^\x20-\x7e]"
# The model's str_max_length; longer raw cells go to pydantic (cleaning only shortens text).
_MAX_DECIDABLE_CHARS = 2048
# Plain decimal numbers (after commas are removed). float() also takes "1_000", "inf", " 1",
# "١٢"; anything but this shape is left to pydantic.
_PLAIN_NUMBER = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$"
_LOCAL_SCHEMES = frozenset({"file", "memory"})  # the model wants a path, not a host
_TRUE_WORDS = ["1", "1.0", "true", "t", "yes", "y"]
_FALSE_WORDS = ["0", "0.0", "false", "f", "no", "n"]
_CATEGORY_COLUMNS = ("category1_code", "category2_code", "category3_code")
_OPTIONAL_TEXT_COLUMNS = ("website_name", "competence_date", "brand", "itemurl")
_UPPER_CODE_COLUMNS = ("country_code", "currency_code")
_POS = "__position"


def _validate_records(
    frame: pl.DataFrame,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[bool]]:
    """Pydantic, row by row: (validated rows, rejected rows, accepted flag per input row)."""
    validated: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    accepted: list[bool] = []
    for record in frame.select(["row_index", "row_id", *CATALOGUE_COLUMNS]).iter_rows(named=True):
        row_index, row_id = record.pop("row_index"), record.pop("row_id")
        try:
            row = CATALOGUE_ROW_ADAPTER.validate_python(record)
        except ValidationError as error:
            rejected.extend(
                {"row_index": row_index, "row_id": row_id, "field": field, "reason": reason}
                for field, reason in row_errors(error)
            )
            accepted.append(False)
            continue
        validated.append({"row_index": row_index, "row_id": row_id, **row.model_dump()})
        accepted.append(True)
    return validated, rejected, accepted


def validate_catalogue_reference(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The pure-pydantic path: every row through CatalogueRow. Slow; the fast path's oracle."""
    validated, rejected, _ = _validate_records(raw)
    return (
        pl.DataFrame(validated, schema=VALIDATED_PRODUCTS_SCHEMA),
        pl.DataFrame(rejected, schema=REJECTED_ROWS_SCHEMA),
    )


# --------------------------------------------------------------------------- vectorised rules
# Each helper returns (normalised value, ok) expressions for one column. They are only correct
# on decidable rows (printable ASCII): there `str.strip()` and `\s+` mean the space character.


def _clean(name: str) -> pl.Expr:
    """_clean_text: collapse runs of spaces, strip."""
    return pl.col(name).str.replace_all(" {2,}", " ").str.strip_chars(" ")


def _blank_to_null(value: pl.Expr) -> pl.Expr:
    return pl.when(value == "").then(None).otherwise(value)


def _category(name: str) -> tuple[pl.Expr, pl.Expr]:
    value = _clean(name).str.to_uppercase()
    markers = sorted(MISSING_CATEGORY_MARKERS)
    ok = ~value.is_in(markers) & (value.str.len_chars() <= MAX_CODE_CHARS)
    return value, value.is_not_null() & ok


def _product_code(name: str) -> tuple[pl.Expr, pl.Expr]:
    """Stripped, not collapsed; '80123456.0' (an int column round-tripped via float) -> int."""
    value = pl.col(name).str.strip_chars(" ").str.replace(r"^([0-9]+)\.0$", "${1}")
    return value, value.is_not_null() & (value != "")


def _title() -> tuple[pl.Expr, pl.Expr]:
    value = _clean("title")
    return value, value.is_not_null() & (value != "") & (value.str.len_chars() <= MAX_TITLE_CHARS)


def _scheme_prefix(schemes: Iterable[str]) -> str:
    return "(?i)^(?:" + "|".join(sorted(re.escape(s) for s in schemes)) + "):"


# urlsplit's rules as two whole-string patterns (no capture groups: polars runs these as fast
# DFA scans). Network schemes need a non-empty netloc: "//" then a character outside "/?#".
# Local ones need a path that is neither "" nor "/": after an optional "//netloc" there is a
# "/" followed by more path, or (without "//") a first path character, or "/x".
_NETWORK_URL = _scheme_prefix(KNOWN_URL_SCHEMES - _LOCAL_SCHEMES) + r"//[^/?#]"
_LOCAL_URL = _scheme_prefix(_LOCAL_SCHEMES) + r"(?://[^/?#]*/[^?#]|[^/?#]|/[^/?#])"


def _image_url() -> tuple[pl.Expr, pl.Expr]:
    """For URLs without spaces or IPv6 brackets (those go to pydantic and urlsplit)."""
    value = _clean("imageurl")
    shape_ok = value.str.contains(_NETWORK_URL) | value.str.contains(_LOCAL_URL)
    return value, value.is_not_null() & ~value.str.contains(r"[ \[\]]") & shape_ok


def _price(name: str, required: bool) -> tuple[pl.Expr, pl.Expr]:
    """_to_float + ge=0 + finite; blank is null (an error when required)."""
    stripped = pl.col(name).str.strip_chars(" ")
    missing = stripped.is_null() | (stripped == "")
    text = stripped.str.replace_all(",", "", literal=True)
    number = text.cast(pl.Float64, strict=False)
    good = text.str.contains(_PLAIN_NUMBER) & number.is_finite() & (number >= 0)
    value = pl.when(missing).then(None).otherwise(number)
    return value, good if required else (missing | good)


def _discount_flag() -> tuple[pl.Expr, pl.Expr]:
    word = pl.col("flg_discount").str.strip_chars(" ").str.to_lowercase()
    value = pl.when(word.is_in(_TRUE_WORDS)).then(True).when(word.is_in(_FALSE_WORDS)).then(False)
    ok = word.is_null() | (word == "") | word.is_in(_TRUE_WORDS + _FALSE_WORDS)
    return value.otherwise(None), ok


def _decidable(name: str) -> pl.Expr:
    cell = pl.col(name)
    short = cell.str.len_bytes() <= _MAX_DECIDABLE_CHARS
    return cell.is_null() | (~cell.str.contains(_UNDECIDABLE_CHAR) & short)


def _column_rule(name: str) -> tuple[pl.Expr, pl.Expr]:
    """(normalised value, ok) for one column; ok is False where the cell is not decidable."""
    if name in _OPTIONAL_TEXT_COLUMNS:
        value, ok = _blank_to_null(_clean(name)), pl.lit(True)
    elif name in _UPPER_CODE_COLUMNS:
        value, ok = _blank_to_null(_clean(name)).str.to_uppercase(), pl.lit(True)
    elif name in _CATEGORY_COLUMNS:
        value, ok = _category(name)
    elif name == "product_code":
        value, ok = _product_code(name)
    elif name == "title":
        value, ok = _title()
    elif name == "imageurl":
        value, ok = _image_url()
    elif name == "flg_discount":
        value, ok = _discount_flag()
    else:
        value, ok = _price(name, required=name in ("full_price", "price"))
    return value.alias(f"__{name}"), (ok & _decidable(name)).fill_null(False).alias(f"__ok_{name}")


def _judge(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with a position, every column's normalised value (`__name`) and `__ok`.

    Catalogues repeat brand, date, country, categories and flag on every row: a column with
    few distinct values is judged once per distinct value and joined back.
    """
    judged = frame.with_row_index(_POS)
    direct: list[pl.Expr] = []
    for name in CATALOGUE_COLUMNS:
        value, ok = _column_rule(name)
        if judged.get_column(name).n_unique() * 4 > judged.height:
            direct += [value, ok]
            continue
        lookup = judged.select(pl.col(name).unique()).with_columns(value, ok)
        judged = judged.join(lookup, on=name, how="left", nulls_equal=True, maintain_order="left")
    price_ok = pl.col("__price") <= pl.col("__full_price")
    oks = [pl.col(f"__ok_{name}") for name in CATALOGUE_COLUMNS] + [price_ok]
    return judged.with_columns(direct).with_columns(__ok=pl.all_horizontal(oks).fill_null(False))


def _all_text(raw: pl.DataFrame) -> pl.DataFrame | None:
    """The catalogue columns as text, or None when some column holds other types (the
    vectorised rules are written for text cells; such a frame takes the reference path)."""
    columns = ["row_index", "row_id", *CATALOGUE_COLUMNS]
    frame = raw.select(columns)
    if any(frame.schema[name] not in (pl.String, pl.Null) for name in CATALOGUE_COLUMNS):
        return None
    return frame.with_columns(pl.col(name).cast(pl.String) for name in CATALOGUE_COLUMNS)


def validate_catalogue(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """raw_catalogue -> (validated_products, rejected_rows), as validate_catalogue_reference.

    A row with several problems yields one rejected row per problem, so the report can count
    reasons honestly; a row is either validated or rejected, never both, never neither. Both
    tables keep the source order.
    """
    frame = _all_text(raw)
    if frame is None:
        return validate_catalogue_reference(raw)
    judged = _judge(frame)
    fast = judged.filter(pl.col("__ok")).select(
        _POS,
        "row_index",
        "row_id",
        *(pl.col(f"__{name}").alias(name) for name in CATALOGUE_COLUMNS),
    )
    doubtful = judged.filter(~pl.col("__ok"))
    validated, rejected, accepted = _validate_records(doubtful)
    slow = pl.DataFrame(validated, schema=VALIDATED_PRODUCTS_SCHEMA).with_columns(
        doubtful.get_column(_POS).filter(pl.Series(accepted, dtype=pl.Boolean))
    )
    merged = pl.concat(
        [fast.cast(VALIDATED_PRODUCTS_SCHEMA), slow.select(fast.columns)], how="vertical"
    )
    return (
        merged.sort(_POS).drop(_POS).select(list(VALIDATED_PRODUCTS_SCHEMA)),
        pl.DataFrame(rejected, schema=REJECTED_ROWS_SCHEMA),
    )
