from __future__ import annotations

import json

import polars as pl
import pytest

from curation.catalogue import (
    CatalogueError,
    frame_fingerprint,
    load_raw_catalogue,
    prepare_raw_catalogue,
)
from schemas.tables import CATALOGUE_COLUMNS, RAW_CATALOGUE_SCHEMA

ROWS = [
    {
        "product_code": 1,
        "title": "Check Scarf",
        "category1_code": "WOMAN",
        "category2_code": "SCARVES",
        "category3_code": "SILK SCARVES",
        "imageurl": "https://x.example/1",
        "full_price": 450.0,
        "price": 450.0,
        "brand": "B",
    },
    {
        "product_code": 2,
        "title": "Trench",
        "category1_code": "MAN",
        "category2_code": "COATS",
        "category3_code": "TRENCH COATS",
        "imageurl": "https://x.example/2",
        "full_price": 1990.0,
        "price": 1590.0,
        "brand": "B",
    },
]


@pytest.fixture
def frame() -> pl.DataFrame:
    return pl.DataFrame(ROWS)


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_loader_reads_each_format(tmp_path, frame: pl.DataFrame, suffix: str) -> None:
    path = tmp_path / f"catalogue.{suffix}"
    {"csv": frame.write_csv, "parquet": frame.write_parquet, "jsonl": frame.write_ndjson}[suffix](
        path
    )
    raw = load_raw_catalogue(str(path))
    assert raw.schema == pl.Schema(RAW_CATALOGUE_SCHEMA)
    assert raw["title"].to_list() == ["Check Scarf", "Trench"]
    assert raw["row_index"].to_list() == [0, 1]
    assert raw["website_name"].null_count() == 2  # optional column absent -> null, not an error


def test_loader_reads_a_local_datasets_folder(tmp_path, frame: pl.DataFrame) -> None:
    import datasets

    datasets.Dataset.from_polars(frame).save_to_disk(str(tmp_path / "hf"))
    raw = load_raw_catalogue(str(tmp_path / "hf"))
    assert raw.height == 2 and raw["product_code"].to_list() == ["1", "2"]


def test_loader_reads_through_fsspec_memory(frame: pl.DataFrame) -> None:
    import fsspec

    with fsspec.open("memory://cat/catalogue.csv", "wb") as handle:
        handle.write(frame.write_csv().encode())
    assert load_raw_catalogue("memory://cat/catalogue.csv").height == 2


def test_missing_required_column_is_a_clear_error(tmp_path, frame: pl.DataFrame) -> None:
    path = tmp_path / "c.csv"
    frame.drop("title", "price").write_csv(path)
    with pytest.raises(CatalogueError, match=r"missing required column\(s\) \['title', 'price'\]"):
        load_raw_catalogue(str(path))


@pytest.mark.parametrize("content", [b"", b"   \n"])
def test_empty_file_is_a_clear_error(tmp_path, content: bytes) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(content)
    with pytest.raises(CatalogueError, match="empty"):
        load_raw_catalogue(str(path))


def test_not_found_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(CatalogueError, match="not found"):
        load_raw_catalogue(str(tmp_path / "nope.csv"))


def test_row_ids_are_stable_under_append_and_unique_for_repeats(frame: pl.DataFrame) -> None:
    before = prepare_raw_catalogue(frame)
    grown = prepare_raw_catalogue(pl.concat([frame, frame.head(1)], how="diagonal_relaxed"))
    assert grown["row_id"].to_list()[:2] == before["row_id"].to_list()
    assert grown["row_id"].n_unique() == 3  # an identical repeat still gets its own id


def test_header_bom_and_case_are_normalised(tmp_path, frame: pl.DataFrame) -> None:
    text = frame.rename({"title": "Title"}).write_csv()
    (tmp_path / "c.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_raw_catalogue(str(tmp_path / "c.csv"))["title"].to_list()[0] == "Check Scarf"


def test_fingerprint_follows_content(frame: pl.DataFrame) -> None:
    raw = prepare_raw_catalogue(frame)
    assert frame_fingerprint(raw) == frame_fingerprint(prepare_raw_catalogue(frame))
    edited = prepare_raw_catalogue(frame.with_columns(pl.lit(451.0).alias("price")))
    assert frame_fingerprint(raw) != frame_fingerprint(edited)


def test_demo_catalogue_has_full_dbq_schema(demo_catalogue, demo_manifest) -> None:
    header = demo_catalogue.catalogue_path.read_text().splitlines()[0].split(",")
    assert tuple(header) == CATALOGUE_COLUMNS
    raw = load_raw_catalogue(str(demo_catalogue.catalogue_path))
    assert raw.height == demo_manifest["n_rows"] == 3040
    # Colour variants share a title; classes are skewed.
    assert raw["title"].n_unique() < raw.height * 0.8
    counts = raw["category3_code"].value_counts()["count"]
    assert counts.max() > 5 * counts.min()
    assert json.loads(demo_catalogue.manifest_path.read_text())["version"]
