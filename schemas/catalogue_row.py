"""Pydantic model of one catalogue row: types, constraints and normalisation in one place."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

# Schemes a catalogue may name; which of them the downloader actually fetches is the operator's
# call (DownloadPolicy.allowed_schemes). Anything else (javascript:, data:, ftp:) is invalid.
KNOWN_URL_SCHEMES: frozenset[str] = frozenset(
    {"http", "https", "file", "s3", "gs", "gcs", "az", "abfs", "abfss", "memory"}
)
# DBQ writes "N.A." for an unknown category; as a training label it is useless.
MISSING_CATEGORY_MARKERS: frozenset[str] = frozenset({"N.A.", "NA", "N/A", "NONE", "NULL", ""})
MAX_TITLE_CHARS = 300
MAX_CODE_CHARS = 80
_WHITESPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _blank_to_none(value: Any) -> Any:
    """CSV has no null: an empty or whitespace-only cell means 'missing'."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _clean_text(value: Any) -> Any:
    """Strip, drop control characters and collapse runs of whitespace to one space."""
    if isinstance(value, str):
        return _WHITESPACE.sub(" ", _CONTROL.sub(" ", value)).strip()
    return value


def _to_float(value: Any) -> Any:
    """Accept numbers written as text ('1,250.00', ' 990 ') but nothing that is not a number."""
    value = _blank_to_none(value)
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            value = float(text)
        except ValueError as exc:
            raise ValueError(f"not a number: {value[:40]!r}") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return value


def _to_bool(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "1.0", "true", "t", "yes", "y"}:
            return True
        if lowered in {"0", "0.0", "false", "f", "no", "n"}:
            return False
        raise ValueError(f"not a boolean: {value[:40]!r}")
    return value


def _product_code_to_str(value: Any) -> Any:
    """DBQ stores product_code as int in one dataset and str in its siblings: keep it as text."""
    value = _blank_to_none(value)
    if isinstance(value, bool):
        raise ValueError("product_code must be a code, not a boolean")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise ValueError(f"not a product code: {value!r}")
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        # '80123456.0' is how pandas/CSV round-trips an integer column with nulls.
        return text[:-2] if re.fullmatch(r"\d+\.0", text) else text
    return value


Price = Annotated[float, BeforeValidator(_to_float), Field(ge=0, allow_inf_nan=False)]
OptionalPrice = Annotated[
    Annotated[float, Field(ge=0, allow_inf_nan=False)] | None, BeforeValidator(_to_float)
]
Text = Annotated[str, BeforeValidator(_clean_text)]
OptionalText = Annotated[str | None, BeforeValidator(_blank_to_none), BeforeValidator(_clean_text)]


def _category_code(value: Any) -> Any:
    value = _clean_text(value)
    if isinstance(value, str):
        value = value.upper()
        if value in MISSING_CATEGORY_MARKERS:
            raise ValueError(f"category is missing ({value or 'empty'})")
    return value


CategoryCode = Annotated[
    str, BeforeValidator(_category_code), Field(min_length=1, max_length=MAX_CODE_CHARS)
]
UpperCode = Annotated[
    str | None,
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    BeforeValidator(_blank_to_none),
    BeforeValidator(_clean_text),
]


class CatalogueRow(BaseModel):
    """One product row after validation: what every later stage may rely on."""

    model_config = ConfigDict(extra="ignore", str_max_length=2048)

    website_name: OptionalText = None
    competence_date: OptionalText = None
    country_code: UpperCode = None
    currency_code: UpperCode = None
    brand: OptionalText = None
    category1_code: CategoryCode
    category2_code: CategoryCode
    category3_code: CategoryCode
    product_code: Annotated[str, BeforeValidator(_product_code_to_str), Field(min_length=1)]
    title: Text
    itemurl: OptionalText = None
    imageurl: Annotated[str, BeforeValidator(_clean_text)]
    full_price: Price
    price: Price
    full_price_eur: OptionalPrice = None
    price_eur: OptionalPrice = None
    flg_discount: Annotated[bool | None, BeforeValidator(_to_bool)] = None

    @field_validator("title")
    @classmethod
    def _title_is_usable(cls, value: str) -> str:
        if not value:
            raise ValueError("title is empty")
        if len(value) > MAX_TITLE_CHARS:
            raise ValueError(f"title is {len(value)} chars, over {MAX_TITLE_CHARS}")
        return value

    @field_validator("imageurl")
    @classmethod
    def _url_is_fetchable(cls, value: str) -> str:
        parts = urlsplit(value)
        scheme = parts.scheme.lower()
        if scheme not in KNOWN_URL_SCHEMES:
            raise ValueError(f"URL scheme not allowed: {scheme or 'none'!r}")
        if scheme == "file" or scheme == "memory":
            if not parts.path or parts.path == "/":
                raise ValueError("URL has no path")
        elif not parts.netloc:
            raise ValueError("URL has no host")
        if any(ch.isspace() for ch in value):
            raise ValueError("URL contains whitespace")
        return value

    @model_validator(mode="after")
    def _price_not_above_full_price(self) -> CatalogueRow:
        if self.price > self.full_price:
            raise ValueError(f"price {self.price} is above full_price {self.full_price}")
        return self


# One adapter, built once: pydantic compiles the validator at construction time.
CATALOGUE_ROW_ADAPTER: TypeAdapter[CatalogueRow] = TypeAdapter(CatalogueRow)


def row_errors(error: ValidationError) -> list[tuple[str, str]]:
    """Every (field, reason) of a failed row; model-level errors are attributed to `price`."""
    found: list[tuple[str, str]] = []
    for item in error.errors(include_url=False):
        location = item.get("loc") or ()
        field = str(location[0]) if location else "price"
        message = str(item.get("msg", "invalid"))
        found.append((field, message.removeprefix("Value error, ")))
    return found
