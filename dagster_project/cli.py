"""`make demo` / `make refresh`: materialize assets into the persistent Dagster instance.

Runs go through the same Definitions and the instance under DAGSTER_HOME, so everything done
here shows up in `make ui` (run history, materializations, checks, staleness).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from curation.catalogue import source_fingerprint
from dagster_project.automation import (
    CATALOGUE_SOURCE,
    PIPELINE_SELECTION,
    next_wave,
    stale_or_missing_keys,
    staleness_resolver,
)

__all__ = [
    "RefreshResult",
    "main",
    "materialize",
    "observe_catalogue",
    "refresh",
    "selection_for",
    "stale_or_missing_keys",
]


@dataclass
class RefreshResult:
    success: bool
    waves: list[list[dg.AssetKey]] = field(default_factory=list)  # one entry per launched run
    run_ids: list[str] = field(default_factory=list)


def default_definitions() -> dg.Definitions:
    # Imported on use: building the Definitions reads env vars, which tests set first.
    from dagster_project.definitions import defs

    return defs


def selection_for(groups: Sequence[str] | None) -> dg.AssetSelection:
    """All materializable assets, or only those in the named groups (e.g. skip `model`)."""
    if not groups:
        return PIPELINE_SELECTION
    return dg.AssetSelection.groups(*groups) - dg.AssetSelection.keys(CATALOGUE_SOURCE)


def observe_catalogue(instance: dg.DagsterInstance, defs: dg.Definitions) -> str | None:
    """Record the catalogue's content version when it differs from the last one recorded.

    Reported as a run-less observation (what the sensor does too): a refresh that finds
    nothing changed launches no run at all, not even an observation run.
    """
    asset_graph = defs.resolve_asset_graph()
    if not asset_graph.has(CATALOGUE_SOURCE):
        return None
    settings = defs.resources["pipeline"]
    version = source_fingerprint(settings.resolved_catalogue_uri())
    recorded = staleness_resolver(instance, asset_graph).get_current_data_version(CATALOGUE_SOURCE)
    if recorded.value != version:
        instance.report_runless_asset_event(
            dg.AssetObservation(asset_key=CATALOGUE_SOURCE, tags={DATA_VERSION_TAG: version})
        )
    return version


def _job_for(defs: dg.Definitions) -> dg.JobDefinition:
    """The `full_pipeline` job when defined (runs show under that name in the UI)."""
    names = {job.name for job in defs.jobs or []}
    if "full_pipeline" in names:
        return defs.resolve_job_def("full_pipeline")
    return defs.resolve_implicit_global_asset_job_def()


def materialize(
    instance: dg.DagsterInstance, defs: dg.Definitions, keys: Sequence[dg.AssetKey]
) -> dg.ExecuteInProcessResult:
    return _job_for(defs).execute_in_process(
        instance=instance, asset_selection=list(keys), raise_on_error=False
    )


def _names(keys: Sequence[dg.AssetKey]) -> str:
    return ", ".join(k.to_user_string() for k in keys)


def refresh(
    instance: dg.DagsterInstance,
    defs: dg.Definitions | None = None,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
    max_waves: int = 16,
) -> RefreshResult:
    """Observe the catalogue, then materialize what is stale, then what that made stale, ...

    Each wave takes only stale assets with no stale ancestor, so no asset is computed twice in
    one refresh, and a content-identical output ends the wave below it. Nothing stale means no
    run is launched at all.
    """
    defs = defs or default_definitions()
    asset_graph = defs.resolve_asset_graph()
    observe_catalogue(instance, defs)
    result = RefreshResult(success=True)
    for _ in range(max_waves):
        keys = next_wave(instance, asset_graph, selection)
        if not keys:
            print("Up to date." if result.waves else "Nothing is stale: every asset is up to date.")
            return result
        print(f"Wave {len(result.waves) + 1}: materializing {_names(keys)}")
        run = materialize(instance, defs, keys)
        result.waves.append(keys)
        result.run_ids.append(run.run_id)
        if not run.success:
            result.success = False
            return result
    result.success = False  # still stale after max_waves: a cycle of changing outputs
    return result


def describe_stale(
    instance: dg.DagsterInstance, defs: dg.Definitions, selection: dg.AssetSelection
) -> list[str]:
    """One line per stale or missing asset, with Dagster's own root causes."""
    asset_graph = defs.resolve_asset_graph()
    resolver = staleness_resolver(instance, asset_graph)
    lines = []
    for key in stale_or_missing_keys(instance, asset_graph, selection):
        causes = "; ".join(
            f"{c.key.asset_key.to_user_string()} {c.reason}"
            for c in resolver.get_stale_root_causes(key)
        )
        status = resolver.get_status(key).value.lower()
        lines.append(f"{key.to_user_string():24s} {status:8s} {causes}")
    return lines


def print_summary(instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    settings = defs.resources["pipeline"]
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["trace"], ["gc"]):  # lineage questions: no Definitions, no instance
        from dagster_project.trace import main as lineage_main

        return lineage_main(argv)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["demo", "refresh", "stale"])
    parser.add_argument(
        "--groups",
        default="",
        help="comma-separated asset groups to consider (default: all), e.g. ingest,images",
    )
    args = parser.parse_args(argv)
    selection = selection_for([g for g in args.groups.split(",") if g.strip()])
    defs = default_definitions()
    instance = dg.DagsterInstance.get()
    if args.command == "stale":
        print("\n".join(describe_stale(instance, defs, selection)) or "Nothing is stale.")
        return 0
    if args.command == "demo":
        observe_catalogue(instance, defs)
        keys = sorted(
            selection.resolve(defs.resolve_asset_graph()), key=lambda k: k.to_user_string()
        )
        ok = materialize(instance, defs, keys).success
    else:
        ok = refresh(instance, defs, selection).success
    print_summary(instance, defs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
