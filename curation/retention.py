"""`make gc`: delete dataset snapshots and stored images that nothing kept still needs.

Kept: every checkpoint under models/ (a checkpoint is deleted by removing its folder, by hand),
and the pipeline's current state. Referenced, so never deleted:
- snapshots: each checkpoint's `dataset_snapshot`, the one `hf_dataset/LATEST` points at and
  the one the stored `training_dataset` value names;
- images: every image a kept checkpoint's manifest or a kept snapshot's rows name, and every
  address under images/ in the current tables (product_images, curated rows, variants), so a
  refresh never has to download or augment again what it already has.
Anything else under hf_dataset/ that looks like a snapshot (a fingerprint-named folder) and any
other file under images/ goes. Temporaries a crashed writer left are removed too.

The values ops of a graph-backed asset hand each other (`op_values/{run_id}/`) go with their
run once it is older than a retention window (default 7 days): until then a re-execution of
that run from a failed step still reads its parent's values from there.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl

from curation.images.store import IMAGES_DIR, exists, is_temporary
from curation.snapshots import join, latest_snapshot, read_parquet
from curation.trace import list_checkpoints
from schemas.lineage import SNAPSHOT_ROWS_FILE

SNAPSHOTS_DIR = "hf_dataset"
SNAPSHOT_NAME = re.compile(r"^[0-9a-f]{32}$")
# Tables whose image addresses the pipeline reuses on its next run.
CURRENT_TABLES: tuple[str, ...] = (
    "product_images",
    "curated_products",
    "dataset_splits",
    "synthetic_variants",
)
DATASET_VALUE = "training_dataset.json"
# {data_dir}/op_values/{run_id}/{step}.{output}.json: what one op of a run hands the next.
OP_VALUES_DIR = "op_values"
OP_VALUES_RETENTION = dt.timedelta(days=7)


@dataclass
class GcReport:
    kept_snapshots: list[str] = field(default_factory=list)
    removed_snapshots: list[str] = field(default_factory=list)
    kept_images: int = 0
    removed_images: list[str] = field(default_factory=list)
    kept_op_value_runs: int = 0
    removed_op_value_runs: list[str] = field(default_factory=list)


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def referenced_snapshots(data_dir: str) -> set[str]:
    names = {
        _name(c.snapshot_uri) for c in list_checkpoints(data_dir) if c.snapshot_uri is not None
    }
    latest = latest_snapshot(join(data_dir, SNAPSHOTS_DIR))
    if latest:
        names.add(_name(latest))
    value_uri = join(data_dir, DATASET_VALUE)
    if exists(value_uri):
        with fsspec.open(value_uri, "r", encoding="utf-8") as handle:
            names.add(_name(json.load(handle)["uri"]))
    return names


def _addresses(frame: pl.DataFrame, images_root: str) -> set[str]:
    """File names (content hashes + extension) of every address under the image store."""
    names: set[str] = set()
    for column in frame.columns:
        if frame.schema[column] != pl.String:
            continue
        values = frame[column].drop_nulls()
        names |= {_name(v) for v in values.filter(values.str.contains(images_root, literal=True))}
    return names


def referenced_images(data_dir: str, snapshots: set[str]) -> tuple[set[str], set[str]]:
    """(file names, sha256s) that must stay in the image store."""
    images_root = f"/{IMAGES_DIR}/"
    names: set[str] = set()
    hashes: set[str] = set()
    manifests = [c.manifest_uri for c in list_checkpoints(data_dir)]
    manifests += [join(data_dir, SNAPSHOTS_DIR, s, SNAPSHOT_ROWS_FILE) for s in snapshots]
    tables = [join(data_dir, f"{t}.parquet") for t in CURRENT_TABLES]
    for uri in [*manifests, *tables]:
        if not exists(uri):
            continue
        frame = read_parquet(uri)
        names |= _addresses(frame, images_root)
        for column in ("image_sha256", "normalised_sha256"):
            if column in frame.columns:
                hashes |= set(frame[column].drop_nulls())
    return names, hashes


def garbage_collect(
    data_dir: str,
    dry_run: bool = False,
    op_values_retention: dt.timedelta = OP_VALUES_RETENTION,
    now: dt.datetime | None = None,
) -> GcReport:
    report = GcReport()
    _sweep_op_values(data_dir, report, op_values_retention, now, dry_run)
    keep = referenced_snapshots(data_dir)
    fs, root = fsspec.core.url_to_fs(join(data_dir, SNAPSHOTS_DIR))
    if fs.exists(root):
        for entry in sorted(fs.ls(root, detail=False)):
            name = _name(entry)
            if name in keep:
                report.kept_snapshots.append(name)
            elif SNAPSHOT_NAME.match(name) or ".tmp-" in name or ".old-" in name:
                report.removed_snapshots.append(name)
                if not dry_run:
                    fs.rm(entry, recursive=True)
    names, hashes = referenced_images(data_dir, keep)
    fs, images = fsspec.core.url_to_fs(join(data_dir, IMAGES_DIR))
    for path in sorted(fs.find(images)) if fs.exists(images) else []:
        base = _name(path)
        if not is_temporary(base) and (base in names or base.split(".", 1)[0] in hashes):
            report.kept_images += 1
            continue
        report.removed_images.append(path)
        if not dry_run:
            fs.rm(path)
    return report


def _sweep_op_values(
    data_dir: str,
    report: GcReport,
    retention: dt.timedelta,
    now: dt.datetime | None,
    dry_run: bool,
) -> None:
    """Removes each run's op values once its newest file is older than `retention`."""
    fs, root = fsspec.core.url_to_fs(join(data_dir, OP_VALUES_DIR))
    if not fs.exists(root):
        return
    cutoff = (now or dt.datetime.now(dt.UTC)) - retention
    for run_folder in sorted(fs.ls(root, detail=False)):
        listing = fs.find(run_folder, detail=True)
        newest = max((_modified(fs, path, info) for path, info in listing.items()), default=None)
        if newest is not None and newest > cutoff:
            report.kept_op_value_runs += 1
            continue
        report.removed_op_value_runs.append(_name(run_folder))
        if not dry_run:
            fs.rm(run_folder, recursive=True)


def _modified(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> dt.datetime:
    """A file's last write, from its listing where the filesystem puts it there (no request
    per file on an object store)."""
    stamp = info.get("LastModified") or info.get("mtime") or fs.modified(path)
    if isinstance(stamp, (int, float)):
        return dt.datetime.fromtimestamp(stamp, dt.UTC)
    return stamp.astimezone(dt.UTC) if stamp.tzinfo else stamp.astimezone()
