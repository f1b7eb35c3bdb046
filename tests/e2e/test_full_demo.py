"""End to end: the whole demo pipeline, catalogue to evaluated adapter, as `make demo` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import polars as pl
import pytest

from tests.e2e.helpers import CURATION_TABLES

# The whole demo, training included: minutes on 2 cores, longer than the default per-test limit.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("full_demo")
    (root / "home").mkdir()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "home"),
        "PIPELINE_DATA_DIR": str(root / "data"),
        "CATALOGUE_URI": "demo",
        "MODEL_PRESET": "tiny",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(root),
    }
    done = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return root / "data"


def test_every_output_of_the_design_exists(demo_run: Path) -> None:
    for name in (*CURATION_TABLES, "dataset_splits", "synthetic_variants"):
        assert (demo_run / f"{name}.parquet").exists(), name
    assert (demo_run / "reports" / "data_quality.html").stat().st_size > 10_000
    dsd = datasets.load_from_disk(str(demo_run / "hf_dataset" / snapshot_name(demo_run)))
    assert set(dsd) == {"train", "validation", "test"}
    ledger = pl.read_parquet(demo_run / "curation_ledger.parquet")
    assert ledger.height == 3040


def snapshot_name(data_dir: Path) -> str:
    return (data_dir / "hf_dataset" / "LATEST").read_text().strip()


def test_tuned_model_meets_the_demo_bar(demo_run: Path) -> None:
    runs = [p for p in (demo_run / "models").iterdir() if (p / "eval.json").exists()]
    assert len(runs) == 1
    evaluation = json.loads((runs[0] / "eval.json").read_text())
    tuned, base = evaluation["tuned"], evaluation["base"]
    majority = evaluation["baselines"]["majority_category"]["category_accuracy"]
    median_mae = evaluation["baselines"]["median_price"]["price_mae"]
    assert tuned["parse_rate"] >= 0.95, evaluation
    # The demo bar. Training is deterministic on one machine, not across CPUs (float
    # reductions follow the SIMD width): demo-v5 pictures scored 0.84 here and 0.796 on CI; the
    # demo-v6 pictures score 0.93 here, which leaves that spread a wide margin.
    assert tuned["category_accuracy"] >= 0.8, evaluation
    assert tuned["category_accuracy"] >= majority + 0.3, evaluation
    assert tuned["price_mae"] < median_mae, evaluation
    assert base["category_accuracy"] < tuned["category_accuracy"]
    lineage = json.loads((runs[0] / "lineage.json").read_text())
    for key in (
        "catalogue_uri",
        "catalogue_data_version",
        "dataset_fingerprint",
        "split_row_ids_sha256",
        "config",
        "packages",
        "git_sha",
        "dagster_run_id",
        "wandb_run",
        "base_model",
        "dataset_snapshot",
        "training_rows",
        "upstream_data_versions",
    ):
        assert key in lineage, key
    assert lineage["catalogue_data_version"]
    assert lineage["dataset_snapshot"]["uri"] == str(
        demo_run / "hf_dataset" / snapshot_name(demo_run)
    )
    rows = pl.read_parquet(runs[0] / "training_rows.parquet")
    assert rows.height == sum(lineage["split_sizes"].values())
    assert (runs[0] / "adapter" / "adapter_model.safetensors").exists()
