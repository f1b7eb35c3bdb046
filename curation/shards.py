"""Shards of per-image work: which rows go together, where each shard's result is kept, and
which shards a run must compute again.

The per-image steps (download, normalise, hash, measure) split their keys (image URL, or
stored sha256) into `n_shards` groups by a stable hash, so an executor can run the groups as
separate steps on separate workers. Each shard's result is stored at
`{data_dir}/shards/{name}/{n_shards}/{shard:04d}.parquet`: the next run reads it back, and a
shard whose wanted keys the stored result already answers is not computed again. That is what
makes a one-row change cost one shard.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec
import polars as pl

from schemas.atomic import write_bytes_atomic
from schemas.tables import empty_frame

SHARD_COLUMN = "shard"
# A handful by default: enough for the executor to keep each core (or a couple of workers)
# busy, few enough that the demo does not pay many step start-ups for 3,000 images.
DEFAULT_IMAGE_SHARDS = 2


class ShardCoverageError(RuntimeError):
    """A stored shard no longer answers every key it was planned for (another run rewrote it)."""


def shard_of(keys: Iterable[str | None], n_shards: int) -> list[int]:
    """Each key's shard in [0, n_shards). Stable across processes, machines and library
    versions (polars' own hash is not), so a key stays in its shard from run to run."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, not {n_shards}")
    return [
        0
        if key is None
        else int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % n_shards
        for key in keys
    ]


def with_shards(frame: pl.DataFrame, key: str, n_shards: int) -> pl.DataFrame:
    """`frame` with a `shard` column computed from its `key` column."""
    shards = shard_of(frame.get_column(key).to_list(), n_shards)
    return frame.with_columns(pl.Series(SHARD_COLUMN, shards, dtype=pl.UInt32))


@dataclass(frozen=True)
class ShardStore:
    """The stored results of one sharded step (`name`) at one shard count."""

    data_dir: str
    name: str
    n_shards: int

    def path(self, shard: int) -> str:
        root = self.data_dir.rstrip("/")
        return f"{root}/shards/{self.name}/{self.n_shards}/{shard:04d}.parquet"

    def read(self, shard: int) -> pl.DataFrame | None:
        fs, path = fsspec.core.url_to_fs(self.path(shard))
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as handle:
            return pl.read_parquet(handle)

    def write(self, shard: int, frame: pl.DataFrame) -> str:
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        path = self.path(shard)
        write_bytes_atomic(path, buffer.getvalue())
        return path


def keys_of(wanted: pl.DataFrame, shard: int, key: str) -> pl.DataFrame:
    """The distinct keys of one shard (the `wanted` frame carries a `shard` column)."""
    return wanted.filter(pl.col(SHARD_COLUMN) == shard).select(key).unique(maintain_order=True)


def unanswered(keys: pl.DataFrame, stored: pl.DataFrame | None, key: str, reusable: pl.Expr) -> int:
    """How many of `keys` a stored result has no reusable row for (all, without a result)."""
    if stored is None:
        return keys.height
    usable = stored.filter(reusable).select(key)
    return keys.join(usable, on=key, how="anti", nulls_equal=True).height


def shards_to_run(
    wanted: pl.DataFrame, store: ShardStore, key: str, reusable: pl.Expr
) -> list[int]:
    """The shards (that hold any wanted key) whose stored result does not answer them all."""
    present = sorted(set(wanted.get_column(SHARD_COLUMN).to_list()))
    return [
        shard
        for shard in present
        if unanswered(keys_of(wanted, shard, key), store.read(shard), key, reusable)
    ]


def gather(
    wanted: pl.DataFrame, store: ShardStore, key: str, schema: dict[str, pl.DataType]
) -> pl.DataFrame:
    """Every wanted key's row, read from the shards' stored results (one row per key).

    Raises ShardCoverageError when a stored result lacks a key it should answer: the table is
    never built with rows silently missing.
    """
    frames = []
    for shard in sorted(set(wanted.get_column(SHARD_COLUMN).to_list())):
        keys = keys_of(wanted, shard, key)
        stored = store.read(shard)
        if stored is None:
            raise ShardCoverageError(f"{store.name}: shard {shard} has no stored result")
        rows = stored.join(keys, on=key, how="semi", nulls_equal=True).unique(
            subset=key, keep="first", maintain_order=True
        )
        if rows.height != keys.height:
            raise ShardCoverageError(
                f"{store.name}: shard {shard} answers {rows.height} of its {keys.height} keys "
                "(rewritten by another run?); materialize the asset again"
            )
        frames.append(rows)
    if not frames:
        return empty_frame(schema)
    return pl.concat([frame.select(list(schema)).cast(schema) for frame in frames])  # type: ignore[arg-type]
