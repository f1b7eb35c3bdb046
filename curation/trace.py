"""Answers "what trained this checkpoint?" and "which checkpoints did this row train?" from the
files each checkpoint keeps beside itself (lineage.json, training_rows.parquet) and the snapshot
it names, so the answer holds after any number of rebuilds. No Dagster instance is consulted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from curation.images.store import exists
from curation.snapshots import join, read_parquet
from schemas.lineage import LINEAGE_FILE, SNAPSHOT_INFO_FILE, TRAINING_ROWS_FILE
from schemas.tables import OUTCOME_CURATED

MODELS_DIR = "models"


@dataclass(frozen=True)
class Checkpoint:
    model_dir: str
    lineage: dict[str, Any]

    @property
    def manifest_uri(self) -> str:
        return self.lineage.get("training_rows") or join(self.model_dir, TRAINING_ROWS_FILE)

    @property
    def snapshot_uri(self) -> str | None:
        return (self.lineage.get("dataset_snapshot") or {}).get("uri")


def read_checkpoint(model_dir: str) -> Checkpoint:
    with fsspec.open(join(model_dir, LINEAGE_FILE), "r", encoding="utf-8") as handle:
        return Checkpoint(model_dir.rstrip("/"), json.load(handle))


def list_checkpoints(data_dir: str) -> list[Checkpoint]:
    """Every folder under {data_dir}/models/ with a lineage.json (finished training runs)."""
    fs, root = fsspec.core.url_to_fs(join(data_dir, MODELS_DIR))
    if not fs.exists(root):
        return []
    folders = [path.rsplit("/", 1)[0] for path in sorted(fs.glob(f"{root}/*/{LINEAGE_FILE}"))]
    if not isinstance(fs, LocalFileSystem):
        folders = [fs.unstrip_protocol(folder) for folder in folders]
    return [read_checkpoint(folder) for folder in folders]


def find_checkpoint(data_dir: str, model: str) -> Checkpoint:
    """A model folder (path or URL), a folder name under models/, or a Dagster run id (or an
    unambiguous prefix of either)."""
    if exists(join(model, LINEAGE_FILE)):
        return read_checkpoint(model)
    matches = [c for c in list_checkpoints(data_dir) if _names(c, model)]
    if len(matches) != 1:
        what = "no checkpoint" if not matches else f"{len(matches)} checkpoints"
        raise LookupError(f"{what} under {join(data_dir, MODELS_DIR)} match {model!r}")
    return matches[0]


def _names(checkpoint: Checkpoint, model: str) -> bool:
    folder = checkpoint.model_dir.rsplit("/", 1)[-1]  # the root run id's first 12 characters
    run_id = str(checkpoint.lineage.get("dagster_run_id") or "")
    return folder.startswith(model) or run_id.startswith(model) or model.startswith(folder)


def manifest(checkpoint: Checkpoint) -> pl.DataFrame:
    return read_parquet(checkpoint.manifest_uri)


def split_counts(rows: pl.DataFrame) -> pl.DataFrame:
    """Samples per split, real and synthetic."""
    return (
        rows.group_by("split")
        .agg(
            (~pl.col("is_synthetic")).sum().alias("real"),
            pl.col("is_synthetic").sum().alias("synthetic"),
            pl.len().alias("samples"),
        )
        .sort(pl.col("split").replace_strict({"train": 0, "validation": 1, "test": 2}, default=3))
    )


def ledger_of(checkpoint: Checkpoint) -> pl.DataFrame | None:
    uri = checkpoint.lineage.get("curation_ledger")
    return read_parquet(uri) if uri and exists(uri) else None


def outcome_counts(ledger: pl.DataFrame) -> pl.DataFrame:
    return ledger.group_by("outcome").len("rows").sort("rows", descending=True)


def excluded_rows(ledger: pl.DataFrame) -> pl.DataFrame:
    """Where the ledger says each row that did not train went, and why."""
    return ledger.filter(pl.col("outcome") != OUTCOME_CURATED).select(
        "row_index", "row_id", "outcome", "reason", "duplicate_of"
    )


def snapshot_loads(checkpoint: Checkpoint) -> dict[str, int] | None:
    """Rows per split of the checkpoint's snapshot when it still loads, else None."""
    uri = checkpoint.snapshot_uri
    if not uri or not exists(join(uri, SNAPSHOT_INFO_FILE)):
        return None
    import datasets

    return {name: split.num_rows for name, split in datasets.load_from_disk(uri).items()}


def checkpoints_for_row(data_dir: str, row_id: str) -> pl.DataFrame:
    """One line per (checkpoint, split) whose manifest holds `row_id` itself or a variant of it."""
    found = []
    for checkpoint in list_checkpoints(data_dir):
        if not exists(checkpoint.manifest_uri):
            continue
        rows = manifest(checkpoint).filter(
            (pl.col("row_id") == row_id) | (pl.col("parent_row_id") == row_id)
        )
        for (split,), part in rows.group_by("split", maintain_order=True):
            found.append(
                {
                    "model_dir": checkpoint.model_dir,
                    "split": split,
                    "direct": bool((part["row_id"] == row_id).any()),
                    "variants": int(part["is_synthetic"].sum()),
                    "catalogue_data_version": checkpoint.lineage.get("catalogue_data_version"),
                    "dagster_run_id": checkpoint.lineage.get("dagster_run_id"),
                }
            )
    schema = {
        "model_dir": pl.String,
        "split": pl.String,
        "direct": pl.Boolean,
        "variants": pl.Int64,
        "catalogue_data_version": pl.String,
        "dagster_run_id": pl.String,
    }
    return pl.DataFrame(found, schema=schema)
