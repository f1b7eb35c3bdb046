"""Load a catalogue from wherever it lives and give every row a stable identity.

Every column is kept as text: coercion is validation's job, so nothing is silently lost or
rounded before a row has had its chance to be judged (and, if bad, recorded with a reason).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable

import fsspec
import polars as pl

from schemas.tables import CATALOGUE_COLUMNS, RAW_CATALOGUE_SCHEMA, REQUIRED_CATALOGUE_COLUMNS

HF_PREFIX = "hf:"
DEMO_URI = "demo"  # the embedded demo catalogue, generated locally on first use


class CatalogueError(ValueError):
    """The source is not a usable catalogue (unreadable, wrong format, missing columns)."""


def _normalise_column_name(name: str) -> str:
    return name.replace("\ufeff", "").strip().lower()


def _read_table_bytes(data: bytes, uri: str) -> pl.DataFrame:
    lowered = uri.lower().split("?")[0]
    if lowered.endswith(".parquet"):
        return pl.read_parquet(io.BytesIO(data))
    if lowered.endswith((".jsonl", ".ndjson")):
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    if lowered.endswith(".json"):
        return pl.read_json(io.BytesIO(data))
    separator = "\t" if lowered.endswith(".tsv") else ","
    return pl.read_csv(
        io.BytesIO(data),
        infer_schema=False,
        separator=separator,
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
    )


def _read_datasets(uri: str) -> pl.DataFrame:
    """A Hugging Face dataset: `hf:<name>` from the hub, or a `save_to_disk` folder."""
    import datasets  # imported here: only this path needs it

    if uri.startswith(HF_PREFIX):
        loaded = datasets.load_dataset(uri.removeprefix(HF_PREFIX), split="train")
    else:
        loaded = datasets.load_from_disk(uri)
        if isinstance(loaded, datasets.DatasetDict):
            loaded = datasets.concatenate_datasets([loaded[name] for name in loaded])
    return pl.from_arrow(loaded.data.table)


def _is_datasets_folder(uri: str) -> bool:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs.isdir(path) and any(
        fs.exists(f"{path.rstrip('/')}/{marker}")
        for marker in ("dataset_dict.json", "state.json", "dataset_info.json")
    )


def read_catalogue_frame(uri: str) -> pl.DataFrame:
    """Read CSV / TSV / Parquet / JSON(L) from any fsspec URL, or a Hugging Face dataset."""
    try:
        if uri.startswith(HF_PREFIX) or _is_datasets_folder(uri):
            return _read_datasets(uri)
        with fsspec.open(uri, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise CatalogueError(f"catalogue not found: {uri}") from exc
    if not data.strip():
        raise CatalogueError(f"catalogue is empty: {uri}")
    try:
        return _read_table_bytes(data, uri)
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise CatalogueError(f"cannot parse catalogue {uri}: {exc}") from exc


def _as_text_columns(frame: pl.DataFrame) -> pl.DataFrame:
    renamed = {name: _normalise_column_name(name) for name in frame.columns}
    duplicated = [name for name, n in Counter(renamed.values()).items() if n > 1]
    if duplicated:
        raise CatalogueError(f"catalogue has duplicated column names: {sorted(duplicated)}")
    frame = frame.rename(renamed)
    missing = [name for name in REQUIRED_CATALOGUE_COLUMNS if name not in frame.columns]
    if missing:
        raise CatalogueError(
            f"catalogue is missing required column(s) {missing}; it has {sorted(frame.columns)}"
        )
    columns = []
    for name in CATALOGUE_COLUMNS:
        if name not in frame.columns:
            columns.append(pl.lit(None, dtype=pl.String).alias(name))
        elif frame.schema[name] == pl.String:
            columns.append(pl.col(name))
        elif frame.schema[name].is_nested():
            columns.append(pl.col(name).map_elements(str, return_dtype=pl.String))
        else:
            columns.append(pl.col(name).cast(pl.String))
    return frame.select(columns)


def stable_row_ids(rows: Iterable[tuple]) -> list[str]:
    """Content hash of each row; repeats of identical content get an occurrence suffix.

    The id depends on the row's values only (not its position), so appending or reordering
    the catalogue keeps every existing row's id, which keeps its split and its lineage.
    """
    seen: Counter[str] = Counter()
    ids = []
    for row in rows:
        text = "\x1f".join("\x00" if value is None else str(value) for value in row)
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        occurrence = seen[digest]
        seen[digest] += 1
        ids.append(digest if occurrence == 0 else f"{digest}-{occurrence}")
    return ids


def prepare_raw_catalogue(frame: pl.DataFrame) -> pl.DataFrame:
    """Source frame -> raw_catalogue: text columns, `row_index` and `row_id` in front."""
    text = _as_text_columns(frame)
    ids = stable_row_ids(text.iter_rows())
    return text.with_columns(
        pl.int_range(0, text.height, dtype=pl.Int64).alias("row_index"),
        pl.Series("row_id", ids, dtype=pl.String),
    ).select(list(RAW_CATALOGUE_SCHEMA))


def load_raw_catalogue(uri: str) -> pl.DataFrame:
    return prepare_raw_catalogue(read_catalogue_frame(uri))


def frame_fingerprint(frame: pl.DataFrame, columns: Iterable[str] | None = None) -> str:
    """A content hash of a frame (row order included): Dagster data versions come from it, so
    an identical catalogue gives an identical version and nothing downstream goes stale."""
    selected = frame.select(list(columns)) if columns is not None else frame
    digest = hashlib.sha256()
    digest.update(repr(selected.schema).encode())
    for batch in selected.iter_slices(50_000):
        for column in batch.columns:
            hashed = batch[column].hash(seed=0, seed_1=1, seed_2=2, seed_3=3)
            digest.update(hashed.to_numpy().tobytes())
    return digest.hexdigest()[:32]


def resolve_catalogue_uri(uri: str, data_dir: str) -> str:
    """`demo` becomes the generated demo CSV: next to the data when the data dir is local,
    otherwise in a local cache (the demo's images are read through file:// URLs)."""
    if uri.strip().lower() != DEMO_URI:
        return uri
    from pathlib import Path

    from curation.demo import build_demo_catalogue

    fs, path = fsspec.core.url_to_fs(data_dir)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local = "file" in protocols or "local" in protocols
    root = Path(path) / "demo_catalogue" if local else Path.home() / ".cache/catalogue-vlm/demo"
    return str(build_demo_catalogue(root).catalogue_path)


def source_fingerprint(uri: str) -> str:
    """A cheap-to-recompute identity of the source's content (not its mtime): an unchanged
    file is not "new", a one-row edit is. Folders hash every file; hub datasets their name."""
    if uri.startswith(HF_PREFIX):
        return hashlib.sha256(uri.encode()).hexdigest()[:32]
    fs, path = fsspec.core.url_to_fs(uri)
    files = sorted(fs.find(path)) if fs.isdir(path) else [path]
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.removeprefix(path).encode())
        with fs.open(name, "rb") as handle:
            for block in iter(lambda h=handle: h.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]
