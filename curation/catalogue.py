"""Load a catalogue from wherever it lives and give every row a stable identity.

Every column is kept as text: coercion is validation's job, so nothing is silently lost or
rounded before a row has had its chance to be judged (and, if bad, recorded with a reason).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable

import fsspec
import polars as pl

from schemas.tables import CATALOGUE_COLUMNS, RAW_CATALOGUE_SCHEMA, REQUIRED_CATALOGUE_COLUMNS

HF_PREFIX = "hf:"


class CatalogueError(ValueError):
    """The source is not a usable catalogue (unreadable, wrong format, missing columns)."""


def _normalise_column_name(name: str) -> str:
    return name.replace("\ufeff", "").strip().lower()


# Leading bytes of files people upload by mistake instead of the catalogue.
_NOT_A_CATALOGUE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"RIFF", "a RIFF media file (WebP/WAV/AVI)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (an Excel workbook? export it as CSV)"),
    (b"\xd0\xcf\x11\xe0", "a legacy Office document (export it as CSV)"),
    (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
    (b"BZh", "bzip2-compressed data (decompress it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\x7fELF", "an executable"),
)
_TEXT_BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),  # before utf-16-le: it shares the first two bytes
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),  # Excel's "Unicode text" export
    (b"\xfe\xff", "utf-16-be"),
)
# Share of undecodable or control characters above which "text" is really binary junk; a
# latin-1 catalogue read as UTF-8 stays far below it (a few accented letters per line).
_BINARY_SHARE = 0.2
_SEPARATORS = (",", ";", "\t", "|")
_POLARS_DUPLICATE = re.compile(r"^(?P<base>.*)_duplicated_\d+$")


def _as_utf8(data: bytes) -> bytes:
    """UTF-16/32 files (with a BOM) re-encoded as UTF-8, which is all the parsers read."""
    for bom, codec in _TEXT_BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace").encode("utf-8")
    return data


def _refuse_non_catalogue(data: bytes, uri: str) -> None:
    """A clear error for a file that is no table at all, instead of a parser's riddle."""
    for magic, what in _NOT_A_CATALOGUE_MAGIC:
        if data.startswith(magic):
            raise CatalogueError(f"{uri} is {what}, not a catalogue")
    head = data[:8192].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        raise CatalogueError(f"{uri} is HTML/XML (an error or login page?), not a catalogue")
    text = head.decode("utf-8", errors="replace")
    junk = sum(ch == "\ufffd" or (ch < " " and ch not in "\t\r\n") for ch in text)
    if text and junk > _BINARY_SHARE * len(text):
        raise CatalogueError(f"{uri} is binary data, not a text catalogue")


def _normalise_line_endings(data: bytes) -> bytes:
    """Old-Mac bare CRs (alone or mixed with CRLF/LF) become LF; the CSV parser only splits
    rows on LF, so a bare CR would silently glue two rows into one. Files without a bare CR
    are left byte-for-byte alone (their row ids must not move)."""
    if b"\r" not in data.replace(b"\r\n", b""):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _sniff_separator(data: bytes, default: str) -> str:
    """The separator under which the header names the most catalogue columns (European
    spreadsheets export with ';'), falling back to the extension's default."""
    header = data.split(b"\n", 1)[0].decode("utf-8", errors="replace")

    def known(separator: str) -> int:
        names = {_normalise_column_name(name.strip('"')) for name in header.split(separator)}
        return len(names & set(CATALOGUE_COLUMNS))

    best = max(_SEPARATORS, key=known)
    return best if known(best) > known(default) else default


def _read_csv_bytes(data: bytes, uri: str) -> pl.DataFrame:
    data = _normalise_line_endings(data)
    default = "\t" if uri.endswith(".tsv") else ","
    frame = pl.read_csv(
        io.BytesIO(data),
        infer_schema=False,
        separator=_sniff_separator(data, default),
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
    )
    # polars renames a repeated header to `x_duplicated_0`: for a catalogue column that would
    # silently pick one of two competing values, so treat it as the duplicate it is.
    repeated = {
        _normalise_column_name(match["base"])
        for match in map(_POLARS_DUPLICATE.match, frame.columns)
        if match and match["base"] in frame.columns
    }
    if repeated & set(CATALOGUE_COLUMNS):
        raise CatalogueError(
            f"catalogue has duplicated column names: {sorted(repeated & set(CATALOGUE_COLUMNS))}"
        )
    return frame


def _read_table_bytes(data: bytes, uri: str) -> pl.DataFrame:
    lowered = uri.lower().split("?")[0]
    if lowered.endswith(".parquet") or data[:4] == b"PAR1":
        return pl.read_parquet(io.BytesIO(data))
    data = _as_utf8(data)
    _refuse_non_catalogue(data, uri)
    if lowered.endswith((".jsonl", ".ndjson")):
        return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
    if lowered.endswith(".json"):
        return pl.read_json(io.BytesIO(data))
    return _read_csv_bytes(data, lowered)


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
    except CatalogueError:
        raise
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise CatalogueError(f"cannot parse catalogue {uri}: {exc}") from exc


def _as_text_columns(frame: pl.DataFrame) -> pl.DataFrame:
    counts = Counter(_normalise_column_name(name) for name in frame.columns)
    # Two columns that both claim to be `title` leave no right answer; two unnamed or unknown
    # extra columns do no harm (they are dropped below), so only catalogue columns count.
    duplicated = sorted(name for name in CATALOGUE_COLUMNS if counts[name] > 1)
    if duplicated:
        raise CatalogueError(f"catalogue has duplicated column names: {duplicated}")
    frame = frame.select(
        pl.col(name).alias(_normalise_column_name(name))
        for name in frame.columns
        if _normalise_column_name(name) in CATALOGUE_COLUMNS
    )
    missing = [name for name in REQUIRED_CATALOGUE_COLUMNS if name not in frame.columns]
    if missing:
        found = sorted(counts)
        shown = [name[:40] for name in found[:20]] + (["…"] if len(found) > 20 else [])
        raise CatalogueError(f"catalogue is missing required column(s) {missing}; it has {shown}")
    return pl.DataFrame(
        [
            _column_as_text(frame.get_column(name))
            if name in frame.columns
            else pl.Series(name, [None] * frame.height, dtype=pl.String)
            for name in CATALOGUE_COLUMNS
        ]
    )


def _column_as_text(column: pl.Series) -> pl.Series:
    """Any source dtype as text. Deterministic, because the row id hashes it (a repr with a
    memory address would give a new id every run), and never failing on odd dtypes (bytes
    that are not UTF-8, durations, nested lists) so a row reaches validation to be judged."""
    if column.dtype == pl.String:
        return column
    if column.dtype == pl.Binary:
        values = [None if v is None else v.decode("utf-8", "replace") for v in column]
    elif column.dtype.is_nested():
        values = [
            None if v is None else json.dumps(v, default=str, ensure_ascii=False)
            for v in column.to_list()
        ]
    else:
        try:
            return column.cast(pl.String)
        except pl.exceptions.PolarsError:
            values = [None if v is None else str(v) for v in column.to_list()]
    return pl.Series(column.name, values, dtype=pl.String)


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
