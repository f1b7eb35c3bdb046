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
from dagster._core.definitions.observe import observe
from dagster._time import get_current_datetime

from dagster_project.automation import CATALOGUE_SOURCE
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


def observe_catalogue(instance: dg.DagsterInstance) -> None:
    """Record the catalogue's current content version, so a changed file reads as stale."""
    source = next(a for a in defs.assets or [] if getattr(a, "key", None) == CATALOGUE_SOURCE)
    observe([source], instance=instance, resources={"pipeline": defs.resources["pipeline"]})


def materialize(instance: dg.DagsterInstance, keys: list[dg.AssetKey] | None) -> bool:
    job = defs.resolve_job_def("full_pipeline")
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
    observe_catalogue(instance)
    ok = materialize(instance, None) if args.command == "demo" else refresh(instance)
    print_summary(instance)
    return 0 if ok else 1


def settled_frontier(stale: list[dg.AssetKey]) -> list[dg.AssetKey]:
    """The stale assets none of whose ancestors is stale (their inputs are final)."""
    graph = defs.resolve_asset_graph()
    stale_set = set(stale)

    def ancestors(key: dg.AssetKey) -> set[dg.AssetKey]:
        seen: set[dg.AssetKey] = set()
        todo = list(graph.get(key).parent_keys)
        while todo:
            parent = todo.pop()
            if parent not in seen:
                seen.add(parent)
                todo.extend(graph.get(parent).parent_keys)
        return seen

    return [key for key in stale if not ancestors(key) & stale_set]


def refresh(instance: dg.DagsterInstance, max_waves: int = 16) -> bool:
    """Materialize what is stale, then what that made stale, until nothing is.

    Dagster marks only the direct children of a changed asset stale; running in waves lets a
    content-identical output (same data version) stop the wave instead of recomputing
    everything below it. Each wave takes only stale assets with no stale ancestor, so no
    asset is computed twice in one refresh.
    """
    for wave in range(1, max_waves + 1):
        keys = settled_frontier(stale_or_missing_keys(instance))
        if not keys:
            print("Nothing is stale: every asset is up to date." if wave == 1 else "Up to date.")
            return True
        print(f"Wave {wave}: materializing " + ", ".join(k.to_user_string() for k in keys))
        if not materialize(instance, keys):
            return False
    return False


if __name__ == "__main__":
    sys.exit(main())
