"""curation.shards: stable shard keys, the shard store, which shards need work, gathering."""

from __future__ import annotations

import polars as pl
import pytest

from curation.shards import (
    SHARD_COLUMN,
    ShardCoverageError,
    ShardStore,
    gather,
    shard_of,
    shards_to_run,
    unanswered,
    with_shards,
)

SCHEMA = {"url": pl.String(), "status": pl.String()}
ALL = pl.lit(True)
OK = pl.col("status") == "ok"


def urls(n: int) -> list[str]:
    return [f"https://cdn.example/{i}.jpg" for i in range(n)]


def test_shard_of_is_stable_and_spreads_keys() -> None:
    keys = urls(4000)
    shards = shard_of(keys, 4)
    assert shards == shard_of(keys, 4)  # the same in every process: no per-process salt
    assert shard_of(["https://cdn.example/0.jpg"], 4) == [shards[0]]
    counts = [shards.count(s) for s in range(4)]
    assert min(counts) > 900, counts  # a hash, not a prefix: every shard gets a fair share
    assert shard_of([None], 4) == [0]
    assert set(shard_of(keys, 1)) == {0}
    with pytest.raises(ValueError):
        shard_of(keys, 0)


def test_a_key_keeps_its_shard_whatever_else_is_in_the_catalogue() -> None:
    keys = urls(100)
    alone = with_shards(pl.DataFrame({"url": keys[40:41]}), "url", 8)
    among = with_shards(pl.DataFrame({"url": keys}), "url", 8)
    assert alone[SHARD_COLUMN][0] == among[SHARD_COLUMN][40]


def test_store_round_trips_and_keeps_shard_counts_apart(tmp_path) -> None:
    frame = pl.DataFrame({"url": ["a"], "status": ["ok"]})
    store = ShardStore(str(tmp_path), "product_images", 4)
    assert store.read(2) is None
    path = store.write(2, frame)
    assert path == f"{tmp_path}/shards/product_images/4/0002.parquet"
    assert store.read(2).equals(frame)
    assert ShardStore(str(tmp_path), "product_images", 8).read(2) is None


def stored_shards(tmp_path, keys: list[str], status: dict[str, str] | None = None):
    store = ShardStore(str(tmp_path), "t", 4)
    wanted = with_shards(pl.DataFrame({"url": keys}), "url", 4)
    for shard in set(wanted[SHARD_COLUMN]):
        rows = wanted.filter(pl.col(SHARD_COLUMN) == shard).drop(SHARD_COLUMN)
        labels = [(status or {}).get(u, "ok") for u in rows["url"]]
        store.write(shard, rows.with_columns(status=pl.Series(labels)))
    return store, wanted


def test_only_the_shard_with_a_new_key_needs_work(tmp_path) -> None:
    keys = urls(200)
    store = ShardStore(str(tmp_path), "t", 4)
    wanted = with_shards(pl.DataFrame({"url": keys}), "url", 4)
    assert shards_to_run(wanted, store, "url", ALL) == [0, 1, 2, 3]  # nothing stored yet

    store, wanted = stored_shards(tmp_path, keys)
    assert shards_to_run(wanted, store, "url", ALL) == []
    edited = keys[:17] + ["https://cdn.example/new.jpg"] + keys[18:]  # one URL replaced
    wanted = with_shards(pl.DataFrame({"url": edited}), "url", 4)
    (new_shard,) = shard_of(["https://cdn.example/new.jpg"], 4)
    # The shard that lost a URL still answers all of its keys: it is not computed again.
    assert shards_to_run(wanted, store, "url", ALL) == [new_shard]


def test_rows_that_are_not_reusable_make_their_shard_run(tmp_path) -> None:
    keys = urls(50)
    store, wanted = stored_shards(tmp_path, keys, status={keys[3]: "download_failed"})
    assert shards_to_run(wanted, store, "url", ALL) == []
    assert shards_to_run(wanted, store, "url", OK) == shard_of([keys[3]], 4)
    one = wanted.filter(pl.col("url") == keys[3]).select("url")
    assert unanswered(one, store.read(shard_of([keys[3]], 4)[0]), "url", OK) == 1
    assert unanswered(one, None, "url", OK) == 1


def test_gather_returns_one_row_per_wanted_key_or_refuses(tmp_path) -> None:
    keys = urls(60)
    store, _ = stored_shards(tmp_path, keys)
    wanted = with_shards(pl.DataFrame({"url": keys[:30]}), "url", 4)
    rows = gather(wanted, store, "url", SCHEMA)
    assert sorted(rows["url"]) == sorted(keys[:30]) and rows.schema == pl.Schema(SCHEMA)
    empty = with_shards(pl.DataFrame({"url": []}, schema={"url": pl.String()}), "url", 4)
    assert gather(empty, store, "url", SCHEMA).is_empty()
    missing = with_shards(pl.DataFrame({"url": [*keys, "https://cdn.example/x.jpg"]}), "url", 4)
    with pytest.raises(ShardCoverageError, match="answers"):
        gather(missing, store, "url", SCHEMA)
