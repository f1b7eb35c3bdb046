"""Staleness that tells the truth: `make refresh` redoes exactly what a change invalidated.

One persistent instance and data dir per module (a full materialization is the expensive part);
every test starts from and leaves an up-to-date state, asserting the former first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from curation.shards import shard_of
from dagster_project.automation import CATALOGUE_SOURCE, automation_sensor
from dagster_project.cli import selection_for
from dagster_project.refresh import (
    DEFAULT_TARGET,
    RefreshResult,
    Target,
    code_server,
    evaluate,
    load_cursor,
    observe_catalogue,
    refresh,
    requested_now,
    save_cursor,
    submit,
)
from tests.e2e.helpers import copy_catalogue, pipeline_env, write_dagster_home

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a full build, then refreshes

GROUPS = ["ingest", "images", "curation", "dataset"]  # not `model`: no training here
SELECTION = selection_for(GROUPS)
# Every ledger outcome occurs among the first 800 demo rows (invalid, download_failed,
# bad_image, duplicate, curated); what a refresh redoes depends on which rows changed, not on
# how many there are.
N_ROWS = 800
REPO_ROOT = Path(__file__).resolve().parents[2]
MATERIALIZATION = dg.DagsterEventType.ASSET_MATERIALIZATION


@dataclass
class Workspace:
    catalogue: Path
    data_dir: Path
    demo_images: Path
    defs: dg.Definitions
    instance: dg.DagsterInstance
    first: RefreshResult  # the initial materialization, on a fresh instance


@pytest.fixture(scope="module")
def ws(tmp_path_factory, demo_catalogue):
    root = tmp_path_factory.mktemp("refresh")
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, root / "catalogue.csv", N_ROWS)
    home = write_dagster_home(root / "home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in pipeline_env(str(root / "data"), catalogue, home).items():
            mp.setenv(name, value)
        # The configured executor runs every refresh's steps; here the in-process one, whose
        # start-up is cheapest (tests/deploy/test_celery_executor.py runs them on Celery).
        mp.setenv("DAGSTER_EXECUTOR", "in_process")
        defs = DEFAULT_TARGET.load()
        instance = dg.DagsterInstance.from_config(str(home))
        first = refresh(instance, DEFAULT_TARGET, SELECTION)
        yield Workspace(catalogue, root / "data", demo_catalogue.images_dir, defs, instance, first)
        instance.dispose()


def nothing_requested(ws: Workspace, target: Target = DEFAULT_TARGET) -> bool:
    return requested_now(ws.instance, target, SELECTION) == []


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


def runs_since(ws: Workspace, n_before: int) -> list[dg.DagsterRun]:
    """Runs created after the first `n_before`, oldest first."""
    records = ws.instance.get_run_records()
    return [r.dagster_run for r in reversed(records[: len(records) - n_before])]


def materialization_counts(ws: Workspace, runs: list[dg.DagsterRun]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        for event in ws.instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ):
            key = event.dagster_event.asset_key.to_user_string()
            counts[key] = counts.get(key, 0) + 1
    return counts


def refresh_command() -> list[str]:
    """What `make refresh GROUPS=...` runs."""
    return [sys.executable, "-m", "dagster_project.cli", "refresh", "--groups", ",".join(GROUPS)]


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


def failed_urls_in_shard(ws: Workspace, url: str, n_shards: int) -> int:
    """Failed URLs in `url`'s download shard: the ones a run of that shard retries."""
    failed = table(ws, "product_images").filter(pl.col("status") != "ok")["url"].unique()
    (shard,) = shard_of([url], n_shards)
    return sum(s == shard for s in shard_of(failed.to_list(), n_shards))


def test_after_a_full_materialization_refresh_launches_nothing(ws: Workspace) -> None:
    assert ws.first.success
    assert materialized_in(ws.first) == {
        k.to_user_string() for k in SELECTION.resolve(ws.defs.resolve_asset_graph())
    }
    assert len(ws.first.waves) == 1  # missing assets need no waves: one run builds them all
    runs = n_runs(ws)
    again = refresh(ws.instance, DEFAULT_TARGET, SELECTION)
    assert again.success and again.waves == []
    assert n_runs(ws) == runs
    assert nothing_requested(ws)


@pytest.mark.timeout(1800)  # two CLI refreshes of the whole chain, one after the other
def test_title_edit_reruns_the_chain_without_downloading(ws: Workspace) -> None:
    """Through the CLI, as `make refresh` runs it, with a second refresh started while the first
    is running: the second computes nothing the first computes."""
    assert nothing_requested(ws)
    renamed, blanked = plain_curated_rows(ws, 2)
    before_ledger = table(ws, "curation_ledger")
    before_files = stored_images(ws.data_dir)
    _, before_report = latest_metadata(ws, "data_quality_report")
    edit_catalogue(ws, {renamed: {"title": "Renamed Trench Coat"}, blanked: {"title": " "}})
    n_before = n_runs(ws)

    first_log = ws.data_dir.parent / "first_refresh.log"
    with open(first_log, "w") as log:  # a file, not a pipe: nothing reads it while we wait
        first = subprocess.Popen(
            refresh_command(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 300
        while not runs_since(ws, n_before) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        second = subprocess.run(
            refresh_command(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200
        )
        first.wait(timeout=1200)
    first_out = first_log.read_text()

    assert first.returncode == 0, first_out[-3000:]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Another refresh is running" in second.stdout
    assert "Nothing to do" in second.stdout  # it found the first's work done, launched nothing
    runs = runs_since(ws, n_before)
    counts = materialization_counts(ws, runs)
    assert set(counts.values()) == {1}, counts  # no asset computed twice by the two refreshes
    assert {"raw_catalogue", "validated_products", "product_images", "curation_ledger"} <= set(
        counts
    )
    assert {"data_quality_report", "dataset_splits", "training_dataset"} <= set(counts)
    run_id, images_meta = latest_metadata(ws, "product_images")
    assert run_id in {run.run_id for run in runs}
    # A title edit leaves every URL answered: no download shard runs, nothing is fetched.
    assert (images_meta["attempted"], images_meta["shards_computed"]) == (0, 0)
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
    assert refresh(ws.instance, DEFAULT_TARGET, SELECTION).waves == []


def test_new_image_url_downloads_exactly_one_image(ws: Workspace) -> None:
    assert nothing_requested(ws)
    urls = set(pl.read_csv(ws.catalogue, infer_schema=False)["imageurl"])
    unused = sorted(p for p in ws.demo_images.iterdir() if p.as_uri() not in urls)[0]
    (row,) = plain_curated_rows(ws, 1)
    _, images_meta = latest_metadata(ws, "product_images")
    n_shards = images_meta["shards"]
    assert images_meta["shards_with_rows"] == n_shards > 1  # the test means something
    before_files = stored_images(ws.data_dir)
    n_failed = failed_urls_in_shard(ws, unused.as_uri(), n_shards)
    edit_catalogue(ws, {row: {"imageurl": unused.as_uri()}})

    result = refresh(ws.instance, DEFAULT_TARGET, SELECTION)

    assert result.success
    _, images_meta = latest_metadata(ws, "product_images")
    # One shard (the new URL's) downloads: that URL and the failures it retries, no other.
    assert images_meta["shards_computed"] == 1
    assert images_meta["attempted"] == n_failed + 1
    for key in ("image_hashes", "image_quality"):  # one new picture: one shard of each
        _, meta = latest_metadata(ws, key)
        assert (meta["shards_computed"], meta["computed"]) == (1, 1), (key, meta)
    new_files = stored_images(ws.data_dir) - before_files
    assert len(new_files) == 1
    row_id = table(ws, "raw_catalogue").filter(pl.col("row_index") == row)["row_id"][0]
    fetched = table(ws, "product_images").filter(pl.col("row_id") == row_id).row(0, named=True)
    assert fetched["status"] == "ok" and fetched["url"] == unused.as_uri()
    assert new_files == {Path(fetched["path"]).name}
    assert "image_hashes" in materialized_in(result)  # a new sha256 to hash


def test_code_version_bump_reruns_only_that_asset(ws: Workspace) -> None:
    assert nothing_requested(ws)
    variant = Target.of(DEFAULT_TARGET.factory, code_versions={"image_hashes": "bumped"})
    variant_graph = variant.load().resolve_asset_graph()
    key = dg.AssetKey("image_hashes")
    assert variant_graph.get(key).code_version == "bumped"
    downstream = dg.AssetSelection.keys(key).downstream().resolve(variant_graph)
    upstream = dg.AssetSelection.keys(key).upstream().resolve(variant_graph) - {key}
    assert {"duplicate_clusters", "curation_ledger", "training_dataset"} <= {
        k.to_user_string() for k in downstream
    }
    assert requested_now(ws.instance, variant, SELECTION) == [key]

    result = refresh(ws.instance, variant, SELECTION)

    # Same hashes under the new code -> same data version -> nothing below it runs, and
    # nothing above it was touched.
    assert result.success and result.waves == [[key]]
    assert not upstream & {k for wave in result.waves for k in wave}
    assert nothing_requested(ws, variant)
    # Back on the original code the code version changed again: that asset alone reruns.
    assert requested_now(ws.instance, DEFAULT_TARGET, SELECTION) == [key]
    assert refresh(ws.instance, DEFAULT_TARGET, SELECTION).waves == [[key]]


def test_automation_sensor_requests_exactly_what_a_changed_catalogue_changes(
    ws: Workspace,
) -> None:
    """The UI path: the automation condition sensor, one evaluation at a time (the test helper
    evaluates the same conditions the daemon does)."""
    assert automation_sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert nothing_requested(ws)
    (row,) = plain_curated_rows(ws, 1)
    original = ws.catalogue.read_bytes()
    edit_catalogue(ws, {row: {"full_price": "1234.0"}})
    cursor = load_cursor(ws.instance)
    # What the source's observation (run by the sensor on its cron) records.
    observe_catalogue(ws.instance, ws.defs)
    requested, cursor = evaluate(ws.instance, ws.defs, SELECTION, cursor)
    save_cursor(ws.instance, cursor)  # the daemon keeps its cursor after every tick
    assert requested == [dg.AssetKey("raw_catalogue")]
    with code_server(ws.instance, DEFAULT_TARGET) as workspace_args:
        assert submit(ws.instance, DEFAULT_TARGET, requested, workspace_args).is_success
    requested, cursor = evaluate(ws.instance, ws.defs, SELECTION, cursor)
    save_cursor(ws.instance, cursor)
    assert {k.to_user_string() for k in requested} == {"validated_products", "rejected_rows"}
    # Reverting the file before that request ran: raw_catalogue is redone first, then what
    # reads it directly (its data version changed twice since they were built); their outputs
    # are identical to what everything below was built from, so the chain stops there: no
    # image is fetched or hashed, no split is redone.
    ws.catalogue.write_bytes(original)
    reverted = refresh(ws.instance, DEFAULT_TARGET, SELECTION)
    assert reverted.success
    assert reverted.waves[0] == [dg.AssetKey("raw_catalogue")]
    assert materialized_in(reverted) == {
        "raw_catalogue",
        "validated_products",
        "rejected_rows",
        "curation_ledger",
        "curated_products",
        "training_dataset",
    }
    assert nothing_requested(ws)
    assert CATALOGUE_SOURCE not in reverted.waves[0]


def test_every_multi_asset_output_is_selectable_alone(ws: Workspace) -> None:
    """`--select X` for each key (from the CLI or the UI) needs subsettable multi-assets."""
    job = ws.defs.resolve_implicit_global_asset_job_def()
    for key in ws.defs.resolve_asset_graph().materializable_asset_keys:
        assert job.get_subset(asset_selection={key}).asset_layer.selected_asset_keys == {key}
    n_before = n_runs(ws)
    with code_server(ws.instance, DEFAULT_TARGET) as workspace_args:
        for name in ("validated_products", "rejected_rows", "curated_products"):
            run = submit(ws.instance, DEFAULT_TARGET, [dg.AssetKey(name)], workspace_args)
            assert run.is_success, name
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "materialize"]
        + ["-m", "dagster_project.definitions", "--select", "curation_ledger"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    runs = runs_since(ws, n_before)
    assert [set(materialization_counts(ws, [run])) for run in runs] == [
        {"validated_products"},
        {"rejected_rows"},
        {"curated_products"},
        {"curation_ledger"},
    ]
    # Same content, same data versions: nothing downstream has anything to do.
    assert nothing_requested(ws)
