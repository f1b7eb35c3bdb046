"""lineage.json: which rows, which data version, which code and which base made an adapter."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from schemas.atomic import write_bytes_atomic
from schemas.lineage import SNAPSHOT_INFO_FILE, SNAPSHOT_ROWS_FILE, TRAINING_ROWS_FILE
from training.config import TrainConfig, scrub_secrets

TRACKED_PACKAGES: tuple[str, ...] = (
    "torch",
    "transformers",
    "peft",
    "safetensors",
    "tokenizers",
    "datasets",
    "pillow",
    "wandb",
    "catalogue-vlm",
)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha(start: Path | None = None) -> str | None:
    """Best effort: GIT_SHA env (CI/containers without .git), else `git rev-parse HEAD`."""
    if os.environ.get("GIT_SHA"):
        return os.environ["GIT_SHA"]
    cwd = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def _join(root: str, name: str) -> str:
    return f"{str(root).rstrip('/')}/{name}"


def snapshot_info(dataset_dir: str) -> dict[str, Any] | None:
    """The snapshot's own description (curation.snapshots), None for a plain DatasetDict."""
    import fsspec  # a dependency of `datasets`, which reading the dataset needs anyway

    fs, path = fsspec.core.url_to_fs(_join(dataset_dir, SNAPSHOT_INFO_FILE))
    if not fs.exists(path):
        return None
    with fs.open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def copy_manifest(dataset_dir: str, output_dir: Path) -> None:
    """Copy the snapshot's rows.parquet to {output_dir}/training_rows.parquet: the checkpoint
    then names its rows and images itself, whatever later happens to the snapshot."""
    import fsspec

    with fsspec.open(_join(dataset_dir, SNAPSHOT_ROWS_FILE), "rb") as handle:
        data = handle.read()
    write_bytes_atomic(output_dir / TRAINING_ROWS_FILE, data)


def folder_sha256(folder: Path) -> str:
    """Content identity of a saved adapter: every file's name and bytes, in name order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(folder)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_lineage(
    config: TrainConfig,
    base_model: dict[str, Any],
    dataset: dict[str, Any],
    wandb_run: dict[str, Any] | None,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The contract fields first (docs/design.md), then whatever the caller passed in `lineage`.

    `dataset`: fingerprint, split_fingerprints, split_row_ids, split_sizes and, when trained
    on a snapshot, training_rows (the manifest beside the checkpoint)."""
    extras = scrub_secrets(config.lineage)
    return {
        **extras,
        "catalogue_uri": extras.get("catalogue_uri"),
        "catalogue_data_version": extras.get("catalogue_data_version"),
        "upstream_data_versions": extras.get("upstream_data_versions"),
        "dagster_run_id": extras.get("dagster_run_id"),
        "dataset_dir": config.dataset_dir,
        "dataset_snapshot": {"uri": config.dataset_dir, "fingerprint": dataset["fingerprint"]},
        "training_rows": dataset.get("training_rows"),
        "dataset_fingerprint": dataset["fingerprint"],
        "dataset_split_fingerprints": dataset["split_fingerprints"],
        "split_row_ids_sha256": dataset["split_row_ids"],
        "split_sizes": dataset["split_sizes"],
        "config": config.to_dict(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "wandb_run": wandb_run,
        "base_model": base_model,
        "metrics": metrics,
    }
