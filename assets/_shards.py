"""The three steps of a sharded per-image asset (curation.shards), shared by product_images,
image_hashes and image_quality.

Each is a graph-backed asset: a planning op yields one dynamic output per shard that needs
work, a mapped op computes that shard (the executor runs each as its own step, on any worker),
and a collecting op builds the asset's table from every shard's stored result. The asset key,
its table and its data version are what they were before sharding.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import polars as pl
from pydantic import BaseModel

from assets._common import previous_table
from assets.resources import PipelineSettings
from assets.values_io import VALUES_IO_MANAGER_KEY
from curation.shards import SHARD_COLUMN, ShardStore, keys_of, shards_to_run
from schemas.markdown import markdown_table


class ShardTask(BaseModel):
    """One shard a run must compute."""

    shard: int
    n_shards: int


class ShardResult(BaseModel):
    """What computing one shard did, and where (the process shows which worker ran it)."""

    shard: int
    n_shards: int
    keys: int
    computed: int
    counts: dict[str, int] = {}
    seconds: float
    host: str
    pid: int


# The one IO manager the small values between a sharded asset's ops go through.
TASKS_OUT = dg.DynamicOut(ShardTask, io_manager_key=VALUES_IO_MANAGER_KEY)
RESULT_OUT = dg.Out(ShardResult, io_manager_key=VALUES_IO_MANAGER_KEY)

# (rows of one shard, that shard's previous result or None) -> (result, counts); the result
# holds one row per key, `counts["computed"]` says how many keys needed work.
ShardWork = Callable[[pl.DataFrame, pl.DataFrame | None], tuple[pl.DataFrame, dict[str, int]]]


def plan(
    context: dg.OpExecutionContext,
    store: ShardStore,
    wanted: pl.DataFrame,
    key: str,
    reusable: pl.Expr,
) -> Iterator[dg.DynamicOutput[ShardTask]]:
    """One dynamic output per shard whose stored result does not answer its keys."""
    todo = shards_to_run(wanted, store, key, reusable)
    n_present = wanted.get_column(SHARD_COLUMN).n_unique()
    context.log.info(
        f"{store.name}: {len(todo)} of {n_present} shards to compute"
        f" ({store.n_shards} in all): {todo}"
    )
    for shard in todo:
        yield dg.DynamicOutput(
            ShardTask(shard=shard, n_shards=store.n_shards), mapping_key=f"shard_{shard}"
        )


def run_shard(
    pipeline: PipelineSettings,
    name: str,
    task: ShardTask,
    wanted: pl.DataFrame,
    key: str,
    work: ShardWork,
) -> ShardResult:
    """Computes one shard of asset `name` and stores its result; the asset's last whole table
    stands in for a shard with no stored result yet, so a new shard count reuses old work."""
    started = time.monotonic()
    store = shard_store(pipeline, name)
    keys = keys_of(wanted, task.shard, key)
    rows = wanted.filter(pl.col(SHARD_COLUMN) == task.shard).drop(SHARD_COLUMN)
    previous = store.read(task.shard)
    if previous is None:
        previous = previous_table(pipeline, name)
    frame, counts = work(rows, previous)
    store.write(task.shard, frame)
    return ShardResult(
        shard=task.shard,
        n_shards=task.n_shards,
        keys=keys.height,
        computed=counts.pop("computed"),
        counts=counts,
        seconds=round(time.monotonic() - started, 3),
        host=socket.gethostname(),
        pid=os.getpid(),
    )


def sharded_asset(
    group: str,
    code_version: str,
    config: type[dg.Config] | None = None,
    config_op: str = "",
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`@dg.graph_asset` for a sharded table; `config` is the asset's own config (what the UI's
    launchpad shows under the asset), handed to the op `config_op` inside it."""
    mapping = None
    if config is not None:
        mapping = dg.ConfigMapping(
            config_fn=lambda values: {config_op: {"config": values}},
            config_schema=config.to_config_schema(),
        )
    return dg.graph_asset(
        group_name=group, code_version=code_version, kinds={"polars"}, config=mapping
    )


def shard_store(pipeline: PipelineSettings, name: str) -> ShardStore:
    return ShardStore(pipeline.data_dir, name, pipeline.image_shards)


def shard_metadata(store: ShardStore, wanted: pl.DataFrame, results: list[ShardResult]) -> dict:
    """Asset metadata: how many shards ran, and for each what it did and on which process."""
    columns = ("shard", "keys", "computed", "seconds", "host", "pid")
    table = markdown_table(
        columns, [tuple(getattr(r, c) for c in columns) for r in sorted(results, key=_shard)]
    )
    return {
        "shards": store.n_shards,
        "shards_with_rows": wanted.get_column(SHARD_COLUMN).n_unique() if wanted.height else 0,
        "shards_computed": len(results),
        "shard_runs": dg.MetadataValue.md(table if results else "_(every shard was reused)_"),
    }


def _shard(result: ShardResult) -> int:
    return result.shard
