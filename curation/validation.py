"""Validate raw catalogue rows against the pydantic schema: every row passes or is explained."""

from __future__ import annotations

import polars as pl
from pydantic import ValidationError

from schemas.catalogue_row import CATALOGUE_ROW_ADAPTER, row_errors
from schemas.tables import (
    CATALOGUE_COLUMNS,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
)


def validate_catalogue(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """raw_catalogue -> (validated_products, rejected_rows).

    A row with several problems yields one rejected row per problem, so the report can count
    reasons honestly; a row is either validated or rejected, never both, never neither.
    """
    validated: list[dict] = []
    rejected: list[dict] = []
    for record in raw.select(["row_index", "row_id", *CATALOGUE_COLUMNS]).iter_rows(named=True):
        row_index, row_id = record.pop("row_index"), record.pop("row_id")
        try:
            row = CATALOGUE_ROW_ADAPTER.validate_python(record)
        except ValidationError as error:
            rejected.extend(
                {"row_index": row_index, "row_id": row_id, "field": field, "reason": reason}
                for field, reason in row_errors(error)
            )
            continue
        validated.append({"row_index": row_index, "row_id": row_id, **row.model_dump()})
    return (
        pl.DataFrame(validated, schema=VALIDATED_PRODUCTS_SCHEMA),
        pl.DataFrame(rejected, schema=REJECTED_ROWS_SCHEMA),
    )
