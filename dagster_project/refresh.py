"""`make refresh` / `make demo` without a server, on Dagster's public machinery.

A refresh is what the automation sensor does, run to completion from a terminal:
1. observe the catalogue source (a run-less observation, only when its version changed);
2. evaluate the assets' automation conditions (`dg.evaluate_automation_conditions`, cursor kept
   in the instance between refreshes, as the daemon keeps its own);
3. execute the requested assets as one run through `dg.execute_job`, so the Definitions'
   executor (multiprocess, Celery, k8s) runs the steps; wait for it; go to 2.
It ends when nothing is requested and no run is in progress. Because conditions only look at
*data* versions, a rerun with an identical output stops the chain below it.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import dagster as dg

from curation.catalogue import source_fingerprint
from dagster_project.automation import CATALOGUE_SOURCE, PIPELINE_SELECTION

# Where the refresh keeps its evaluation cursor (the instance's key-value store, shared by every
# machine that points at the same instance).
CURSOR_KEY = "catalogue_vlm/refresh_cursor"
DATA_VERSION_TAG = "dagster/data_version"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
POLL_S = 2.0


@dataclass(frozen=True)
class Target:
    """The Definitions to run, named by a module-level factory and JSON keyword arguments: every
    process that runs a step (a multiprocess child, a Celery worker, a pod) rebuilds the same
    ones from this name."""

    factory: str = "dagster_project.definitions:build_definitions"
    kwargs_json: str = "{}"

    @staticmethod
    def of(factory: str, **kwargs: Any) -> Target:
        return Target(factory, json.dumps(kwargs, sort_keys=True))

    def load(self) -> dg.Definitions:
        return load_definitions(self.factory, self.kwargs_json)

    def job(self, name: str = "full_pipeline") -> dg.ReconstructableJob:
        return dg.build_reconstructable_job(
            "dagster_project.refresh",
            "job_from_target",
            reconstructable_kwargs={
                "factory": self.factory,
                "kwargs_json": self.kwargs_json,
                "job_name": name,
            },
        )


DEFAULT_TARGET = Target()


def load_definitions(factory: str, kwargs_json: str = "{}") -> dg.Definitions:
    module, attribute = factory.split(":")
    return getattr(import_module(module), attribute)(**json.loads(kwargs_json))


def job_from_target(factory: str, kwargs_json: str, job_name: str) -> dg.JobDefinition:
    """Reconstructs a refresh's job in the processes that execute its steps."""
    defs = load_definitions(factory, kwargs_json)
    names = {job.name for job in defs.jobs or []}
    if job_name in names:
        return defs.resolve_job_def(job_name)
    return defs.resolve_implicit_global_asset_job_def()


@dataclass
class RefreshResult:
    success: bool
    waves: list[list[dg.AssetKey]] = field(default_factory=list)  # one entry per launched run
    run_ids: list[str] = field(default_factory=list)


def _names(keys: Sequence[dg.AssetKey]) -> str:
    return ", ".join(k.to_user_string() for k in keys)


def _sorted(keys) -> list[dg.AssetKey]:
    return sorted(keys, key=lambda k: k.to_user_string())


def pipeline_settings(defs: dg.Definitions) -> Any:
    """The `pipeline` resource with its env vars resolved, as a run would see it."""
    return defs.resources["pipeline"].process_config_and_initialize()


def observe_catalogue(instance: dg.DagsterInstance, defs: dg.Definitions) -> str | None:
    """Record the catalogue's content version when it differs from the last one recorded.

    Reported as a run-less observation: a refresh that finds nothing changed launches no run.
    """
    if not defs.resolve_asset_graph().has(CATALOGUE_SOURCE):
        return None
    settings = pipeline_settings(defs)
    version = source_fingerprint(settings.resolved_catalogue_uri())
    latest = instance.fetch_observations(CATALOGUE_SOURCE, limit=1).records
    recorded = latest[0].asset_observation.tags.get(DATA_VERSION_TAG) if latest else None
    if recorded != version:
        instance.report_runless_asset_event(
            dg.AssetObservation(asset_key=CATALOGUE_SOURCE, tags={DATA_VERSION_TAG: version})
        )
    return version


def load_cursor(instance: dg.DagsterInstance) -> Any:
    stored = instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY)
    return dg.deserialize_value(stored) if stored else None


def save_cursor(instance: dg.DagsterInstance, cursor: Any) -> None:
    instance.run_storage.set_cursor_values({CURSOR_KEY: dg.serialize_value(cursor)})


def evaluate(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
    cursor: Any = None,
) -> tuple[list[dg.AssetKey], Any]:
    """One evaluation of the automation conditions: what they request now, and the new cursor."""
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=cursor
    )
    keys = selection.resolve(defs.resolve_asset_graph())
    return _sorted(k for k in keys if result.get_num_requested(k)), result.cursor


def requested_now(
    instance: dg.DagsterInstance,
    target: Target = DEFAULT_TARGET,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
) -> list[dg.AssetKey]:
    """What a refresh would run first, without running anything (`make stale`); a changed
    catalogue is recorded, as the sensor's observation would."""
    defs = target.load()
    observe_catalogue(instance, defs)
    return evaluate(instance, defs, selection, load_cursor(instance))[0]


def runs_in_progress(instance: dg.DagsterInstance) -> list[str]:
    records = instance.get_run_records(dg.RunsFilter(statuses=IN_PROGRESS))
    return [record.dagster_run.run_id for record in records]


def wait_for_runs(instance: dg.DagsterInstance, run_ids: Sequence[str]) -> None:
    while any(
        (run := instance.get_run_by_id(run_id)) is not None and run.status in IN_PROGRESS
        for run_id in run_ids
    ):
        time.sleep(POLL_S)


def execute(
    instance: dg.DagsterInstance,
    target: Target,
    keys: Sequence[dg.AssetKey],
    tags: Mapping[str, str] | None = None,
) -> dg.JobExecutionResult:
    """One run of `keys` through the Definitions' executor, recorded in `instance` (the job's
    own tags, such as its retry policy, come with it)."""
    return dg.execute_job(
        target.job(), instance=instance, asset_selection=list(keys), tags=dict(tags or {})
    )


@contextmanager
def one_refresh_at_a_time(instance: dg.DagsterInstance) -> Iterator[None]:
    """A second refresh on this instance waits for the first instead of computing the same
    assets next to it; after the wait it finds what the first left undone (usually nothing)."""
    lock_path = Path(instance.root_directory) / ".refresh.lock"
    with open(lock_path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("Another refresh is running on this instance; waiting for it to finish.")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def refresh(
    instance: dg.DagsterInstance,
    target: Target = DEFAULT_TARGET,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
    max_runs: int = 32,
) -> RefreshResult:
    """Observe, evaluate, run what is requested, repeat until nothing is requested."""
    defs = target.load()
    result = RefreshResult(success=True)
    with one_refresh_at_a_time(instance):
        observe_catalogue(instance, defs)
        cursor = load_cursor(instance)
        while len(result.waves) < max_runs:
            keys, cursor = evaluate(instance, defs, selection, cursor)
            save_cursor(instance, cursor)
            if not keys:
                busy = runs_in_progress(instance)
                if not busy:
                    print(
                        "Up to date."
                        if result.waves
                        else "Nothing to do: every asset is up to date."
                    )
                    return result
                print(f"Waiting for {len(busy)} run(s) in progress before deciding what is left.")
                wait_for_runs(instance, busy)
                continue
            print(f"Run {len(result.waves) + 1}: materializing {_names(keys)}")
            run = execute(instance, target, keys)
            result.waves.append(keys)
            result.run_ids.append(run.run_id)
            if not run.success:
                result.success = False
                return result
    result.success = False  # still requesting after max_runs: outputs that never settle
    return result


def materialize_all(
    instance: dg.DagsterInstance,
    target: Target = DEFAULT_TARGET,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
) -> RefreshResult:
    """`make demo`: everything selected in one run, whatever its state, then a refresh so the
    stored cursor knows this state (the next `make refresh` starts from here)."""
    defs = target.load()
    with one_refresh_at_a_time(instance):
        observe_catalogue(instance, defs)
        keys = _sorted(selection.resolve(defs.resolve_asset_graph()))
        print(f"Materializing {len(keys)} assets: {_names(keys)}")
        run = execute(instance, target, keys)
    if not run.success:
        return RefreshResult(False, [keys], [run.run_id])
    after = refresh(instance, target, selection)
    return RefreshResult(after.success, [keys, *after.waves], [run.run_id, *after.run_ids])
