"""`make demo` / `make refresh`: materialize assets into the persistent Dagster instance.

Runs go through the same Definitions and the instance under DAGSTER_HOME, so everything done
here shows up in `make ui` (run history, materializations, checks, staleness).
"""

from __future__ import annotations

import argparse
import sys

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

from dagster_project.definitions import defs


def stale_or_missing_keys(instance: dg.DagsterInstance) -> list[dg.AssetKey]:
    """Assets Dagster itself marks stale (code or upstream data changed) or never materialized."""
    asset_graph = defs.resolve_asset_graph()
    # The same resolver the UI and `RunRequest(stale_assets_only=True)` use, so "stale" here
    # means exactly what the asset graph shows.
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    resolver = CachingStaleStatusResolver(instance, asset_graph, loading_context=view)
    keys = sorted(asset_graph.materializable_asset_keys, key=lambda k: k.to_user_string())
    return [key for key in keys if resolver.get_status(key) != StaleStatus.FRESH]


def materialize(instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None) -> bool:
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, asset_selection=keys, raise_on_error=False)
    return result.success


def print_summary(instance: dg.DagsterInstance) -> None:
    settings = defs.resources["pipeline"]
    print(f"\nData dir: {settings.data_dir}")
    for key in sorted(
        defs.resolve_asset_graph().materializable_asset_keys, key=lambda k: k.to_user_string()
    ):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["demo", "refresh", "stale"])
    args = parser.parse_args(argv)
    instance = dg.DagsterInstance.get()
    if args.command == "stale":
        print("\n".join(key.to_user_string() for key in stale_or_missing_keys(instance)))
        return 0
    keys = None if args.command == "demo" else stale_or_missing_keys(instance)
    if keys == []:
        print("Nothing is stale: every asset is up to date.")
        print_summary(instance)
        return 0
    if keys:
        print("Materializing stale or missing: " + ", ".join(k.to_user_string() for k in keys))
    ok = materialize(instance, keys)
    print_summary(instance)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
