"""Dagster tier: lora_adapter and model_evaluation launch the training CLI through Pipes."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from assets import model
from assets.resources import PipelineSettings
from tests.training.conftest import make_catalogue_dataset


def test_train_and_evaluate_assets(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_catalogue_dataset(data_dir / "hf_dataset", 48, 12, 12, n_categories=4, seed=3)
    resources = {
        "pipeline": PipelineSettings(data_dir=str(data_dir), wandb_mode="disabled"),
    }
    run_config = {
        "ops": {
            "lora_adapter": {
                "config": {
                    "max_steps": 3,
                    "image_size": 32,
                    "eval_every_steps": 0,
                    "per_device_batch_size": 8,
                }
            },
            "model_evaluation": {"config": {"max_samples": 8, "batch_size": 8}},
        }
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [model.lora_adapter, model.model_evaluation, model.tuned_beats_base_and_baselines],
        resources=resources,
        run_config=run_config,
        instance=instance,
        selection=[dg.AssetKey("lora_adapter"), dg.AssetKey("model_evaluation")],
    )
    assert result.success
    trained = result.asset_materializations_for_node("lora_adapter")[0].metadata
    run_dir = Path(trained["model_dir"].value)
    assert run_dir.parent == data_dir / "models"
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["dagster_run_id"] == result.run_id
    assert lineage["split_row_ids_sha256"].keys() >= {"train", "validation", "test"}
    assert trained["steps"].value == 3
    evaluation = json.loads((run_dir / "eval.json").read_text())
    assert evaluation["n_test"] == 8
    assert set(evaluation["baselines"]) == {"majority_category", "median_price"}
    for who in ("tuned", "base"):
        assert {
            "parse_rate",
            "category_accuracy",
            "title_similarity",
            "price_mae",
            "price_mape",
        } <= evaluation[who].keys()
    metadata = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert metadata["n_test"].value == 8
    # Training progress streamed into the Dagster run through Pipes.
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any('"event": "done"' in m for m in messages)
    # The check ran (3 steps cannot beat the baselines; that it can fail is the point).
    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["tuned_beats_base_and_baselines"]
