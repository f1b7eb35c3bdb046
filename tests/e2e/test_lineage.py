"""Lineage that holds: each checkpoint names the catalogue version and rows its dataset really
came from, after partial re-materializations and rebuilds; `trace` answers both ways; `gc`
keeps what checkpoints need.

One small catalogue (the demo's first rows) and the tiny model for a couple of steps: the
point is which files name which data, not the model's quality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import datasets
import polars as pl
import pytest

from dagster_project.automation import PIPELINE_SELECTION
from dagster_project.cli import main as cli_main
from dagster_project.definitions import build_definitions
from dagster_project.refresh import evaluate, load_cursor, observe_catalogue, save_cursor
from tests.e2e.helpers import copy_catalogue, pipeline_env, write_dagster_home

# Minutes on an idle 2-core box; a loaded CI box can take several times that.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

N_ROWS = 200
TRAIN = {"max_steps": 2, "image_size": 32, "eval_every_steps": 0, "per_device_batch_size": 8}
EVALUATE = {"max_samples": 4, "batch_size": 4}


@dataclass
class Story:
    data_dir: Path
    catalogue: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    removed_row: str
    versions: dict[str, str]  # "before" / "after": raw_catalogue data versions
    models: dict[str, Path]  # "first", "retrained", "refreshed"
    manifests_then: dict[str, pl.DataFrame]


def run_config(keys: list[dg.AssetKey], **train: int) -> dict:
    ops = {"lora_adapter": {**TRAIN, **train}, "model_evaluation": EVALUATE}
    names = {k.to_user_string() for k in keys}
    return {"ops": {name: {"config": cfg} for name, cfg in ops.items() if name in names}}


def materialize(story_defs: dg.Definitions, instance, keys: list[str], **train: int) -> str:
    selection = [dg.AssetKey(k) for k in keys]
    result = story_defs.resolve_job_def("full_pipeline").execute_in_process(
        instance=instance, asset_selection=selection, run_config=run_config(selection, **train)
    )
    assert result.success
    return result.run_id


def refresh(defs: dg.Definitions, instance) -> list[set[str]]:
    """`make refresh` with a test-sized training config: evaluate the automation conditions,
    run what they request, until they request nothing."""
    observe_catalogue(instance, defs)
    cursor, waves = load_cursor(instance), []
    while True:
        keys, cursor = evaluate(instance, defs, PIPELINE_SELECTION, cursor)
        save_cursor(instance, cursor)
        if not keys:
            return waves
        materialize(defs, instance, [k.to_user_string() for k in keys])
        waves.append({k.to_user_string() for k in keys})


def record_evaluation(defs: dg.Definitions, instance) -> None:
    """What `make demo` ends with: one evaluation stored, so a later refresh sees what changed
    after it."""
    save_cursor(instance, evaluate(instance, defs, PIPELINE_SELECTION, load_cursor(instance))[1])


def model_dir(instance) -> Path:
    event = instance.get_latest_materialization_event(dg.AssetKey("lora_adapter"))
    return Path(event.asset_materialization.metadata["model_dir"].value)


def raw_version(instance) -> str:
    event = instance.get_latest_materialization_event(dg.AssetKey("raw_catalogue"))
    return event.asset_materialization.tags["dagster/data_version"]


def lineage(path: Path) -> dict:
    return json.loads((path / "lineage.json").read_text())


def trace(capsys, data_dir: Path, *args: str) -> str:
    assert cli_main(["trace", *args]) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def story(tmp_path_factory, demo_catalogue):
    root = tmp_path_factory.mktemp("lineage")
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, root / "catalogue.csv", N_ROWS)
    home = write_dagster_home(root / "home")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in pipeline_env(str(root / "data"), catalogue, home).items():
            mp.setenv(name, value)
        defs = build_definitions()
        instance = dg.DagsterInstance.from_config(str(home))
        # Everything but the evaluation (it runs once, at the end, on the refreshed adapter).
        observe_catalogue(instance, defs)
        graph = defs.resolve_asset_graph()
        keys = PIPELINE_SELECTION.resolve(graph) - {dg.AssetKey("model_evaluation")}
        materialize(defs, instance, sorted(k.to_user_string() for k in keys))
        record_evaluation(defs, instance)
        first = model_dir(instance)
        manifest = pl.read_parquet(first / "training_rows.parquet")
        # A real train row with synthetic variants: it trains directly and through them.
        parents = manifest.filter(pl.col("is_synthetic"))["parent_row_id"]
        removed = manifest.filter(~pl.col("is_synthetic") & pl.col("row_id").is_in(parents))
        removed_row, removed_index = removed["row_id"][0], removed["row_index"][0]
        before = raw_version(instance)

        # The catalogue changes (the row is withdrawn); only raw_catalogue is rematerialized,
        # then lora_adapter alone is retrained with new hyperparameters.
        frame = pl.read_csv(catalogue, infer_schema=False)
        frame.with_row_index("i").filter(pl.col("i") != removed_index).drop("i").write_csv(
            catalogue
        )
        observe_catalogue(instance, defs)
        materialize(defs, instance, ["raw_catalogue"])
        after = raw_version(instance)
        materialize(defs, instance, ["lora_adapter"], max_steps=3)
        retrained = model_dir(instance)

        # Then a full refresh rebuilds everything downstream of the change.
        refresh(defs, instance)
        refreshed = model_dir(instance)
        yield Story(
            data_dir=root / "data",
            catalogue=catalogue,
            instance=instance,
            defs=defs,
            removed_row=removed_row,
            versions={"before": before, "after": after},
            models={"first": first, "retrained": retrained, "refreshed": refreshed},
            manifests_then={"first": manifest},
        )
        instance.dispose()


def test_each_checkpoint_names_the_catalogue_version_its_dataset_came_from(story) -> None:
    assert story.versions["before"] != story.versions["after"]
    first, retrained, refreshed = (lineage(story.models[k]) for k in story.models)
    assert len({str(p) for p in story.models.values()}) == 3
    # Retrained after raw_catalogue changed, on the stored (older) dataset: the old version.
    assert first["catalogue_data_version"] == story.versions["before"]
    assert retrained["catalogue_data_version"] == story.versions["before"]
    assert retrained["config"]["max_steps"] == 3
    assert refreshed["catalogue_data_version"] == story.versions["after"]
    assert retrained["dataset_snapshot"] == first["dataset_snapshot"]
    assert refreshed["dataset_snapshot"]["uri"] != first["dataset_snapshot"]["uri"]
    for entry in (first, retrained, refreshed):
        assert entry["upstream_data_versions"]["raw_catalogue"] == entry["catalogue_data_version"]
        assert Path(entry["dataset_snapshot"]["uri"]).name == entry["dataset_fingerprint"]


def test_manifests_list_exactly_the_rows_their_dataset_held_after_the_rebuild(story) -> None:
    for name, folder in story.models.items():
        entry = lineage(folder)
        rows = pl.read_parquet(folder / "training_rows.parquet")
        snapshot = datasets.load_from_disk(entry["dataset_snapshot"]["uri"])  # still loads
        for split in ("train", "validation", "test"):
            ids = rows.filter(pl.col("split") == split)["row_id"].to_list()
            assert ids == snapshot[split]["row_id"], (name, split)
        assert rows.height == sum(entry["split_sizes"].values())
    first = pl.read_parquet(story.models["first"] / "training_rows.parquet")
    assert first.equals(story.manifests_then["first"])
    assert story.removed_row in first["row_id"].to_list()
    refreshed = pl.read_parquet(story.models["refreshed"] / "training_rows.parquet")
    assert story.removed_row not in refreshed["row_id"].to_list()
    assert story.removed_row not in refreshed["parent_row_id"].drop_nulls().to_list()


def test_evaluation_judges_the_adapter_it_was_given(story) -> None:
    records = story.instance.fetch_materializations(
        dg.AssetKey("model_evaluation"), limit=10
    ).records
    evaluated = [Path(r.asset_materialization.metadata["model_dir"].value) for r in records]
    # Newest first: the refresh ends with the refreshed adapter's evaluation.
    assert evaluated[0] == story.models["refreshed"]
    # The automation condition evaluates a new adapter as soon as it exists, so the refresh may
    # first judge the retrained-alone one; each evaluation sits beside the adapter it was given.
    assert set(evaluated) <= {story.models["retrained"], story.models["refreshed"]}
    assert len(evaluated) == len(set(evaluated))
    for path in evaluated:
        assert (path / "eval.json").exists()
        assert json.loads((path / "eval_config.json").read_text())["model_dir"] == str(path)
    assert not (story.models["first"] / "eval.json").exists()  # never asked for


def test_trace_row_names_the_old_checkpoints_and_not_the_new_one(story, capsys) -> None:
    out = trace(capsys, story.data_dir, "--row", story.removed_row)
    assert str(story.models["first"]) in out and str(story.models["retrained"]) in out
    assert str(story.models["refreshed"]) not in out
    assert "directly + " in out and "Current catalogue: not present" in out
    nobody = trace(capsys, story.data_dir, "--row", "no-such-row")
    assert "No checkpoint trained on row no-such-row" in nobody


def test_trace_model_on_an_old_checkpoint_loads_its_snapshot(story, capsys) -> None:
    entry = lineage(story.models["first"])
    out = trace(capsys, story.data_dir, "--model", entry["dagster_run_id"])
    assert str(story.models["first"]) in out
    assert story.versions["before"] in out and entry["dataset_snapshot"]["uri"] in out
    assert "loads: {'train': " in out
    assert "| train |" in out and "| outcome | rows |" in out
    ledger = pl.read_parquet(entry["curation_ledger"])
    excluded = ledger.filter(pl.col("outcome") != "curated")
    assert excluded.height > 0 and excluded["row_id"][0] in out  # where each excluded row went
    by_dir = trace(capsys, story.data_dir, "--model", str(story.models["refreshed"]))
    assert story.versions["after"] in by_dir


def test_gc_keeps_referenced_snapshots_and_removes_the_rest(story, capsys) -> None:
    snapshots = story.data_dir / "hf_dataset"
    referenced = {Path(lineage(m)["dataset_snapshot"]["uri"]).name for m in story.models.values()}
    orphan = snapshots / ("f" * 32)
    orphan.mkdir()
    (orphan / "dataset_dict.json").write_text("{}")
    images = sorted((story.data_dir / "images").rglob("*.*"))
    stray = images[0].with_name("0" * 64 + ".png")
    stray.write_bytes(b"not referenced by anything")

    assert cli_main(["gc"]) == 0
    assert not orphan.exists() and not stray.exists()
    assert {p.name for p in snapshots.iterdir() if p.is_dir()} == referenced
    named = pl.concat(
        pl.read_parquet(m / "training_rows.parquet").select("image_path")
        for m in story.models.values()
    )["image_path"].to_list()
    current = pl.read_parquet(story.data_dir / "product_images.parquet")["path"].drop_nulls()
    assert all(Path(p).exists() for p in [*named, *current.to_list()])
    for folder in story.models.values():
        datasets.load_from_disk(lineage(folder)["dataset_snapshot"]["uri"])

    # Once the checkpoints that needed the old snapshot are gone, so is it.
    old = Path(lineage(story.models["first"])["dataset_snapshot"]["uri"])
    for name in ("first", "retrained"):
        for path in sorted(story.models[name].rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        story.models[name].rmdir()
    assert cli_main(["gc"]) == 0
    assert not old.exists()
    assert Path(lineage(story.models["refreshed"])["dataset_snapshot"]["uri"]).exists()
    capsys.readouterr()
