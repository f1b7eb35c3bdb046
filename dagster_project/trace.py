"""`trace` and `gc`: lineage questions answered from the files checkpoints keep, no server.

python -m dagster_project.cli trace --model MODEL_DIR_OR_RUN_ID
python -m dagster_project.cli trace --row ROW_ID
python -m dagster_project.cli gc [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence

import polars as pl

from assets.resources import default_data_dir
from curation.images.store import exists
from curation.retention import OP_VALUES_RETENTION, garbage_collect
from curation.snapshots import join, read_parquet
from curation.trace import (
    Checkpoint,
    checkpoints_for_row,
    excluded_rows,
    find_checkpoint,
    ledger_of,
    list_checkpoints,
    manifest,
    outcome_counts,
    snapshot_loads,
    split_counts,
)
from schemas.markdown import markdown_table


def frame_table(frame: pl.DataFrame) -> str:
    return markdown_table(frame.columns, frame.rows()) if frame.height else "(none)"


def describe_model(checkpoint: Checkpoint, limit: int) -> str:
    lineage = checkpoint.lineage
    loads = snapshot_loads(checkpoint)
    snapshot = checkpoint.snapshot_uri or "(not recorded: trained before snapshots)"
    state = f"loads: {loads}" if loads is not None else "does not load (deleted or never made)"
    lines = [
        f"Checkpoint   {checkpoint.model_dir}",
        f"Dagster run  {lineage.get('dagster_run_id')}   git {lineage.get('git_sha')}",
        f"Catalogue    {lineage.get('catalogue_uri')}",
        f"  version    {lineage.get('catalogue_data_version')}",
        f"Snapshot     {snapshot}",
        f"  {state}",
        f"Manifest     {checkpoint.manifest_uri}",
    ]
    if exists(checkpoint.manifest_uri):
        lines += ["", "Samples per split:", frame_table(split_counts(manifest(checkpoint)))]
    else:
        lines += ["", "(no training_rows.parquet beside this checkpoint)"]
    ledger = ledger_of(checkpoint)
    if ledger is None:
        return "\n".join([*lines, "", "(the ledger this dataset was built with is not recorded)"])
    excluded = excluded_rows(ledger)
    shown = excluded if limit <= 0 else excluded.head(limit)
    more = excluded.height - shown.height
    lines += [
        "",
        "Catalogue rows by outcome (the ledger this dataset was built with):",
        frame_table(outcome_counts(ledger)),
        "",
        "Rows that did not train, and where the ledger says each went:",
        frame_table(shown),
    ]
    if more:
        lines.append(f"... {more} more (--limit 0 shows all)")
    return "\n".join(lines)


def _how(direct: bool, variants: int) -> str:
    if not direct:
        return f"through {variants} synthetic variants"
    return f"directly + {variants} variants" if variants else "directly"


def describe_row(data_dir: str, row_id: str) -> str:
    hits = checkpoints_for_row(data_dir, row_id)
    searched = len(list_checkpoints(data_dir))
    lines = []
    if hits.is_empty():
        lines.append(
            f"No checkpoint trained on row {row_id}, directly or through a synthetic variant "
            f"({searched} checkpoints searched under {join(data_dir, 'models')})."
        )
    else:
        how = [_how(direct, n) for direct, n in hits.select("direct", "variants").rows()]
        table = hits.with_columns(how=pl.Series(how)).select(
            "model_dir", "split", "how", "catalogue_data_version", "dagster_run_id"
        )
        models = table["model_dir"].n_unique()
        lines += [f"Row {row_id} is in {models} of {searched} checkpoints:", frame_table(table)]
    ledger_uri = join(data_dir, "curation_ledger.parquet")
    if exists(ledger_uri):
        now = read_parquet(ledger_uri).filter(pl.col("row_id") == row_id)
        lines.append(
            "Current catalogue: not present (removed or edited: a row's id is its content)."
            if now.is_empty()
            else f"Current catalogue: {now['outcome'][0]} ({now['reason'][0] or 'no reason'})."
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dagster_project.cli", description=__doc__)
    parser.add_argument("--data-dir", default=None, help="default: PIPELINE_DATA_DIR")
    commands = parser.add_subparsers(dest="command", required=True)
    trace = commands.add_parser("trace", help="what trained a checkpoint / where a row went")
    target = trace.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="model folder, its name under models/, or a run id")
    target.add_argument("--row", help="a catalogue row_id")
    trace.add_argument("--limit", type=int, default=50, help="excluded rows shown (0: all)")
    gc = commands.add_parser("gc", help="delete snapshots and images no checkpoint needs")
    gc.add_argument("--dry-run", action="store_true")
    gc.add_argument(
        "--op-values-days",
        type=float,
        default=OP_VALUES_RETENTION.days,
        help="keep a run's op values (re-execution from a failed step reads them) this long",
    )
    args = parser.parse_args(argv)
    data_dir = args.data_dir or default_data_dir()
    if args.command == "gc":
        retention = dt.timedelta(days=args.op_values_days)
        report = garbage_collect(data_dir, dry_run=args.dry_run, op_values_retention=retention)
        verb = "would remove" if args.dry_run else "removed"
        print(f"Snapshots kept: {len(report.kept_snapshots)} {sorted(report.kept_snapshots)}")
        print(f"Snapshots {verb}: {len(report.removed_snapshots)} {report.removed_snapshots}")
        print(f"Images kept: {report.kept_images}; {verb}: {len(report.removed_images)}")
        removed_runs = len(report.removed_op_value_runs)
        print(f"Runs' op values kept: {report.kept_op_value_runs}; {verb}: {removed_runs}")
        return 0
    if args.row:
        print(describe_row(data_dir, args.row))
        return 0
    try:
        checkpoint = find_checkpoint(data_dir, args.model)
    except LookupError as error:
        print(error)
        return 2
    print(describe_model(checkpoint, args.limit))
    return 0
