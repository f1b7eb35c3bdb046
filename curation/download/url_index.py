"""The URL-success index: proof of finished downloads that outlives a killed run.

A run killed before its table is saved still leaves, under `{store}/image_index/`, a record
of each image it stored, so the rerun skips those. Records are written in batches: one atomic,
fsynced JSON-lines file per `DownloadPolicy.index_batch_size` successes (or per
`index_flush_s` seconds, whichever comes first), so a kill -9 loses at most the batch being
gathered plus the downloads in flight. The images themselves are stored without a per-file
fsync; one sync of the store's filesystem before each index file makes the batch durable, so
the index never names an image a power cut could lose. Writers never share a file (each
batch has a fresh name), so any number of processes may record into one store at once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import fsspec

from curation.images.sniff import FORMAT_EXTENSIONS
from schemas.atomic import is_temporary, sync_filesystem_of, write_bytes_atomic
from schemas.tables import IMAGE_STATUS_OK

URL_INDEX_DIR = "image_index"
RECORD_FIELDS = ("url", "sha256", "format", "width", "height", "bytes", "attempts", "elapsed_s")


def _index_dir(store_root: str) -> str:
    return f"{str(store_root).rstrip('/')}/{URL_INDEX_DIR}"


class UrlIndexWriter:
    """Gathers the successes of one batch and writes them `batch_size` at a time.

    Called from the one scheduler thread; `add` a row once its image is in the store.
    """

    def __init__(self, store_root: str, batch_size: int, flush_s: float) -> None:
        self._store_root = store_root
        self._dir = _index_dir(store_root)
        self._batch_size = max(1, batch_size)
        self._flush_s = flush_s
        self._pending: list[dict[str, Any]] = []
        self._first_at = 0.0
        self.writes = 0  # durable writes made

    def add(self, row: dict[str, Any]) -> None:
        if row["status"] != IMAGE_STATUS_OK or not isinstance(row["url"], str):
            return
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append({name: row[name] for name in RECORD_FIELDS})
        full = len(self._pending) >= self._batch_size
        if full or time.monotonic() - self._first_at >= self._flush_s:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        # A time-ordered, unique name: concurrent writers never collide, nor overwrite.
        path = f"{self._dir}/{time.time_ns():020d}-{uuid.uuid4().hex}.jsonl"
        lines = "".join(json.dumps(record) + "\n" for record in self._pending)
        sync_filesystem_of(self._store_root)
        write_bytes_atomic(path, lines.encode())
        self.writes += 1
        self._pending.clear()


def _parse_records(data: bytes) -> Iterable[dict[str, Any]]:
    """Records of one index file; malformed lines are skipped (those URLs get fetched)."""
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record


def _as_row(record: dict[str, Any]) -> dict[str, Any] | None:
    row = {name: record.get(name) for name in RECORD_FIELDS}
    if row["format"] not in FORMAT_EXTENSIONS or not isinstance(row["sha256"], str):
        return None
    return {**row, "status": IMAGE_STATUS_OK, "reason": None}


def recorded_rows(store_root: str, urls: Iterable[str | None]) -> dict[str, dict[str, Any]]:
    """The ok rows the index holds for `urls` (their images not yet checked to be stored).

    Reads every index file once (one-record `ab/<sha256>.json` files from before batching
    included); an unreadable file or line is ignored and its URLs fetched again.
    """
    wanted = {url for url in urls if isinstance(url, str)}
    if not wanted:
        return {}
    fs, root = fsspec.core.url_to_fs(_index_dir(store_root))
    try:
        paths = fs.find(root)
    except FileNotFoundError:
        return {}
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        if is_temporary(path.rsplit("/", 1)[-1]):
            continue  # another writer's batch, not yet complete
        try:
            data = fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError):
            continue
        for record in _parse_records(data):
            url = record.get("url")
            if url in wanted and (row := _as_row(record)) is not None:
                found[url] = row
    return found
