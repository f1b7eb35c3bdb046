"""What a finished run leaves beside its best adapter: the processor, the base (tiny),
metrics.json and lineage.json; then the W&B sample table and the Pipes materialization."""

from __future__ import annotations

import json
import shutil
from typing import Any

from schemas.atomic import write_text_atomic
from schemas.lineage import LINEAGE_FILE, TRAINING_ROWS_FILE
from training.artefacts import ADAPTER_DIR, BASE_MODEL_DIR, PROCESSOR_DIR, load_model_for_eval
from training.data import combined_fingerprint, dataset_fingerprints, split_row_ids_sha256
from training.generate import generate_answers
from training.lineage import build_lineage, copy_manifest, folder_sha256, snapshot_info
from training.pipes import report_materialization
from training.run import Run
from training.storage import join
from training.tracking import Tracker


def finish_outputs(run: Run, final_val: float | None) -> dict[str, Any]:
    """Processor, base (tiny), metrics.json and lineage.json next to the best adapter."""
    out, state = run.out, run.state
    run.processor.save_pretrained(str(out / PROCESSOR_DIR))
    base_path = run.ref.path
    if run.preset.name == "tiny":
        shutil.copytree(run.ref.path, out / BASE_MODEL_DIR, dirs_exist_ok=True)
        base_path = BASE_MODEL_DIR
    metrics = {
        "final_val_loss": final_val,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "steps": state.step,
        "samples_seen": state.samples_seen,
        "train_seconds": round(state.train_seconds, 3),
        "samples_per_s": state.samples_seen / state.train_seconds if state.train_seconds else None,
        "resumed_from_step": run.resumed_from,
        "history": state.history,
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    commit = getattr(getattr(run.model, "config", None), "_commit_hash", None)
    base = {"id": run.ref.model_id, "revision": run.ref.revision, "path": base_path}
    base["commit"] = commit
    base["preset"] = run.preset.name
    write_lineage(run, base, metrics)
    return metrics


def dataset_facts(run: Run) -> dict[str, Any]:
    """What lineage.json says about the data: a snapshot's own fingerprint (the folder name and
    W&B alias) when trained on one, with its manifest copied beside the checkpoint."""
    fingerprints = dataset_fingerprints(run.dataset)
    snapshot = snapshot_info(run.config.dataset_dir)
    if snapshot:
        copy_manifest(run.config.dataset_dir, run.out)
    return {
        "fingerprint": snapshot["fingerprint"] if snapshot else combined_fingerprint(fingerprints),
        "split_fingerprints": fingerprints,
        "split_row_ids": split_row_ids_sha256(run.dataset),
        "split_sizes": {name: len(split) for name, split in run.dataset.items()},
        "training_rows": join(run.config.output_dir, TRAINING_ROWS_FILE) if snapshot else None,
    }


def write_lineage(run: Run, base: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    lineage = build_lineage(
        run.config,
        base,
        dataset_facts(run),
        run.tracker.reference(),
        {k: v for k, v in metrics.items() if k != "history"},
    )
    write_text_atomic(run.out / LINEAGE_FILE, json.dumps(lineage, indent=2, default=str))
    return lineage


def report_to_dagster(run: Run, metrics: dict[str, Any]) -> None:
    """The asset's materialization, sent through Pipes (no-op standalone): the adapter's content
    hash is its data version; the lineage essentials and scalar metrics are its metadata."""
    lineage = json.loads((run.out / LINEAGE_FILE).read_text())
    summary = {k: v for k, v in metrics.items() if k != "history" and v is not None}
    report_materialization(
        {
            **summary,
            "lineage": join(run.config.output_dir, LINEAGE_FILE),
            "adapter_path": join(run.config.output_dir, ADAPTER_DIR),
            "base_model": str(lineage["base_model"].get("id")),
            "dataset_fingerprint": lineage["dataset_fingerprint"],
            "wandb_run": str(lineage["wandb_run"]),
        },
        data_version=folder_sha256(run.out / ADAPTER_DIR),
    )


def log_sample_predictions(run: Run, n: int = 8) -> None:
    """A W&B table of what the best adapter answers on validation images (skipped untracked)."""
    if type(run.tracker) is Tracker or not hasattr(run.model, "peft_config"):  # no adapter
        return
    model, processor, preset = load_model_for_eval(run.out, with_adapter=True)
    rows = [run.dataset["validation"][i] for i in range(min(n, len(run.dataset["validation"])))]
    predictions = generate_answers(model, processor, preset, rows, batch_size=n)
    table = [
        {"image": r["image"], "truth": r["answer"], "prediction": p}
        for r, p in zip(rows, predictions, strict=True)
    ]
    run.tracker.log_predictions(table, step=run.state.step)
