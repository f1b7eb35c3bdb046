"""Snapshot identity, the per-sample manifest, and what `gc` may delete (fast, no Dagster)."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import polars as pl

from curation.retention import garbage_collect
from curation.snapshots import snapshot_fingerprint, snapshot_rows
from schemas.values import TRAINING_ROWS_SCHEMA


def test_fingerprint_follows_content_not_key_order() -> None:
    a = snapshot_fingerprint({"dataset_splits": "s1", "synthetic_variants": "v1"})
    assert a == snapshot_fingerprint({"synthetic_variants": "v1", "dataset_splits": "s1"})
    assert a != snapshot_fingerprint({"dataset_splits": "s2", "synthetic_variants": "v1"})
    assert len(a) == 32


def test_manifest_rows_follow_the_dataset_order_and_variants_name_their_parent() -> None:
    splits = pl.DataFrame(
        {
            "row_id": ["t1", "v1", "t2", "x1"],
            "row_index": [0, 1, 2, 3],
            "split": ["train", "validation", "train", "test"],
            "sha256": ["a", "b", "c", "d"],
            "image_path": ["/d/images/a.png", "/d/images/b.png", "/d/images/c.png", "/d/i/d.png"],
            "normalised_sha256": ["a", "b2", "c", "d"],
            "normalised_path": ["/d/images/a.png", "/d/images/b2.png", "/d/images/c.png", "/d/d"],
        }
    )
    variants = pl.DataFrame(
        {
            "variant_id": ["t2~crop"],
            "parent_row_id": ["t2"],
            "sha256": ["e"],
            "image_path": ["/d/images/e.jpg"],
            "normalised_sha256": ["e"],
            "normalised_path": ["/d/images/e.jpg"],
        }
    )
    rows = snapshot_rows(splits, variants)
    assert rows.schema == pl.Schema(TRAINING_ROWS_SCHEMA)
    assert rows["row_id"].to_list() == ["t1", "t2", "t2~crop", "v1", "x1"]
    variant = rows.filter(pl.col("is_synthetic")).row(0, named=True)
    assert variant["parent_row_id"] == "t2" and variant["row_index"] == 2
    assert variant["image_sha256"] == "e" and variant["split"] == "train"
    assert rows.filter(~pl.col("is_synthetic"))["parent_row_id"].null_count() == 4
    # The normalised picture is named only where it is not the original itself.
    assert rows["normalised_sha256"].to_list() == [None, None, None, "b2", None]
    assert rows.filter(pl.col("row_id") == "v1")["normalised_path"][0] == "/d/images/b2.png"


def write(path: Path, data: bytes | str = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_gc_keeps_what_checkpoints_and_the_pipeline_need(tmp_path: Path) -> None:
    data = tmp_path / "data"
    kept, latest, orphan = ("a" * 32), ("b" * 32), ("c" * 32)
    for name in (kept, latest, orphan):
        write(data / "hf_dataset" / name / "snapshot.json", "{}")
    write(data / "hf_dataset" / "LATEST", f"{latest}\n")
    write(data / "hf_dataset" / "notes.txt", "not a snapshot: left alone")
    images = data / "images"
    trained = write(images / "11" / f"{'1' * 64}.jpg")
    current = write(images / "22" / f"{'2' * 64}.png")
    stray = write(images / "33" / f"{'3' * 64}.png")
    model = data / "models" / "run1"
    write(
        model / "lineage.json",
        json.dumps({"dataset_snapshot": {"uri": str(data / "hf_dataset" / kept)}}),
    )
    pl.DataFrame({"row_id": ["r"], "image_sha256": ["1" * 64]}).write_parquet(
        model / "training_rows.parquet"
    )
    pl.DataFrame({"row_id": ["r"], "path": [str(current)]}).write_parquet(
        data / "product_images.parquet"
    )

    dry = garbage_collect(str(data), dry_run=True)
    assert dry.removed_snapshots == [orphan] and dry.removed_images == [str(stray)]
    assert (data / "hf_dataset" / orphan).exists() and stray.exists()

    report = garbage_collect(str(data))
    assert sorted(report.kept_snapshots) == [kept, latest]
    assert not (data / "hf_dataset" / orphan).exists() and not stray.exists()
    assert trained.exists() and current.exists() and report.kept_images == 2
    assert (data / "hf_dataset" / "notes.txt").exists()


def test_gc_sweeps_a_runs_op_values_only_after_the_retention_window(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old_run, recent_run = data / "op_values" / "run-old", data / "op_values" / "run-recent"
    for folder in (old_run, recent_run):
        folder.mkdir(parents=True)
        (folder / "plan.shard_0.json").write_text("{}")
    week_and_a_day_ago = time.time() - 8 * 86400
    os.utime(old_run / "plan.shard_0.json", (week_and_a_day_ago, week_and_a_day_ago))

    dry = garbage_collect(str(data), dry_run=True)
    assert dry.removed_op_value_runs == ["run-old"] and dry.kept_op_value_runs == 1
    assert old_run.exists()

    report = garbage_collect(str(data))
    assert report.removed_op_value_runs == ["run-old"]
    assert not old_run.exists() and (recent_run / "plan.shard_0.json").exists()

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    shorter = garbage_collect(str(data), op_values_retention=dt.timedelta(days=1), now=later)
    assert shorter.removed_op_value_runs == ["run-recent"] and not recent_run.exists()
