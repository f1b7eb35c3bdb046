"""Group `model`: LoRA fine-tuning and base-vs-tuned evaluation, run as Pipes subprocesses.

The assets only write a config and launch `python -m training.train` / `training.evaluate`:
the same command runs unchanged on a GPU node (k8s / Pipes), and `training/` stays free of
Dagster. Logs stream into the Dagster run and results come back through Pipes. What to train on
and what to evaluate arrive as inputs (`DatasetSnapshot`, `ModelCheckpoint`), never as
"whatever was materialized last".
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets.dataset import DATASET_ARTIFACT
from assets.resources import PipelineSettings
from assets.values_io import VALUES_IO_MANAGER_KEY as VALUES_IO
from schemas.atomic import write_bytes_atomic
from schemas.lineage import TRAINING_ROWS_FILE
from schemas.values import DatasetSnapshot, ModelCheckpoint
from training.config import EvalConfig, TrainConfig
from training.eval_page import evaluation_failures
from training.launch import launch_command

GROUP = "model"
CHECK_NAME = "tuned_beats_base_and_baselines"


class LoraTrainingConfig(dg.Config):
    """Overrides of training.config.TrainConfig (empty = the preset's tuned defaults)."""

    num_epochs: float | None = None
    max_steps: int | None = None
    learning_rate: float | None = None
    per_device_batch_size: int | None = None
    lora_r: int | None = None
    image_size: int | None = None
    eval_every_steps: int | None = None
    # Data-parallel processes on the node (one per GPU; CPU ranks use gloo): training runs
    # under `accelerate launch`, the global batch is per_device_batch_size x num_processes.
    num_processes: int = 1


class EvaluationConfig(dg.Config):
    max_samples: int | None = None  # evaluate only the first N test rows (smoke runs)
    batch_size: int = 32


def _run_module(
    context: dg.AssetExecutionContext, module: str, config_uri: str, processes: int = 1
) -> dg.MaterializeResult:
    """`python -m module --config uri` under Dagster Pipes: logs stream into this run, and the
    process reports its results back (no output file is read from a local path here)."""
    invocation = dg.PipesSubprocessClient().run(
        command=launch_command(module, config_uri, processes), context=context
    )
    return invocation.get_materialize_result()


def _save_config(config: TrainConfig | EvalConfig, uri: str) -> str:
    values = config.to_dict() if isinstance(config, TrainConfig) else dataclasses.asdict(config)
    write_bytes_atomic(uri, json.dumps(values, indent=2, sort_keys=True).encode())
    return uri


def _run_folder(context: dg.AssetExecutionContext, pipeline: PipelineSettings) -> str:
    # Keyed by the root run: a re-execution of a killed run (run retry, "re-execute from
    # failure") shares it, so training resumes from the last checkpoint in the same folder.
    return pipeline.path("models", (context.run.root_run_id or context.run_id)[:12])


def _plain(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in metadata.items()}


@dg.asset(group_name=GROUP, code_version="2", kinds={"pytorch"}, io_manager_key=VALUES_IO)
def lora_adapter(
    context: dg.AssetExecutionContext,
    config: LoraTrainingConfig,
    pipeline: PipelineSettings,
    training_dataset: DatasetSnapshot,
) -> dg.Output[ModelCheckpoint]:
    """A LoRA adapter (safetensors), lineage.json and training_rows.parquet under
    {PIPELINE_DATA_DIR}/models/{run_id}/, trained on the snapshot `training_dataset` holds."""
    model_dir = _run_folder(context, pipeline)
    launch = config.model_dump()
    processes = launch.pop("num_processes")
    overrides = {k: v for k, v in launch.items() if v is not None}
    train_config = TrainConfig(
        dataset_dir=training_dataset.uri,
        output_dir=model_dir,
        # The tiny preset's locally built base is cached beside the models it trains.
        cache_dir=pipeline.path("models", "base_cache"),
        preset=pipeline.model_preset,
        wandb_mode=pipeline.wandb_mode,
        wandb_dataset_artifact=f"{DATASET_ARTIFACT}:{training_dataset.fingerprint}",
        lineage={
            "catalogue_uri": training_dataset.catalogue_uri,
            "catalogue_data_version": training_dataset.catalogue_data_version,
            "upstream_data_versions": training_dataset.upstream_data_versions,
            "curation_ledger": training_dataset.ledger_uri,
            "dagster_run_id": context.run_id,
        },
        **overrides,
    )
    config_uri = _save_config(train_config, f"{model_dir}/train_config.json")
    reported = _run_module(context, "training.train", config_uri, processes)
    if reported.data_version is None:
        raise dg.Failure("training.train reported no adapter fingerprint through Pipes")
    checkpoint = ModelCheckpoint(
        model_dir=model_dir,
        adapter_sha256=reported.data_version.value,
        dataset=training_dataset,
    )
    return dg.Output(
        checkpoint,
        data_version=reported.data_version,
        metadata={
            **(reported.metadata or {}),
            "model_dir": dg.MetadataValue.path(model_dir),
            "catalogue_data_version": training_dataset.catalogue_data_version,
            "dataset_snapshot": dg.MetadataValue.path(training_dataset.uri),
            "training_rows": dg.MetadataValue.path(f"{model_dir}/{TRAINING_ROWS_FILE}"),
            **{f"rows/{name}": n for name, n in training_dataset.split_sizes.items()},
        },
    )


@dg.asset(
    group_name=GROUP,
    code_version="2",
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset="model_evaluation",
            description="Tuned beats the base model and the no-model baselines.",
        )
    ],
)
def model_evaluation(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    lora_adapter: ModelCheckpoint,
) -> dg.MaterializeResult:
    """Base vs tuned vs no-model baselines on the test split of the snapshot the adapter was
    trained on; eval.json + eval.html beside it. The check judges exactly this evaluation."""
    eval_config = EvalConfig(
        dataset_dir=lora_adapter.dataset.uri,
        model_dir=lora_adapter.model_dir,
        max_samples=config.max_samples,
        batch_size=config.batch_size,
    )
    config_uri = _save_config(eval_config, f"{lora_adapter.model_dir}/eval_config.json")
    reported = _run_module(context, "training.evaluate", config_uri)
    metrics = _plain(reported.metadata or {})
    failures = evaluation_failures(metrics)
    return dg.MaterializeResult(
        metadata={
            **(reported.metadata or {}),
            "model_dir": dg.MetadataValue.path(lora_adapter.model_dir),
            "eval_json": dg.MetadataValue.path(f"{lora_adapter.model_dir}/eval.json"),
            "eval_html": dg.MetadataValue.path(f"{lora_adapter.model_dir}/eval.html"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK_NAME,
                passed=not failures,
                metadata={
                    "failures": ", ".join(failures) or "none",
                    "tuned_accuracy": metrics.get("tuned/category_accuracy"),
                    "adapter_sha256": lora_adapter.adapter_sha256,
                },
            )
        ],
    )
