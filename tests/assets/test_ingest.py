from __future__ import annotations

import dagster as dg
import polars as pl

from assets import ingest
from assets.resources import PipelineSettings, parquet_io_manager


def test_ingest_group_materializes_with_manifest_counts(tmp_path, demo_catalogue, demo_manifest):
    data_dir = str(tmp_path / "data")
    resources = {
        "pipeline": PipelineSettings(
            data_dir=data_dir, catalogue_uri=str(demo_catalogue.catalogue_path)
        ),
        "io_manager": parquet_io_manager(data_dir),
    }
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [
            ingest.raw_catalogue,
            ingest.validated_products,
            ingest.every_raw_row_validated_or_rejected,
        ],
        resources=resources,
        instance=instance,
    )
    assert result.success
    raw = pl.read_parquet(f"{data_dir}/raw_catalogue.parquet")
    validated = pl.read_parquet(f"{data_dir}/validated_products.parquet")
    rejected = pl.read_parquet(f"{data_dir}/rejected_rows.parquet")
    n_invalid = demo_manifest["outcome_counts"]["invalid"]
    assert raw.height == 3040
    assert rejected["row_id"].n_unique() == n_invalid
    assert validated.height == raw.height - n_invalid
    checks = result.get_asset_check_evaluations()
    assert [c.passed for c in checks] == [True]
    # Identical catalogue -> identical data version: nothing downstream goes stale.
    first = _data_version(instance, "raw_catalogue")
    assert dg.materialize([ingest.raw_catalogue], resources=resources, instance=instance).success
    assert _data_version(instance, "raw_catalogue") == first


def _data_version(instance: dg.DagsterInstance, key: str) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return event.asset_materialization.tags["dagster/data_version"]


def test_bad_catalogue_fails_with_a_clear_message(tmp_path) -> None:
    path = tmp_path / "not_a_catalogue.csv"
    path.write_text("name,colour\nscarf,red\n")
    data_dir = str(tmp_path / "data")
    result = dg.materialize(
        [ingest.raw_catalogue],
        resources={
            "pipeline": PipelineSettings(data_dir=data_dir, catalogue_uri=str(path)),
            "io_manager": parquet_io_manager(data_dir),
        },
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data
    assert "missing required column" in failure.user_failure_data.description
