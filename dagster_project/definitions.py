"""The one Definitions object: assets, checks, jobs and resources wired to env vars."""

from __future__ import annotations

import dagster as dg

from assets import curation, dataset, images, ingest, model
from assets.resources import (
    download_settings_from_env,
    parquet_io_manager,
    pipeline_settings_from_env,
)
from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
from dagster_project.automation import (
    build_dataset_job,
    catalogue_changed_sensor,
    curate_job,
    full_pipeline_job,
    train_and_evaluate_job,
)
from dagster_project.executors import executor_from_env

ASSET_MODULES = [ingest, images, curation, dataset, model]


def build_definitions() -> dg.Definitions:
    pipeline = pipeline_settings_from_env()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        jobs=[curate_job, build_dataset_job, train_and_evaluate_job, full_pipeline_job],
        sensors=[catalogue_changed_sensor],
        executor=executor_from_env(),
        resources={
            "pipeline": pipeline,
            "downloads": download_settings_from_env(),
            "io_manager": parquet_io_manager(pipeline.data_dir),
            VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=pipeline.data_dir),
        },
    )


defs = build_definitions()
