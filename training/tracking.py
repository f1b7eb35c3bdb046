"""Experiment tracking: W&B when installed and not disabled, otherwise a no-op tracker.

Offline by default (WANDB_MODE unset -> "offline"): a pipeline run never needs an account or
network; `wandb sync` uploads later. Config and lineage pass through `scrub_secrets` first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.config import scrub_secrets

log = logging.getLogger(__name__)


class Tracker:
    """No-op base: training code calls these unconditionally."""

    def log(self, metrics: dict[str, float], step: int) -> None: ...

    def log_predictions(self, rows: Sequence[dict[str, Any]], step: int) -> None: ...

    def log_adapter(self, adapter_dir: Path, name: str, metadata: dict[str, Any]) -> None: ...

    def set_summary(self, values: dict[str, Any]) -> None: ...

    def finish(self) -> None: ...

    def reference(self) -> dict[str, Any] | None:
        """What lineage.json records about the run (None when nothing was tracked)."""
        return None


class WandbTracker(Tracker):
    def __init__(self, run: Any, wandb: Any) -> None:
        self.run, self.wandb = run, wandb

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_predictions(self, rows: Sequence[dict[str, Any]], step: int) -> None:
        """Rows: image (PIL), truth, prediction; a table shows what the model actually says."""
        table = self.wandb.Table(columns=["image", "truth", "prediction"])
        for row in rows:
            table.add_data(self.wandb.Image(row["image"]), row["truth"], row["prediction"])
        self.run.log({"predictions": table}, step=step)

    def log_adapter(self, adapter_dir: Path, name: str, metadata: dict[str, Any]) -> None:
        artifact = self.wandb.Artifact(name=name, type="model", metadata=scrub_secrets(metadata))
        artifact.add_dir(str(adapter_dir))
        self.run.log_artifact(artifact)

    def set_summary(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def finish(self) -> None:
        self.run.finish()

    def reference(self) -> dict[str, Any] | None:
        return {
            "id": self.run.id,
            "project": self.run.project,
            "mode": self.run.settings.mode,
            "url": getattr(self.run, "url", None),
            "dir": str(getattr(self.run, "dir", "")),
        }


def start_tracker(
    project: str,
    mode: str,
    config: dict[str, Any],
    run_dir: Path,
    dataset_artifact: str | None = None,
    name: str | None = None,
) -> Tracker:
    """A W&B run, or the no-op tracker when W&B is disabled, missing or fails to start."""
    if mode == "disabled":
        return Tracker()
    try:
        import wandb
    except ImportError:
        log.info("wandb not installed: tracking disabled")
        return Tracker()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            project=project,
            mode=mode,
            dir=str(run_dir),
            name=name,
            config=scrub_secrets(config),
            reinit="finish_previous",
        )
    except Exception as exc:  # tracking must never kill a training run
        log.warning("wandb.init failed (%s): tracking disabled", exc)
        return Tracker()
    if dataset_artifact:
        _link_dataset(run, dataset_artifact)
    return WandbTracker(run, wandb)


def _link_dataset(run: Any, artifact_name: str) -> None:
    """Declare the dataset artifact (`name:fingerprint`, one exact version) as the run's input:
    the lineage graph in W&B. Offline runs cannot use artifacts at all; the name is already in
    the run's config (and lineage.json), so nothing is lost until the run is synced online."""
    if run.settings.mode == "offline":
        log.info("offline W&B run: dataset %s recorded in the config, not linked", artifact_name)
        return
    try:
        run.use_artifact(artifact_name, type="dataset")
    except Exception as exc:
        log.warning("could not link dataset artifact %s: %s", artifact_name, exc)
