"""`make demo` / `make refresh` / `make stale`: run the pipeline into the persistent instance.

Runs go through the same Definitions and the instance under DAGSTER_HOME, so everything done
here shows up in `make ui` (run history, materializations, checks, automation evaluations).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from assets.resources import PROJECT_ROOT
from dagster_project.automation import CATALOGUE_SOURCE, PIPELINE_SELECTION
from dagster_project.refresh import (
    DEFAULT_TARGET,
    RefreshResult,
    Target,
    materialize_all,
    pipeline_settings,
    refresh,
    requested_now,
)

__all__ = ["RefreshResult", "Target", "main", "refresh", "selection_for"]


DEPLOY_DIR = PROJECT_ROOT / "deploy"


def ensure_instance_config() -> None:
    """For a DAGSTER_HOME without a dagster.yaml (`make instance`, and every command here): the
    local profile (runs start at once), or the team one when DAGSTER_PG_URL is set. Dagster's
    own default
    would queue every submitted run for a daemon that a terminal session does not run. An
    existing file is the operator's and stays as it is."""
    home = os.environ.get("DAGSTER_HOME")
    if not home or (Path(home) / "dagster.yaml").exists():
        return
    profile = "postgres" if os.environ.get("DAGSTER_PG_URL") else "local"
    Path(home).mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY_DIR / f"dagster.{profile}.yaml", Path(home) / "dagster.yaml")


def selection_for(groups: Sequence[str] | None) -> dg.AssetSelection:
    """All materializable assets, or only those in the named groups (e.g. skip `model`)."""
    if not groups:
        return PIPELINE_SELECTION
    return dg.AssetSelection.groups(*groups) - dg.AssetSelection.keys(CATALOGUE_SOURCE)


def print_summary(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    settings = pipeline_settings(defs)
    print(f"\nData dir: {settings.data_dir}")
    keys = defs.resolve_asset_graph().materializable_asset_keys
    for key in sorted(keys, key=lambda k: k.to_user_string()):
        event = instance.get_latest_materialization_event(key)
        if event is None or event.asset_materialization is None:
            print(f"  {key.to_user_string():24s} (not materialized)")
            continue
        metadata = event.asset_materialization.metadata
        rows = metadata.get("dagster/row_count")
        path = metadata.get("path") or metadata.get("report_path")
        detail = f"{rows.value} rows" if rows is not None else ""
        print(f"  {key.to_user_string():24s} {detail:12s} {path.value if path else ''}")
    print(f"Dagster instance: {instance.root_directory} (open it with `make ui`)")


def main(argv: list[str] | None = None, target: Target = DEFAULT_TARGET) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["trace"], ["gc"]):  # lineage questions: no Definitions, no instance
        from dagster_project.trace import main as lineage_main

        return lineage_main(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["demo", "refresh", "stale", "instance"])
    parser.add_argument(
        "--groups",
        default="",
        help="comma-separated asset groups to consider (default: all), e.g. ingest,images",
    )
    args = parser.parse_args(argv)
    selection = selection_for([g for g in args.groups.split(",") if g.strip()])
    ensure_instance_config()
    if args.command == "instance":
        return 0
    instance = dg.DagsterInstance.get()
    if args.command == "stale":
        keys = requested_now(instance, target, selection)
        print("\n".join(k.to_user_string() for k in keys) or "Nothing would run.")
        return 0
    if args.command == "demo":
        ok = materialize_all(instance, target, selection).success
    else:
        ok = refresh(instance, target, selection).success
    print_summary(instance, target.load())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
