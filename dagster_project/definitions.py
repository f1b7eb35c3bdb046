"""The one Definitions object: assets, checks, jobs and resources wired to env vars."""

from __future__ import annotations

import dagster as dg

from assets import ingest
from dagster_project.resources import (
    download_settings_from_env,
    parquet_io_manager,
    pipeline_settings_from_env,
)

ASSET_MODULES = [ingest]


def build_definitions() -> dg.Definitions:
    pipeline = pipeline_settings_from_env()
    return dg.Definitions(
        assets=dg.load_assets_from_modules(ASSET_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
        resources={
            "pipeline": pipeline,
            "downloads": download_settings_from_env(),
            "io_manager": parquet_io_manager(pipeline.data_dir),
        },
    )


defs = build_definitions()
