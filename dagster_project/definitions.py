"""The one Definitions object: assets, checks, jobs and resources wired to env vars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from assets import curation, dataset, images, ingest, model
from assets.resources import (
    download_settings_from_env,
    parquet_io_manager,
    pipeline_settings_from_env,
)
from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
from dagster_project.automation import (
    automation_sensor,
    build_dataset_job,
    curate_job,
    full_pipeline_job,
    train_and_evaluate_job,
    with_automation,
)
from dagster_project.executors import executor_from_env

ASSET_MODULES = [ingest, images, curation, dataset, model]


def build_definitions(code_versions: Mapping[str, str] | None = None) -> dg.Definitions:
    """`code_versions` overrides assets' code versions by key (how a test shows what a code
    change makes `make refresh` rerun, without editing the code)."""
    pipeline = pipeline_settings_from_env()
    assets = dg.load_assets_from_modules(ASSET_MODULES)
    if code_versions:
        assets = [_with_code_versions(a, code_versions) for a in assets]
    return dg.Definitions(
        assets=with_automation(assets),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[curate_job, build_dataset_job, train_and_evaluate_job, full_pipeline_job],
        sensors=[automation_sensor],
        executor=executor_from_env(),
        resources={
            "pipeline": pipeline,
            "downloads": download_settings_from_env(),
            "io_manager": parquet_io_manager(dg.EnvVar("PIPELINE_DATA_DIR")),
            VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=dg.EnvVar("PIPELINE_DATA_DIR")),
        },
    )


def _with_code_versions(asset: Any, code_versions: Mapping[str, str]) -> Any:
    if not isinstance(asset, dg.AssetsDefinition):
        return asset
    return asset.map_asset_specs(
        lambda spec: spec.replace_attributes(
            code_version=code_versions.get(spec.key.to_user_string(), spec.code_version)
        )
    )


defs = build_definitions()
