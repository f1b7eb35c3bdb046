"""Group `model`: LoRA fine-tuning and base-vs-tuned evaluation, run as Pipes subprocesses.

The assets only write a config and launch `python -m training.train` / `training.evaluate`:
the same command runs unchanged on a GPU node (k8s / Pipes), and `training/` stays free of
Dagster. Logs stream into the Dagster run; results are read back from the run folder.
"""

import json
import sys
from pathlib import Path

import dagster as dg

from assets.resources import PipelineSettings
from training.config import EvalConfig, TrainConfig

GROUP = "model"


class LoraTrainingConfig(dg.Config):
    """Overrides of training.config.TrainConfig (empty = the preset's tuned defaults)."""

    num_epochs: float | None = None
    max_steps: int | None = None
    learning_rate: float | None = None
    per_device_batch_size: int | None = None
    lora_r: int | None = None
    image_size: int | None = None
    eval_every_steps: int | None = None


class EvaluationConfig(dg.Config):
    max_samples: int | None = None  # evaluate only the first N test rows (smoke runs)
    batch_size: int = 32


def _latest_metadata(instance: dg.DagsterInstance, key: str, required: bool = True) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        if required:
            raise dg.Failure(f"{key} has not been materialized yet")
        return {"tags": {}}
    materialization = event.asset_materialization
    return {"tags": dict(materialization.tags or {}), **materialization.metadata}


def _run_module(context: dg.AssetExecutionContext, module: str, config_path: Path) -> None:
    """`python -m module --config path` under Dagster Pipes: logs stream into this run."""
    dg.PipesSubprocessClient().run(
        command=[sys.executable, "-m", module, "--config", str(config_path)],
        context=context,
    )


@dg.asset(group_name=GROUP, code_version="1", deps=["training_dataset"], kinds={"pytorch"})
def lora_adapter(
    context: dg.AssetExecutionContext, config: LoraTrainingConfig, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """A LoRA adapter (safetensors) + lineage.json under {PIPELINE_DATA_DIR}/models/{run_id}/."""
    # Keyed by the root run: a re-execution of a killed run (run retry, "re-execute from
    # failure") shares it, so training resumes from the last checkpoint in the same folder.
    run_dir = Path(pipeline.path("models", (context.run.root_run_id or context.run_id)[:12]))
    run_dir.mkdir(parents=True, exist_ok=True)
    # Lineage: which catalogue version this dataset came from (absent when trained on a
    # dataset built elsewhere).
    raw = _latest_metadata(context.instance, "raw_catalogue", required=False)
    overrides = {k: v for k, v in config.model_dump().items() if v is not None}
    train_config = TrainConfig(
        dataset_dir=pipeline.path("hf_dataset"),
        output_dir=str(run_dir),
        # The tiny preset's locally built base is cached beside the models it trains.
        cache_dir=pipeline.path("models", "base_cache"),
        preset=pipeline.model_preset,
        wandb_mode=pipeline.wandb_mode,
        wandb_dataset_artifact="catalogue-dataset:latest",
        lineage={
            "catalogue_uri": raw["catalogue_uri"].value if "catalogue_uri" in raw else None,
            "catalogue_data_version": raw["tags"].get("dagster/data_version"),
            "dagster_run_id": context.run_id,
        },
        **overrides,
    )
    config_path = run_dir / "train_config.json"
    train_config.save(config_path)
    _run_module(context, "training.train", config_path)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    lineage = json.loads((run_dir / "lineage.json").read_text())
    return dg.MaterializeResult(
        metadata={
            "model_dir": dg.MetadataValue.path(str(run_dir)),
            "adapter_path": dg.MetadataValue.path(str(run_dir / "adapter")),
            "base_model": str(lineage.get("base_model")),
            "wandb_run": str(lineage.get("wandb_run")),
            "dataset_fingerprint": str(lineage.get("dataset_fingerprint")),
            **{k: v for k, v in metrics.items() if isinstance(v, int | float) and v is not None},
        }
    )


@dg.asset(group_name=GROUP, code_version="1", deps=[lora_adapter], kinds={"pytorch"})
def model_evaluation(
    context: dg.AssetExecutionContext, config: EvaluationConfig, pipeline: PipelineSettings
) -> dg.MaterializeResult:
    """Base vs tuned vs no-model baselines on the test split; eval.json + eval.html."""
    model_dir = Path(str(_latest_metadata(context.instance, "lora_adapter")["model_dir"].value))
    eval_config = EvalConfig(
        dataset_dir=pipeline.path("hf_dataset"),
        model_dir=str(model_dir),
        max_samples=config.max_samples,
        batch_size=config.batch_size,
    )
    config_path = model_dir / "eval_config.json"
    eval_config.save(config_path)
    _run_module(context, "training.evaluate", config_path)
    result = json.loads((model_dir / "eval.json").read_text())
    flat = {
        f"{who}/{metric}": value
        for who, block in [
            ("tuned", result["tuned"]),
            ("base", result["base"]),
            *result["baselines"].items(),
        ]
        for metric, value in block.items()
        if isinstance(value, int | float)
    }
    return dg.MaterializeResult(
        metadata={
            "n_test": result["n_test"],
            "eval_json": dg.MetadataValue.path(str(model_dir / "eval.json")),
            "eval_html": dg.MetadataValue.path(str(model_dir / "eval.html")),
            **flat,
        }
    )


@dg.asset_check(asset=model_evaluation, description="Tuned beats the base model and baselines.")
def tuned_beats_base_and_baselines(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metadata = _latest_metadata(context.instance, "model_evaluation")
    value = {key: entry.value for key, entry in metadata.items() if key != "tags"}
    tuned_acc = value.get("tuned/category_accuracy", 0.0)
    tuned_mae = value.get("tuned/price_mae", float("inf"))
    failures = []
    if tuned_acc <= value.get("base/category_accuracy", 0.0):
        failures.append("category accuracy not above base")
    if tuned_acc <= value.get("majority_category/category_accuracy", 0.0):
        failures.append("category accuracy not above the majority baseline")
    if tuned_mae >= value.get("median_price/price_mae", float("inf")):
        failures.append("price MAE not below the median-price baseline")
    return dg.AssetCheckResult(
        passed=not failures,
        metadata={"failures": ", ".join(failures) or "none", "tuned_accuracy": tuned_acc},
    )
