"""lineage.json: which rows, which data version, which code and which base made an adapter."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

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


def build_lineage(
    config: TrainConfig,
    base_model: dict[str, Any],
    dataset_fingerprint: str,
    split_fingerprints: dict[str, str],
    split_row_ids: dict[str, str],
    split_sizes: dict[str, int],
    wandb_run: dict[str, Any] | None,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """The contract fields first (DESIGN.md), then whatever the caller passed in `lineage`."""
    extras = scrub_secrets(config.lineage)
    return {
        **extras,
        "catalogue_uri": extras.get("catalogue_uri"),
        "catalogue_data_version": extras.get("catalogue_data_version"),
        "dagster_run_id": extras.get("dagster_run_id"),
        "dataset_dir": config.dataset_dir,
        "dataset_fingerprint": dataset_fingerprint,
        "dataset_split_fingerprints": split_fingerprints,
        "split_row_ids_sha256": split_row_ids,
        "split_sizes": split_sizes,
        "config": config.to_dict(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "wandb_run": wandb_run,
        "base_model": base_model,
        "metrics": metrics,
    }
