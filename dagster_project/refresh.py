"""`make refresh` / `make demo` without a server, on Dagster's public machinery.

A refresh is what the automation sensor does, run to completion from a terminal:
1. observe the catalogue source (a run-less observation, only when its version changed);
2. evaluate the assets' automation conditions (`dg.evaluate_automation_conditions`, cursor kept
   in the instance between refreshes, as the daemon keeps its own);
3. submit the requested assets as one run through the instance, as the UI does (the
   `launchRun` GraphQL mutation): the instance's run coordinator, its queue and run launcher, then
   the Definitions' executor (multiprocess, Celery, k8s) run it; wait for it; go to 2.
It ends when nothing is requested and no run is in progress. Because conditions only look at
*data* versions, a rerun with an identical output stops the chain below it.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import dagster as dg

from assets.resources import PROJECT_ROOT
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
POLL_S = 1.0
# The job every refresh run is an asset selection of (it holds every asset and check, and the
# retry policy tags).
LAUNCH_JOB = "full_pipeline"
# How a refresh's Target reaches the processes a submitted run starts (code server, run worker):
# they load `launched_definitions`, which reads it.
TARGET_ENV = "CATALOGUE_VLM_TARGET"
LAUNCH_RUN_MUTATION = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
DEFINITIONS_MODULE = "dagster_project.definitions"
CODE_SERVER_START_S = 120.0
# A queued run that no daemon picks up within this time means the instance has no daemon.
QUEUED_WITHOUT_DAEMON_S = 60.0


@dataclass(frozen=True)
class Target:
    """The Definitions to run, named by a module-level factory and JSON keyword arguments: every
    process that runs a step (a multiprocess child, a Celery worker, a pod) rebuilds the same
    ones from this name."""

    factory: str = f"{DEFINITIONS_MODULE}:build_definitions"
    kwargs_json: str = "{}"

    @staticmethod
    def of(factory: str, **kwargs: Any) -> Target:
        return Target(factory, json.dumps(kwargs, sort_keys=True))

    def load(self) -> dg.Definitions:
        return load_definitions(self.factory, self.kwargs_json)

    def to_env(self) -> str:
        return json.dumps({"factory": self.factory, "kwargs_json": self.kwargs_json})

    def code_location(self) -> tuple[list[str], str]:
        """The code location a submitted run loads: (CLI arguments, location name). The
        default is the one `make ui` serves, so a daemon or webserver of the same deployment
        can launch and show the run; another Target reaches the run through TARGET_ENV."""
        if self == DEFAULT_TARGET:
            return ["-m", DEFINITIONS_MODULE], DEFINITIONS_MODULE
        module, attribute = __name__, launched_definitions.__name__
        return ["-m", module, "-a", attribute], f"{module}:{attribute}"


DEFAULT_TARGET = Target()


def load_definitions(factory: str, kwargs_json: str = "{}") -> dg.Definitions:
    module, attribute = factory.split(":")
    return getattr(import_module(module), attribute)(**json.loads(kwargs_json))


def launched_definitions() -> dg.Definitions:
    """The Definitions a submitted run loads, in the code server and in the run worker."""
    target = json.loads(os.environ.get(TARGET_ENV, DEFAULT_TARGET.to_env()))
    return load_definitions(target["factory"], target["kwargs_json"])


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
    queued_since = time.monotonic()
    while True:
        runs = [instance.get_run_by_id(run_id) for run_id in run_ids]
        statuses = {run.status for run in runs if run is not None}
        if not statuses & set(IN_PROGRESS):
            return
        if statuses != {dg.DagsterRunStatus.QUEUED}:
            queued_since = time.monotonic()
        elif time.monotonic() - queued_since > QUEUED_WITHOUT_DAEMON_S:
            if not instance.get_daemon_heartbeats():
                raise RuntimeError(
                    "The run is queued, and no dagster-daemon serves this instance's run queue "
                    "(its dagster.yaml sets a QueuedRunCoordinator): start `dagster-daemon run` "
                    "(or `make ui`), or use deploy/dagster.local.yaml's DefaultRunCoordinator."
                )
            queued_since = time.monotonic()
        time.sleep(POLL_S)


def launch_env(instance: dg.DagsterInstance, target: Target) -> dict[str, str]:
    """The environment of the processes a submitted run goes through."""
    if instance.root_directory is None:
        raise ValueError("a refresh submits runs to a persistent instance (set DAGSTER_HOME)")
    return {**os.environ, "DAGSTER_HOME": instance.root_directory, TARGET_ENV: target.to_env()}


def _dagster_cli(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@contextmanager
def code_server(instance: dg.DagsterInstance, target: Target) -> Iterator[list[str]]:
    """A code server for all the runs of one refresh, so the code location loads once rather
    than once per run; yields the `dagster-graphql` arguments that reach it. The server
    launches each run's worker process, as a deployment's code server does."""
    location_args, location_name = target.code_location()
    with tempfile.TemporaryDirectory() as scratch:
        socket = Path(scratch) / "grpc.sock"
        workspace = Path(scratch) / "workspace.yaml"
        entry = {"grpc_server": {"socket": str(socket), "location_name": location_name}}
        workspace.write_text(json.dumps({"load_from": [entry]}))  # JSON is YAML
        command = [_dagster_cli("dagster"), "code-server", "start", *location_args]
        # Our packages resolve from the repository root, whatever the caller's directory holds.
        command += ["-d", str(PROJECT_ROOT), "--socket", str(socket)]
        command += ["--location-name", location_name]
        # Own session: the server (a proxy and the server process it starts) goes as a group.
        server = subprocess.Popen(command, env=launch_env(instance, target), start_new_session=True)
        try:
            deadline = time.monotonic() + CODE_SERVER_START_S
            while not socket.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the code server did not start (exit {server.poll()})")
                time.sleep(0.1)
            yield ["-w", str(workspace)]
        finally:
            # Every run it launched has finished by now; it ignores SIGTERM for ~10 s or more.
            with suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@contextmanager
def lazy_code_server(
    instance: dg.DagsterInstance, target: Target
) -> Iterator[Callable[[], list[str]]]:
    """Yields a function that returns the `code_server` arguments, starting the server on its
    first call: a refresh that finds nothing to do starts none."""
    with ExitStack() as stack:
        started: list[str] = []

        def workspace_args() -> list[str]:
            if not started:
                started.extend(stack.enter_context(code_server(instance, target)))
            return started

        yield workspace_args


def submit(
    instance: dg.DagsterInstance,
    target: Target,
    keys: Sequence[dg.AssetKey],
    workspace_args: Sequence[str],
    tags: Mapping[str, str] | None = None,
) -> dg.DagsterRun:
    """One run of `keys` (and their checks), submitted to `instance` as the UI submits one:
    the `launchRun` mutation through the `dagster-graphql` CLI, which reaches the code location
    through `workspace_args` (a `code_server`) and hands the run to the instance's run
    coordinator and launcher. Returns the run once it has finished. The job's own tags (its
    retry policy) come with it."""
    _, location_name = target.code_location()
    params = {
        "selector": {
            "repositoryLocationName": location_name,
            "repositoryName": "__repository__",
            "jobName": LAUNCH_JOB,
            "assetSelection": [{"path": key.path} for key in keys],
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    with tempfile.TemporaryDirectory() as scratch:
        response_path = Path(scratch) / "response.json"
        command = [_dagster_cli("dagster-graphql"), *workspace_args, "-t", LAUNCH_RUN_MUTATION]
        command += ["-v", json.dumps({"executionParams": params}), "-o", str(response_path)]
        launched = subprocess.run(command, env=launch_env(instance, target), check=False)
        response = json.loads(response_path.read_text()) if response_path.exists() else {}
    outcome = (response.get("data") or {}).get("launchRun") or {}
    if launched.returncode != 0 or outcome.get("__typename") != "LaunchRunSuccess":
        raise RuntimeError(f"launching {_names(keys)} failed: {json.dumps(response)[:2000]}")
    run_id = outcome["run"]["runId"]
    wait_for_runs(instance, [run_id])
    run = instance.get_run_by_id(run_id)
    assert run is not None, run_id
    return run


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
    with one_refresh_at_a_time(instance), lazy_code_server(instance, target) as workspace_args:
        return _run_requested(instance, defs, target, selection, max_runs, workspace_args)


def _run_requested(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    target: Target,
    selection: dg.AssetSelection,
    max_runs: int,
    workspace_args: Callable[[], list[str]],
) -> RefreshResult:
    """Steps 1-3 of a refresh, under its lock and with its code server."""
    result = RefreshResult(success=True)
    observe_catalogue(instance, defs)
    cursor = load_cursor(instance)
    while len(result.waves) < max_runs:
        keys, cursor = evaluate(instance, defs, selection, cursor)
        save_cursor(instance, cursor)
        if not keys:
            busy = runs_in_progress(instance)
            if not busy:
                print(
                    "Up to date." if result.waves else "Nothing to do: every asset is up to date."
                )
                return result
            print(f"Waiting for {len(busy)} run(s) in progress before deciding what is left.")
            wait_for_runs(instance, busy)
            continue
        print(f"Run {len(result.waves) + 1}: materializing {_names(keys)}")
        run = submit(instance, target, keys, workspace_args())
        result.waves.append(keys)
        result.run_ids.append(run.run_id)
        if not run.is_success:
            result.success = False
            return result
    result.success = False  # still requesting after max_runs: outputs that never settle
    return result


def materialize_all(
    instance: dg.DagsterInstance,
    target: Target = DEFAULT_TARGET,
    selection: dg.AssetSelection = PIPELINE_SELECTION,
    max_runs: int = 32,
) -> RefreshResult:
    """`make demo`: everything selected in one run, whatever its state, then a refresh so the
    stored cursor knows this state (the next `make refresh` starts from here); both through one
    code server."""
    defs = target.load()
    with one_refresh_at_a_time(instance), lazy_code_server(instance, target) as workspace_args:
        observe_catalogue(instance, defs)
        keys = _sorted(selection.resolve(defs.resolve_asset_graph()))
        print(f"Materializing {len(keys)} assets: {_names(keys)}")
        run = submit(instance, target, keys, workspace_args())
        if not run.is_success:
            return RefreshResult(False, [keys], [run.run_id])
        after = _run_requested(instance, defs, target, selection, max_runs, workspace_args)
    return RefreshResult(after.success, [keys, *after.waves], [run.run_id, *after.run_ids])
