"""Immutable dataset snapshots: one folder per distinct dataset content, never overwritten.

    {PIPELINE_DATA_DIR}/hf_dataset/
        LATEST                      the newest snapshot's fingerprint (a pointer for people)
        {fingerprint}/              datasets.DatasetDict.save_to_disk + README.md card
            rows.parquet            one row per sample (schemas.lineage.TRAINING_ROWS_SCHEMA)
            ledgers/{version}.parquet   the curation ledgers this content was built with
            snapshot.json           written last: its presence means the snapshot is complete

The fingerprint hashes the export format and the content of its inputs (splits, variants), so
identical content reuses the folder (nothing is re-encoded) and any change gets a new one.
Checkpoints point at their snapshot; `garbage_collect` removes only unreferenced ones.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import fsspec
import polars as pl

from curation.catalogue import frame_fingerprint
from curation.export import build_dataset_dict, save_dataset_dict
from curation.images.store import exists
from schemas.atomic import write_bytes_atomic
from schemas.lineage import SNAPSHOT_INFO_FILE, SNAPSHOT_ROWS_FILE
from schemas.tables import SPLIT_NAMES
from schemas.values import TRAINING_ROWS_SCHEMA

# Bump when the exported features or layout change: old snapshots stay valid for old checkpoints.
EXPORT_FORMAT = "hf-datasetdict-v1"
LATEST_FILE = "LATEST"
LEDGERS_DIR = "ledgers"


@dataclass(frozen=True)
class SnapshotInfo:
    uri: str
    fingerprint: str
    split_sizes: dict[str, int]
    rows_uri: str
    ledger_uri: str
    reused: bool


def join(*parts: str) -> str:
    return "/".join([parts[0].rstrip("/"), *(p.strip("/") for p in parts[1:])])


def snapshot_fingerprint(content_versions: Mapping[str, str]) -> str:
    payload = EXPORT_FORMAT + "".join(
        f"|{k}={content_versions[k]}" for k in sorted(content_versions)
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _image_columns() -> list[pl.Expr]:
    differs = pl.col("normalised_sha256") != pl.col("sha256")
    return [
        pl.col("sha256").alias("image_sha256"),
        "image_path",
        pl.when(differs).then(pl.col("normalised_sha256")).alias("normalised_sha256"),
        pl.when(differs).then(pl.col("normalised_path")).alias("normalised_path"),
    ]


def snapshot_rows(splits: pl.DataFrame, variants: pl.DataFrame) -> pl.DataFrame:
    """The manifest, in the DatasetDict's order: per split the real rows, train then variants."""
    real = splits.select(
        "row_id",
        "row_index",
        "split",
        pl.lit(False).alias("is_synthetic"),
        pl.lit(None, pl.String).alias("parent_row_id"),
        *_image_columns(),
    )
    parent_index = splits.select(pl.col("row_id").alias("parent_row_id"), "row_index")
    synthetic = variants.join(parent_index, on="parent_row_id", how="left").select(
        pl.col("variant_id").alias("row_id"),
        "row_index",
        pl.lit("train").alias("split"),
        pl.lit(True).alias("is_synthetic"),
        "parent_row_id",
        *_image_columns(),
    )
    parts = []
    for name in SPLIT_NAMES:
        parts.append(real.filter(pl.col("split") == name))
        if name == "train":
            parts.append(synthetic)
    return pl.concat(parts).cast(TRAINING_ROWS_SCHEMA)  # type: ignore[arg-type]


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def read_parquet(uri: str) -> pl.DataFrame:
    with fsspec.open(uri, "rb") as handle:
        return pl.read_parquet(handle)


def read_json(uri: str) -> dict | None:
    if not exists(uri):
        return None
    with fsspec.open(uri, "r", encoding="utf-8") as handle:
        return json.load(handle)


def publish_snapshot(
    root: str,
    splits: pl.DataFrame,
    variants: pl.DataFrame,
    ledger: pl.DataFrame,
    card: Callable[[], str],
) -> SnapshotInfo:
    """Write (or reuse) the snapshot of this content under `root`, point LATEST at it."""
    fingerprint = snapshot_fingerprint(
        {
            "dataset_splits": frame_fingerprint(splits),
            "synthetic_variants": frame_fingerprint(variants),
        }
    )
    uri = join(root, fingerprint)
    info = read_json(join(uri, SNAPSHOT_INFO_FILE))
    reused = info is not None
    if info is None:
        dsd = build_dataset_dict(splits, variants)
        save_dataset_dict(dsd, uri, card())
        write_bytes_atomic(
            join(uri, SNAPSHOT_ROWS_FILE), parquet_bytes(snapshot_rows(splits, variants))
        )
        info = {
            "fingerprint": fingerprint,
            "export_format": EXPORT_FORMAT,
            "split_sizes": {name: int(n) for name, n in dsd.num_rows.items()},
        }
    ledger_uri = join(uri, LEDGERS_DIR, f"{frame_fingerprint(ledger)}.parquet")
    if not exists(ledger_uri):
        write_bytes_atomic(ledger_uri, parquet_bytes(ledger))
    if not reused:
        write_bytes_atomic(join(uri, SNAPSHOT_INFO_FILE), json.dumps(info, indent=2).encode())
    write_bytes_atomic(join(root, LATEST_FILE), f"{fingerprint}\n".encode())
    return SnapshotInfo(
        uri=uri,
        fingerprint=fingerprint,
        split_sizes=dict(info["split_sizes"]),
        rows_uri=join(uri, SNAPSHOT_ROWS_FILE),
        ledger_uri=ledger_uri,
        reused=reused,
    )


def latest_snapshot(root: str) -> str | None:
    """The folder LATEST points at (what a person opens), or None before the first build."""
    pointer = join(root, LATEST_FILE)
    if not exists(pointer):
        return None
    with fsspec.open(pointer, "r") as handle:
        return join(root, handle.read().strip())
