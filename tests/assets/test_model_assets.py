"""Dagster tier: lora_adapter and model_evaluation launch the training CLI through Pipes, and
take what to train on / what to judge from their inputs."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import datasets
import polars as pl

from assets import model
from assets.resources import PipelineSettings
from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
from schemas.values import DatasetSnapshot
from tests.training.conftest import make_catalogue_dataset

FINGERPRINT = "0123456789abcdef0123456789abcdef"


def write_snapshot(data_dir: Path) -> DatasetSnapshot:
    """A snapshot folder as curation.snapshots lays it out, and the value training_dataset
    would have stored for it (lora_adapter loads it through the IO manager)."""
    folder = make_catalogue_dataset(data_dir / "hf_dataset" / FINGERPRINT, 48, 12, 12, 4, seed=3)
    dsd = datasets.load_from_disk(str(folder))
    rows = pl.concat(
        pl.DataFrame(
            {
                "row_id": dsd[name]["row_id"],
                "row_index": list(range(len(dsd[name]))),
                "split": [name] * len(dsd[name]),
                "is_synthetic": dsd[name]["is_synthetic"],
                "parent_row_id": dsd[name]["parent_row_id"],
                "image_sha256": [f"sha-{i}" for i in range(len(dsd[name]))],
                "image_path": [None] * len(dsd[name]),
                "normalised_sha256": [None] * len(dsd[name]),
                "normalised_path": [None] * len(dsd[name]),
            },
            schema_overrides={
                "parent_row_id": pl.String,
                "image_path": pl.String,
                "normalised_sha256": pl.String,
                "normalised_path": pl.String,
            },
        )
        for name in dsd
    )
    rows.write_parquet(folder / "rows.parquet")
    sizes = {name: len(split) for name, split in dsd.items()}
    info = {"fingerprint": FINGERPRINT, "split_sizes": sizes}
    (folder / "snapshot.json").write_text(json.dumps(info))
    value = DatasetSnapshot(
        uri=str(folder),
        fingerprint=FINGERPRINT,
        split_sizes=sizes,
        rows_uri=str(folder / "rows.parquet"),
        ledger_uri=str(folder / "ledgers" / "x.parquet"),
        catalogue_uri="catalogue.csv",
        catalogue_data_version="catalogue-v1",
        upstream_data_versions={"raw_catalogue": "catalogue-v1"},
    )
    (data_dir / "training_dataset.json").write_text(value.model_dump_json())
    return value


def test_train_and_evaluate_assets(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    snapshot = write_snapshot(data_dir)
    resources = {
        "pipeline": PipelineSettings(data_dir=str(data_dir), wandb_mode="disabled"),
        VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=str(data_dir)),
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
        [
            # Stands in for the stored value of an earlier training_dataset materialization.
            dg.AssetSpec("training_dataset").with_io_manager_key(VALUES_IO_MANAGER_KEY),
            model.lora_adapter,
            model.model_evaluation,
        ],
        resources=resources,
        run_config=run_config,
        instance=instance,
        selection=[dg.AssetKey("lora_adapter"), dg.AssetKey("model_evaluation")],
    )
    assert result.success
    trained = result.asset_materializations_for_node("lora_adapter")[0]
    metadata = trained.metadata
    run_dir = Path(metadata["model_dir"].value)
    assert run_dir.parent == data_dir / "models"
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    # What the UI shows: catalogue version, snapshot, manifest and row counts, from the input.
    assert metadata["catalogue_data_version"].value == "catalogue-v1"
    assert metadata["dataset_snapshot"].value == snapshot.uri
    assert metadata["training_rows"].value == str(run_dir / "training_rows.parquet")
    assert metadata["rows/train"].value == 48 and metadata["steps"].value == 3
    # Reported through Pipes: the adapter's content hash is the data version.
    assert (
        trained.tags["dagster/data_version"]
        == json.loads((data_dir / "lora_adapter.json").read_text())["adapter_sha256"]
    )
    lineage = json.loads((run_dir / "lineage.json").read_text())
    assert lineage["dagster_run_id"] == result.run_id
    assert lineage["catalogue_data_version"] == "catalogue-v1"
    assert lineage["dataset_fingerprint"] == FINGERPRINT
    assert lineage["dataset_snapshot"] == {"uri": snapshot.uri, "fingerprint": FINGERPRINT}
    assert lineage["training_rows"] == str(run_dir / "training_rows.parquet")
    assert lineage["split_row_ids_sha256"].keys() >= {"train", "validation", "test"}
    manifest = pl.read_parquet(run_dir / "training_rows.parquet")
    assert manifest.equals(pl.read_parquet(snapshot.rows_uri))
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
    judged = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert judged["n_test"].value == 8
    assert judged["model_dir"].value == str(run_dir)
    assert judged["tuned/category_accuracy"].value == evaluation["tuned"]["category_accuracy"]
    table = judged["metrics"].value  # the eval page's headline, shown in the UI
    assert [r.data["model"] for r in table.records][:2] == ["tuned", "base"]
    assert table.records[0].data["parse_rate"] == evaluation["tuned"]["parse_rate"]
    # Training progress streamed into the Dagster run through Pipes.
    messages = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any('"event": "done"' in m for m in messages)
    # The check judged this evaluation (3 steps cannot beat the baselines: it can fail).
    checks = result.get_asset_check_evaluations()
    assert [c.check_name for c in checks] == ["tuned_beats_base_and_baselines"]
    assert checks[0].metadata["adapter_sha256"].value == trained.tags["dagster/data_version"]


def test_evaluation_failures_names_each_shortfall() -> None:
    good = {
        "tuned/category_accuracy": 0.9,
        "base/category_accuracy": 0.1,
        "majority_category/category_accuracy": 0.3,
        "tuned/price_mae": 10.0,
        "median_price/price_mae": 100.0,
    }
    assert model.evaluation_failures(good) == []
    bad = {**good, "tuned/category_accuracy": 0.2, "tuned/price_mae": None}
    assert model.evaluation_failures(bad) == [
        "category accuracy not above the majority baseline",
        "price MAE not below the median-price baseline",
    ]
