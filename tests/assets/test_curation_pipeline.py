"""Dagster tier: materialize ingest → images → curation → dataset on the demo catalogue."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import datasets
import polars as pl
import pytest
from PIL import Image

from assets import curation, dataset, images, ingest
from assets.resources import DownloadSettings, PipelineSettings, parquet_io_manager
from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
from curation.shards import shard_of
from curation.snapshots import latest_snapshot
from schemas.values import DatasetSnapshot

MODULES = [ingest, images, curation, dataset]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, demo_catalogue):
    data_dir = str(tmp_path_factory.mktemp("pipeline") / "data")
    resources = {
        "pipeline": PipelineSettings(
            data_dir=data_dir, catalogue_uri=str(demo_catalogue.catalogue_path)
        ),
        "downloads": DownloadSettings(),
        "io_manager": parquet_io_manager(data_dir),
        VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=data_dir),
    }
    defs = dg.Definitions(
        assets=dg.load_assets_from_modules(MODULES),
        asset_checks=dg.load_asset_checks_from_modules(MODULES),
        resources=resources,
    )
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance)
    return data_dir, result, job, instance


def test_everything_materializes_and_checks_pass(pipeline_run) -> None:
    _, result, _, _ = pipeline_run
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "every_raw_row_validated_or_rejected": True,
        "ledger_accounts_for_every_raw_row": True,
        "no_group_straddles_splits": True,
        "every_split_has_every_category": True,
        "split_proportions_within_tolerance": True,
    }


def test_ledger_outcomes_match_the_demo_manifest(pipeline_run, demo_manifest) -> None:
    data_dir, _, _, _ = pipeline_run
    ledger = pl.read_parquet(f"{data_dir}/curation_ledger.parquet")
    raw = pl.read_parquet(f"{data_dir}/raw_catalogue.parquet")
    assert ledger.height == raw.height and ledger["row_id"].n_unique() == raw.height
    expected = pl.DataFrame(demo_manifest["rows"]).select(
        "row_index", "defect", "expected_outcome", "duplicate_of_row_index"
    )
    joined = ledger.join(expected, on="row_index").join(
        raw.select(pl.col("row_id").alias("duplicate_of"), pl.col("row_index").alias("dup_index")),
        on="duplicate_of",
        how="left",
    )
    wrong = joined.filter(pl.col("outcome") != pl.col("expected_outcome"))
    assert wrong.is_empty(), wrong.select("row_index", "defect", "outcome", "reason").head(20)
    dups = joined.filter(pl.col("outcome") == "duplicate")
    assert (dups["dup_index"] == dups["duplicate_of_row_index"]).all()
    assert ledger.filter(pl.col("outcome") != "curated")["reason"].null_count() == 0
    prefixes = demo_manifest["expected_reasons"]
    planted = joined.filter(pl.col("defect").is_in(list(prefixes)))
    assert planted.height >= 4  # the planted thumbnails and blank pictures
    assert all(r.startswith(prefixes[d]) for r, d in planted.select("reason", "defect").rows())


def test_real_world_encodings_reach_training_upright_and_on_white(
    pipeline_run, demo_manifest
) -> None:
    data_dir, _, _, _ = pipeline_run
    planted = {
        e["row_index"]: e["defect"]
        for e in demo_manifest["rows"]
        if e["defect"] in ("exif_rotated_jpeg", "transparent_png", "sixteen_bit_png", "avif")
    }
    images = pl.read_parquet(f"{data_dir}/product_images.parquet").join(
        pl.read_parquet(f"{data_dir}/raw_catalogue.parquet").select("row_id", "row_index"),
        on="row_id",
    )
    rows = images.filter(pl.col("row_index").is_in(list(planted)))
    assert rows.height == len(planted) >= 8 and (rows["status"] == "ok").all()
    # Each needed normalising, so each has its own lossless picture beside the original.
    assert (rows["normalised_sha256"] != rows["sha256"]).all()
    assert rows["normalised_path"].str.ends_with(".png").all()
    for path, index in rows.select("normalised_path", "row_index").rows():
        with Image.open(path) as picture:
            assert picture.mode == "RGB" and picture.size == (192, 192), planted[index]
            if planted[index] == "transparent_png":
                assert picture.getpixel((2, 2)) == (255, 255, 255)  # the margin, on white


def test_label_conflicts_and_placeholder_are_reported(pipeline_run, demo_manifest) -> None:
    data_dir, _, _, _ = pipeline_run
    clusters = pl.read_parquet(f"{data_dir}/duplicate_clusters.parquet")
    n_placeholder = demo_manifest["defect_counts"]["placeholder"]
    assert clusters["is_placeholder"].sum() == n_placeholder
    planted = {e["row_index"] for e in demo_manifest["rows"] if e["label_conflict"]}
    conflicted = set(clusters.filter(pl.col("label_conflict"))["cluster_id"])
    planted_clusters = set(clusters.filter(pl.col("row_index").is_in(planted))["cluster_id"])
    assert len(planted_clusters) == len(planted) and planted_clusters <= conflicted


def test_rerunning_product_images_downloads_nothing(pipeline_run) -> None:
    """A rerun finds every URL answered and computes no shard; `retry_failed` reruns the shards
    that hold failed URLs and retries those: a stored image is never fetched twice."""
    data_dir, _, job, instance = pipeline_run
    before = pl.read_parquet(f"{data_dir}/product_images.parquet")
    stored = sorted(p.name for p in Path(data_dir, "images").rglob("*") if p.is_file())
    selection = [dg.AssetKey("product_images")]
    rerun = job.execute_in_process(instance=instance, asset_selection=selection)
    assert rerun.success
    metadata = rerun.asset_materializations_for_node("product_images")[0].metadata
    assert (metadata["shards_computed"].value, metadata["attempted"].value) == (0, 0)
    assert pl.read_parquet(f"{data_dir}/product_images.parquet").equals(before)

    retry = job.execute_in_process(
        instance=instance,
        asset_selection=selection,
        run_config={"ops": {"product_images": {"config": {"retry_failed": True}}}},
    )
    assert retry.success
    metadata = retry.asset_materializations_for_node("product_images")[0].metadata
    n_ok = before.filter(pl.col("status") == "ok")["url"].n_unique()
    failed = before.filter(pl.col("status") != "ok")["url"].unique().to_list()
    assert metadata["shards_computed"].value == len(set(shard_of(failed, 2)))
    assert metadata["reused"].value == metadata["ok"].value == n_ok > 2500
    assert metadata["attempted"].value == before["url"].n_unique() - n_ok  # the failures
    assert sorted(p.name for p in Path(data_dir, "images").rglob("*") if p.is_file()) == stored


def test_training_dataset_round_trips(pipeline_run) -> None:
    data_dir, _, _, _ = pipeline_run
    snapshot = latest_snapshot(f"{data_dir}/hf_dataset")
    assert snapshot is not None and Path(snapshot).parent == Path(data_dir, "hf_dataset")
    dsd = datasets.load_from_disk(snapshot)
    splits = pl.read_parquet(f"{data_dir}/dataset_splits.parquet")
    counts = dict(splits.group_by("split").len().rows())
    assert dsd["validation"].num_rows == counts["validation"]
    assert dsd["test"].num_rows == counts["test"]
    assert not any(dsd["test"]["is_synthetic"]) and not any(dsd["validation"]["is_synthetic"])
    assert dsd["train"][0]["image"].size[0] > 0
    assert isinstance(dsd["train"].features["image"], datasets.Image)


def test_snapshot_manifest_names_every_sample_and_its_image(pipeline_run) -> None:
    data_dir, _, _, _ = pipeline_run
    snapshot = latest_snapshot(f"{data_dir}/hf_dataset")
    dsd = datasets.load_from_disk(snapshot)
    rows = pl.read_parquet(f"{snapshot}/rows.parquet")
    assert list(rows.columns[:6]) == [
        "row_id", "row_index", "split", "is_synthetic", "parent_row_id", "image_sha256",
    ]  # fmt: skip
    for name in ("train", "validation", "test"):
        part = rows.filter(pl.col("split") == name)
        assert part["row_id"].to_list() == dsd[name]["row_id"]  # same samples, same order
        assert part["is_synthetic"].to_list() == dsd[name]["is_synthetic"]
    assert rows["image_sha256"].null_count() == 0 and rows["row_index"].null_count() == 0
    variants = rows.filter(pl.col("is_synthetic"))
    assert variants.height > 0 and variants["parent_row_id"].is_in(rows["row_id"]).all()


def test_training_dataset_value_names_its_inputs_versions(pipeline_run) -> None:
    """The typed value lora_adapter receives: snapshot, counts and the data versions Dagster
    recorded for the exact inputs it was built from."""
    data_dir, result, _, instance = pipeline_run
    value = DatasetSnapshot.model_validate_json(Path(data_dir, "training_dataset.json").read_text())
    assert value.uri == latest_snapshot(f"{data_dir}/hf_dataset")
    assert Path(value.uri).name == value.fingerprint
    for key, version in value.upstream_data_versions.items():
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event.asset_materialization.tags["dagster/data_version"] == version, key
    assert value.catalogue_data_version == value.upstream_data_versions["raw_catalogue"]
    ledger = pl.read_parquet(value.ledger_uri)
    assert ledger.height == pl.read_parquet(f"{data_dir}/raw_catalogue.parquet").height


def test_identical_content_reuses_its_snapshot(pipeline_run) -> None:
    data_dir, _, job, instance = pipeline_run
    before = sorted(p.name for p in Path(data_dir, "hf_dataset").iterdir())
    rerun = job.execute_in_process(
        instance=instance, asset_selection=[dg.AssetKey("training_dataset")]
    )
    metadata = rerun.asset_materializations_for_node("training_dataset")[0].metadata
    assert metadata["reused_snapshot"].value is True
    assert sorted(p.name for p in Path(data_dir, "hf_dataset").iterdir()) == before
