"""Staleness that tells the truth: `make refresh` redoes exactly what a change invalidated.

One persistent instance and data dir per module (a full materialization is the expensive part);
every test starts from and leaves an up-to-date state, asserting the former first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import curation, dataset, images, ingest
from dagster_project.automation import (
    CATALOGUE_SOURCE,
    catalogue_changed_sensor,
    full_pipeline_job,
    next_wave,
    wave_run_key,
)
from dagster_project.cli import materialize, refresh, selection_for, stale_or_missing_keys
from dagster_project.definitions import build_definitions
from tests.e2e.helpers import copy_catalogue, pipeline_env, write_dagster_home

pytestmark = pytest.mark.slow

GROUPS = ["ingest", "images", "curation", "dataset"]  # not `model`: no training here
SELECTION = selection_for(GROUPS)
MODULES = [ingest, images, curation, dataset]


@dataclass
class Workspace:
    catalogue: Path
    data_dir: Path
    demo_images: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    first: object  # the RefreshResult of the initial materialization


def pipeline_definitions(**replace: dg.AssetsDefinition) -> dg.Definitions:
    """The project's resources, sensor and full-pipeline job over the non-model groups."""
    base = build_definitions()
    assets = [
        replace.get(a.key.to_user_string(), a) if len(getattr(a, "keys", [a])) == 1 else a
        for a in dg.load_assets_from_modules(MODULES)
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules(MODULES),
        jobs=[full_pipeline_job],
        sensors=[catalogue_changed_sensor],
        resources=base.resources,
    )


@pytest.fixture(scope="module")
def ws(tmp_path_factory, demo_catalogue):
    root = tmp_path_factory.mktemp("refresh")
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, root / "catalogue.csv")
    home = write_dagster_home(root / "home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in pipeline_env(str(root / "data"), catalogue, home).items():
            mp.setenv(name, value)
        defs = pipeline_definitions()
        instance = dg.DagsterInstance.from_config(str(home))
        first = refresh(instance, defs, SELECTION)
        yield Workspace(catalogue, root / "data", demo_catalogue.images_dir, defs, instance, first)
        instance.dispose()


def stored_images(data_dir: Path) -> set[str]:
    return {p.name for p in (data_dir / "images").rglob("*") if p.is_file()}


def table(ws: Workspace, name: str) -> pl.DataFrame:
    return pl.read_parquet(ws.data_dir / f"{name}.parquet")


def latest_metadata(ws: Workspace, key: str) -> tuple[str, dict]:
    event = ws.instance.get_latest_materialization_event(dg.AssetKey(key))
    assert event is not None and event.asset_materialization is not None
    return event.run_id, {k: v.value for k, v in event.asset_materialization.metadata.items()}


def n_runs(ws: Workspace) -> int:
    return len(ws.instance.get_run_records())


def materialized_in(result) -> set[str]:
    return {key.to_user_string() for wave in result.waves for key in wave}


def plain_curated_rows(ws: Workspace, n: int) -> list[int]:
    """Curated rows alone in their duplicate cluster: editing one moves no other row."""
    ledger = table(ws, "curation_ledger")
    clusters = table(ws, "duplicate_clusters").filter(pl.col("cluster_size") == 1)
    rows = ledger.filter(pl.col("outcome") == "curated").join(clusters, on="row_id", how="semi")
    return rows.sort("row_index")["row_index"].to_list()[10 : 10 + n]


def edit_catalogue(ws: Workspace, edits: dict[int, dict[str, str]]) -> None:
    frame = pl.read_csv(ws.catalogue, infer_schema=False).with_row_index("i")
    for row, values in edits.items():
        frame = frame.with_columns(
            pl.when(pl.col("i") == row).then(pl.lit(v)).otherwise(pl.col(c)).alias(c)
            for c, v in values.items()
        )
    frame.drop("i").write_csv(ws.catalogue)


def failed_urls(ws: Workspace) -> int:
    images_table = table(ws, "product_images")
    return images_table.filter(pl.col("status") != "ok")["url"].n_unique()


def test_after_a_full_materialization_refresh_launches_nothing(ws: Workspace) -> None:
    assert ws.first.success
    assert materialized_in(ws.first) == {
        k.to_user_string() for k in SELECTION.resolve(ws.defs.resolve_asset_graph())
    }
    assert len(ws.first.waves) == 1  # missing assets need no waves: one run builds them all
    runs = n_runs(ws)
    again = refresh(ws.instance, ws.defs, SELECTION)
    assert again.success and again.waves == []
    assert n_runs(ws) == runs
    graph = ws.defs.resolve_asset_graph()
    assert stale_or_missing_keys(ws.instance, graph, SELECTION) == []


def test_title_edit_reruns_the_chain_without_downloading(ws: Workspace) -> None:
    assert stale_or_missing_keys(ws.instance, ws.defs.resolve_asset_graph(), SELECTION) == []
    renamed, blanked = plain_curated_rows(ws, 2)
    before_ledger = table(ws, "curation_ledger")
    before_files, n_failed = stored_images(ws.data_dir), failed_urls(ws)
    _, before_report = latest_metadata(ws, "data_quality_report")
    edit_catalogue(ws, {renamed: {"title": "Renamed Trench Coat"}, blanked: {"title": " "}})

    result = refresh(ws.instance, ws.defs, SELECTION)

    assert result.success
    assert {"raw_catalogue", "validated_products", "product_images", "curation_ledger"} <= (
        materialized_in(result)
    )
    assert {"data_quality_report", "dataset_splits", "training_dataset"} <= materialized_in(result)
    run_id, images_meta = latest_metadata(ws, "product_images")
    assert run_id in result.run_ids
    # No image is fetched again; only URLs that failed before are retried (by design).
    assert images_meta["attempted"] == n_failed
    assert stored_images(ws.data_dir) == before_files
    ledger = table(ws, "curation_ledger").sort("row_index")
    assert ledger.height == before_ledger.height
    new_row = ledger.filter(pl.col("row_index") == renamed).row(0, named=True)
    assert new_row["outcome"] == "curated"
    assert new_row["row_id"] != before_ledger.filter(pl.col("row_index") == renamed)["row_id"][0]
    assert table(ws, "curated_products").filter(pl.col("row_id") == new_row["row_id"])[
        "title"
    ].to_list() == ["Renamed Trench Coat"]
    invalid = ledger.filter(pl.col("row_index") == blanked).row(0, named=True)
    assert invalid["outcome"] == "invalid" and "title" in invalid["reason"]
    _, report = latest_metadata(ws, "data_quality_report")
    assert report["n_invalid"] == before_report["n_invalid"] + 1
    assert report["n_curated"] == before_report["n_curated"] - 1
    assert refresh(ws.instance, ws.defs, SELECTION).waves == []


def test_new_image_url_downloads_exactly_one_image(ws: Workspace) -> None:
    assert stale_or_missing_keys(ws.instance, ws.defs.resolve_asset_graph(), SELECTION) == []
    urls = set(pl.read_csv(ws.catalogue, infer_schema=False)["imageurl"])
    unused = sorted(p for p in ws.demo_images.iterdir() if p.as_uri() not in urls)[0]
    (row,) = plain_curated_rows(ws, 1)
    before_files, n_failed = stored_images(ws.data_dir), failed_urls(ws)
    edit_catalogue(ws, {row: {"imageurl": unused.as_uri()}})

    result = refresh(ws.instance, ws.defs, SELECTION)

    assert result.success
    _, images_meta = latest_metadata(ws, "product_images")
    assert images_meta["attempted"] == n_failed + 1
    new_files = stored_images(ws.data_dir) - before_files
    assert len(new_files) == 1
    row_id = table(ws, "raw_catalogue").filter(pl.col("row_index") == row)["row_id"][0]
    fetched = table(ws, "product_images").filter(pl.col("row_id") == row_id).row(0, named=True)
    assert fetched["status"] == "ok" and fetched["url"] == unused.as_uri()
    assert new_files == {Path(fetched["path"]).name}
    assert "image_hashes" in materialized_in(result)  # a new sha256 to hash


def test_code_version_bump_makes_only_that_asset_and_its_downstream_stale(ws: Workspace) -> None:
    graph = ws.defs.resolve_asset_graph()
    assert stale_or_missing_keys(ws.instance, graph, SELECTION) == []
    bumped = images.image_hashes.map_asset_specs(
        lambda spec: spec.replace_attributes(code_version="bumped")
    )
    variant = pipeline_definitions(image_hashes=bumped)
    variant_graph = variant.resolve_asset_graph()
    key = dg.AssetKey("image_hashes")
    assert stale_or_missing_keys(ws.instance, variant_graph, SELECTION) == [key]
    downstream = dg.AssetSelection.keys(key).downstream().resolve(variant_graph)
    upstream = dg.AssetSelection.keys(key).upstream().resolve(variant_graph) - {key}
    assert {"duplicate_clusters", "curation_ledger", "training_dataset"} <= {
        k.to_user_string() for k in downstream
    }
    assert next_wave(ws.instance, variant_graph, SELECTION) == [key]

    result = refresh(ws.instance, variant, SELECTION)

    # Same hashes under the new code -> same data version -> nothing below it goes stale,
    # and nothing above it was touched.
    assert result.success and result.waves == [[key]]
    assert not upstream & {k for wave in result.waves for k in wave}
    assert stale_or_missing_keys(ws.instance, variant_graph, SELECTION) == []
    # Back on the original code the asset is stale again (code version differs), alone.
    assert stale_or_missing_keys(ws.instance, graph, SELECTION) == [key]
    assert refresh(ws.instance, ws.defs, SELECTION).waves == [[key]]


def test_catalogue_sensor_records_a_new_version_and_walks_the_waves(ws: Workspace) -> None:
    graph = ws.defs.resolve_asset_graph()
    repo = ws.defs.get_repository_def()
    pipeline = ws.defs.resources["pipeline"]

    def tick(cursor: str | None):
        context = dg.build_sensor_context(
            instance=ws.instance,
            cursor=cursor,
            repository_def=repo,
            resources={"pipeline": pipeline},
        )
        return catalogue_changed_sensor(context)

    first = tick(None)
    version = first.cursor
    assert isinstance(tick(version), dg.SkipReason)  # unchanged and nothing stale

    (row,) = plain_curated_rows(ws, 1)
    original = ws.catalogue.read_bytes()
    edit_catalogue(ws, {row: {"full_price": "1234.0"}})
    changed = tick(version)
    assert changed.cursor != version
    (observation,) = changed.asset_events
    assert observation.asset_key == CATALOGUE_SOURCE
    (request,) = changed.run_requests
    assert request.asset_selection == [dg.AssetKey("raw_catalogue")]

    # What the daemon does with that tick: store the observation, launch the run.
    ws.instance.report_runless_asset_event(observation)
    assert materialize(ws.instance, ws.defs, request.asset_selection).success
    follow_up = tick(changed.cursor)
    assert isinstance(follow_up, dg.RunRequest)
    assert {k.to_user_string() for k in follow_up.asset_selection} == {
        "validated_products",
        "rejected_rows",
    }
    # Deterministic key: a failed wave is not relaunched every minute.
    assert follow_up.run_key == wave_run_key(ws.instance, graph, follow_up.asset_selection)
    assert tick(changed.cursor).run_key == follow_up.run_key
    # Reverting the file brings back the version everything below raw_catalogue was built
    # from: only raw_catalogue itself is redone.
    ws.catalogue.write_bytes(original)
    reverted = refresh(ws.instance, ws.defs, SELECTION)
    assert reverted.success and reverted.waves == [[dg.AssetKey("raw_catalogue")]]
    assert isinstance(tick(version), dg.SkipReason)
