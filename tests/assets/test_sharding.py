"""Dagster tier: the sharded image assets. A sharded run equals an unsharded one, and one
edited image URL costs one shard of each per-image asset, nothing else."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import curation, dataset, images, ingest
from assets.resources import DownloadSettings, PipelineSettings, parquet_io_manager
from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager
from curation.shards import shard_of
from tests.e2e.helpers import copy_catalogue

MODULES = [ingest, images, curation, dataset]
# Every ledger outcome and duplicate kind occurs in the demo's first rows; sharding depends on
# how keys spread over shards, not on how many there are.
N_ROWS = 400
UP_TO_SPLITS = dg.AssetSelection.keys("dataset_splits", "curation_ledger").upstream()
COMPARED = ("curation_ledger", "duplicate_clusters", "dataset_splits", "image_quality")
PER_IMAGE = ("product_images", "image_hashes", "image_quality")


class Pipeline:
    def __init__(self, root: Path, catalogue: Path, n_shards: int) -> None:
        self.data_dir = str(root / "data")
        self.catalogue = catalogue
        resources = {
            "pipeline": PipelineSettings(
                data_dir=self.data_dir, catalogue_uri=str(catalogue), image_shards=n_shards
            ),
            "downloads": DownloadSettings(),
            "io_manager": parquet_io_manager(self.data_dir),
            VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=self.data_dir),
        }
        defs = dg.Definitions(
            assets=dg.load_assets_from_modules(MODULES),
            asset_checks=dg.load_asset_checks_from_modules(MODULES),
            resources=resources,
        )
        self.job = defs.resolve_implicit_global_asset_job_def()
        self.graph = defs.resolve_asset_graph()
        self.instance = dg.DagsterInstance.ephemeral()

    def run(self) -> dg.ExecuteInProcessResult:
        keys = list(UP_TO_SPLITS.resolve(self.graph))
        result = self.job.execute_in_process(instance=self.instance, asset_selection=keys)
        assert result.success
        return result

    def table(self, name: str) -> pl.DataFrame:
        """The stored table, its paths relative to the data dir (two runs' dirs differ)."""
        frame = pl.read_parquet(f"{self.data_dir}/{name}.parquet")
        paths = [c for c in frame.columns if c.endswith("path")]
        return frame.with_columns(pl.col(paths).str.strip_prefix(self.data_dir))


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_catalogue):
    root = tmp_path_factory.mktemp("sharding")
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, root / "catalogue.csv", N_ROWS)
    sharded, whole = Pipeline(root / "four", catalogue, 4), Pipeline(root / "one", catalogue, 1)
    return sharded, sharded.run(), whole, whole.run()


def test_sharded_and_unsharded_runs_agree(runs) -> None:
    sharded, first, whole, _ = runs
    for key in PER_IMAGE:
        assert metadata(first, key)["shards_computed"] == 4, key
    for name in COMPARED:
        assert sharded.table(name).equals(whole.table(name)), name
    columns = [c for c in sharded.table("product_images").columns if c != "elapsed_s"]
    assert (
        sharded.table("product_images")
        .select(columns)
        .equals(whole.table("product_images").select(columns))
    )
    assert sharded.table("image_hashes").equals(whole.table("image_hashes"))
    assert len(list(Path(sharded.data_dir, "shards", "product_images", "4").iterdir())) == 4


def test_one_edited_image_url_recomputes_one_shard(runs, demo_catalogue) -> None:
    sharded, _, _, _ = runs
    frame = pl.read_csv(sharded.catalogue, infer_schema=False)
    used = set(frame["imageurl"])
    new_url = next(
        p.as_uri() for p in sorted(demo_catalogue.images_dir.iterdir()) if p.as_uri() not in used
    )
    before = sharded.table("product_images")
    edited_row = before.filter(pl.col("status") == "ok")["row_id"][7]
    raw = sharded.table("raw_catalogue").filter(pl.col("row_id") == edited_row)
    frame.with_row_index("i").with_columns(
        imageurl=pl.when(pl.col("i") == raw["row_index"][0])
        .then(pl.lit(new_url))
        .otherwise(pl.col("imageurl"))
    ).drop("i").write_csv(sharded.catalogue)
    stored = {p.name for p in Path(sharded.data_dir, "images").rglob("*") if p.is_file()}

    rerun = sharded.run()

    (shard,) = shard_of([new_url], 4)
    failed = before.filter(pl.col("status") != "ok")["url"].unique().to_list()
    retried = sum(s == shard for s in shard_of(failed, 4))
    downloads = metadata(rerun, "product_images")
    assert (downloads["shards_computed"], downloads["attempted"]) == (1, 1 + retried)
    assert f"| {shard} |" in downloads["shard_runs"]
    for key in ("image_hashes", "image_quality"):
        assert (metadata(rerun, key)["shards_computed"], metadata(rerun, key)["computed"]) == (
            1,
            1,
        ), key
    now = {p.name for p in Path(sharded.data_dir, "images").rglob("*") if p.is_file()}
    row = sharded.table("product_images").filter(pl.col("url") == new_url).row(0, named=True)
    assert row["status"] == "ok"
    new_files = {Path(row["path"]).name} | (
        {Path(row["normalised_path"]).name} if row["normalised_path"] else set()
    )
    assert now - stored == new_files  # the new picture (and its normalised copy), no other
    assert sharded.table("image_hashes").filter(pl.col("sha256") == row["sha256"]).height == 1
