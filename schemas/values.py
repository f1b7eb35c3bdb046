"""The values that carry lineage between assets, and the per-checkpoint manifest's columns.

`training_dataset` hands a `DatasetSnapshot` to `lora_adapter`, which hands a `ModelCheckpoint`
to `model_evaluation`: what a checkpoint was trained on flows through asset inputs, so it is the
dataset that was actually built, never whatever was materialized last.
"""

from __future__ import annotations

import polars as pl
from pydantic import BaseModel, ConfigDict

# {model_dir}/training_rows.parquet (and {snapshot}/rows.parquet, which it copies): one row per
# sample a checkpoint saw or was judged on. `image_sha256` / `image_path`: the stored original;
# `normalised_sha256` / `normalised_path`: the normalised picture the dataset embeds, null where
# it is the original itself. A variant has its own image and its parent's row_index.
TRAINING_ROWS_SCHEMA: dict[str, pl.DataType] = {
    "row_id": pl.String(),
    "row_index": pl.Int64(),
    "split": pl.String(),
    "is_synthetic": pl.Boolean(),
    "parent_row_id": pl.String(),
    "image_sha256": pl.String(),
    "image_path": pl.String(),
    "normalised_sha256": pl.String(),
    "normalised_path": pl.String(),
}


class DatasetSnapshot(BaseModel):
    """One immutable `datasets.DatasetDict` folder and the data it was built from."""

    model_config = ConfigDict(frozen=True)

    uri: str  # {PIPELINE_DATA_DIR}/hf_dataset/{fingerprint}
    fingerprint: str  # content identity: folder name, W&B alias, lineage dataset_fingerprint
    split_sizes: dict[str, int]
    rows_uri: str  # the snapshot's manifest ({uri}/rows.parquet)
    ledger_uri: str  # the curation ledger the dataset was built with (immutable copy)
    catalogue_uri: str
    catalogue_data_version: str  # raw_catalogue's data version this dataset came from
    upstream_data_versions: dict[str, str]  # asset key -> data version of each input


class ModelCheckpoint(BaseModel):
    """A trained adapter's folder and the snapshot it was trained (and is judged) on."""

    model_config = ConfigDict(frozen=True)

    model_dir: str
    adapter_sha256: str
    dataset: DatasetSnapshot
