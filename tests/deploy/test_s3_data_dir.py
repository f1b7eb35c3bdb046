"""PIPELINE_DATA_DIR=s3://… through fsspec/s3fs, against moto's S3 server on loopback.

Covers what must work on an object store: the content-addressed image store, the Parquet IO
manager, the report, reuse of stored images, staleness over s3-backed data, and the model group
(dataset snapshot, training, evaluation, trace) with nothing of the data dir on local disk.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid

import dagster as dg
import polars as pl
import pytest
from s3fs import S3FileSystem

from curation.retention import garbage_collect
from curation.shards import shard_of
from dagster_project.cli import main as cli_main
from dagster_project.cli import selection_for
from dagster_project.definitions import build_definitions
from dagster_project.refresh import DEFAULT_TARGET, refresh
from tests.e2e.helpers import (
    copy_catalogue,
    free_port,
    pipeline_env,
    reachable,
    unavailable,
    write_dagster_home,
)
from tests.e2e.ui_server import BIN, stop_process

pytestmark = pytest.mark.slow

SELECTION = selection_for(["ingest", "images", "curation"])
# moto accepts any credentials; these keep boto from looking for real ones.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_endpoint(monkeypatch, tmp_path):
    """A moto S3 server subprocess; its endpoint reaches s3fs via AWS_ENDPOINT_URL_S3."""
    server = BIN / "moto_server"
    if not server.exists():
        unavailable("moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not reachable("127.0.0.1", port, 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            unavailable(f"moto server did not start: {(tmp_path / 'moto.log').read_text()}")
        time.sleep(0.2)
    endpoint = f"http://127.0.0.1:{port}"
    # fsspec caches filesystems by their arguments, and the pipeline's carry none: a cached one
    # would still point at the previous test's (stopped) server.
    S3FileSystem.clear_instance_cache()
    for name, value in {**FAKE_AWS, "AWS_ENDPOINT_URL_S3": endpoint}.items():
        monkeypatch.setenv(name, value)
    try:
        yield endpoint
    finally:
        S3FileSystem.clear_instance_cache()
        stop_process(process)


def s3_pipeline_env(tmp_path, demo_catalogue, s3_endpoint, monkeypatch, rows: int):
    """A fresh bucket as PIPELINE_DATA_DIR, the first `rows` demo rows as the catalogue, and a
    local instance; returns the bucket's filesystem, its name and the instance's home."""
    fs = S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint})
    bucket = f"catalogue-vlm-{uuid.uuid4().hex[:8]}"
    fs.mkdir(bucket)
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, tmp_path / "catalogue.csv", rows)
    home = write_dagster_home(tmp_path / "home")
    for name, value in pipeline_env(f"s3://{bucket}/pipeline", catalogue, home).items():
        monkeypatch.setenv(name, value)
    return fs, bucket, home


def test_curation_groups_round_trip_through_s3(tmp_path, demo_catalogue, s3_endpoint, monkeypatch):
    fs, bucket, home = s3_pipeline_env(tmp_path, demo_catalogue, s3_endpoint, monkeypatch, 120)
    monkeypatch.setenv("DAGSTER_EXECUTOR", "in_process")  # what is under test is the storage
    defs = build_definitions()
    instance = dg.DagsterInstance.from_config(str(home))

    first = refresh(instance, DEFAULT_TARGET, SELECTION)

    assert first.success
    with fs.open(f"{bucket}/pipeline/curation_ledger.parquet", "rb") as handle:
        ledger = pl.read_parquet(handle)
    with fs.open(f"{bucket}/pipeline/product_images.parquet", "rb") as handle:
        images = pl.read_parquet(handle)
    assert ledger.height == 120 and (ledger["outcome"] == "curated").sum() > 100
    stored = images.filter(pl.col("status") == "ok")
    assert stored["path"].str.starts_with(f"s3://{bucket}/pipeline/images/").all()
    assert fs.exists(stored["path"][0]) and len(fs.find(f"{bucket}/pipeline/images")) == (
        stored["sha256"].n_unique()
    )
    assert not [p for p in fs.find(f"{bucket}/pipeline") if ".tmp-" in p]  # atomic writes
    with fs.open(f"{bucket}/pipeline/reports/data_quality.html", "r") as handle:
        assert "<html" in handle.read(2000).lower()

    # Unchanged catalogue: nothing to redo. Retrying the failures reruns their shards and
    # reuses every s3 image; the shards' results and the values between steps live on s3 too.
    assert refresh(instance, DEFAULT_TARGET, SELECTION).waves == []
    rerun = defs.resolve_job_def("curate").execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey("product_images")],
        run_config={"ops": {"product_images": {"config": {"retry_failed": True}}}},
    )
    metadata = rerun.asset_materializations_for_node("product_images")[0].metadata
    assert metadata["reused"].value == stored["url"].n_unique()
    assert metadata["attempted"].value == images["url"].n_unique() - stored["url"].n_unique()
    failed = images.filter(pl.col("status") != "ok")["url"].unique().to_list()
    retried = set(shard_of(failed, metadata["shards"].value))
    assert metadata["shards_computed"].value == len(retried)  # the shards with failures
    assert fs.find(f"{bucket}/pipeline/shards/product_images") and fs.find(
        f"{bucket}/pipeline/op_values"
    )
    # `make gc` keeps the runs' op values inside the retention window and sweeps them after.
    data_dir = f"s3://{bucket}/pipeline"
    within = garbage_collect(data_dir, dry_run=True)
    assert within.kept_op_value_runs >= 1 and within.removed_op_value_runs == []
    swept = garbage_collect(data_dir, op_values_retention=dt.timedelta(0))
    assert len(swept.removed_op_value_runs) == within.kept_op_value_runs
    fs.invalidate_cache()
    assert not fs.find(f"{bucket}/pipeline/op_values")
    instance.dispose()


@pytest.mark.timeout(1800)  # every image, snapshot file and checkpoint goes through moto
def test_model_group_trains_and_evaluates_on_s3(
    tmp_path, demo_catalogue, s3_endpoint, monkeypatch, capsys
):
    """The whole pipeline, the tiny model included, with nothing of the data dir on local disk:
    training and evaluation read the snapshot and write the checkpoint through fsspec."""
    fs, bucket, home = s3_pipeline_env(tmp_path, demo_catalogue, s3_endpoint, monkeypatch, 200)
    monkeypatch.setenv("CATALOGUE_VLM_CACHE", str(tmp_path / "base_cache"))
    monkeypatch.setenv("CATALOGUE_VLM_WORKDIR", str(tmp_path / "work"))
    defs = build_definitions()
    instance = dg.DagsterInstance.from_config(str(home))
    train = {"max_steps": 2, "image_size": 32, "eval_every_steps": 0, "per_device_batch_size": 8}
    result = defs.resolve_job_def("full_pipeline").execute_in_process(
        instance=instance,
        run_config={
            "ops": {
                "lora_adapter": {"config": train},
                "model_evaluation": {"config": {"max_samples": 4, "batch_size": 4}},
            }
        },
    )

    assert result.success
    model_dir = result.asset_materializations_for_node("lora_adapter")[0].metadata["model_dir"]
    assert model_dir.value.startswith(f"s3://{bucket}/pipeline/models/")
    root = model_dir.value.removeprefix("s3://")
    for name in ("adapter/adapter_model.safetensors", "lineage.json", "training_rows.parquet"):
        assert fs.exists(f"{root}/{name}"), name
    with fs.open(f"{root}/lineage.json", "r") as handle:
        lineage = json.load(handle)
    assert lineage["dataset_snapshot"]["uri"].startswith(f"s3://{bucket}/pipeline/hf_dataset/")
    with fs.open(f"{root}/eval.json", "r") as handle:
        assert json.load(handle)["n_test"] == 4
    with fs.open(f"{root}/training_rows.parquet", "rb") as handle:
        rows = pl.read_parquet(handle)
    assert rows.height == sum(lineage["split_sizes"].values())
    evaluation = result.asset_materializations_for_node("model_evaluation")[0].metadata
    assert evaluation["n_test"].value == 4
    assert not (tmp_path / "data").exists()  # nothing of the data dir landed locally
    assert cli_main(["trace", "--model", model_dir.value]) == 0
    assert lineage["catalogue_data_version"] in capsys.readouterr().out
    instance.dispose()
