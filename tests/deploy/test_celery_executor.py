"""The `curate` job on the Celery executor: steps run in a worker process, results unchanged.

A Celery worker subprocess listens on a queue of its own on the local RabbitMQ; the job is
launched the way an operator would (`dagster job execute` with DAGSTER_EXECUTOR=celery).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import polars as pl
import psutil
import pytest

from dagster_project.definitions import build_definitions
from tests.e2e.helpers import (
    CURATION_TABLES,
    copy_catalogue,
    pipeline_env,
    require_service,
    write_dagster_home,
)
from tests.e2e.ui_server import BIN, REPO_ROOT, stop_process

pytestmark = pytest.mark.slow

BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
CURATE_KEYS = [*CURATION_TABLES, "data_quality_report"]


def data_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    versions = {}
    for key in CURATE_KEYS:
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert event is not None and event.asset_materialization is not None, key
        versions[key] = event.asset_materialization.tags["dagster/data_version"]
    return versions


def start_worker(
    env: dict[str, str], queue: str, log: Path, name: str = "", concurrency: int = 2
) -> subprocess.Popen:
    command = [
        str(BIN / "dagster-celery"),
        *("worker", "start", "-A", "dagster_celery.app", "-q", queue, "-n", name or queue),
        *("-y", str(REPO_ROOT / "deploy" / "celery-worker.yaml"), "--"),
        # One task reserved at a time: a free worker takes the next shard, not a busy one.
        *(f"--concurrency={concurrency}", "--prefetch-multiplier=1", "-O", "fair"),
    ]
    with open(log, "wb") as handle:
        worker = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            # `dagster-celery worker start` runs `celery` from PATH: this venv's.
            env={**os.environ, **env, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 90
    while b" ready." not in log.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            stop_process(worker)
            raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return worker


def celery_env(tmp_path: Path, demo_catalogue) -> tuple[str, Path, Path, dict[str, str]]:
    """A 200-row demo catalogue, an instance and the env of a Celery run on a queue of its own
    (so no other worker on the broker takes its steps)."""
    queue = f"catalogue-vlm-test-{uuid.uuid4().hex[:8]}"
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, tmp_path / "catalogue.csv", 200)
    home = write_dagster_home(tmp_path / "home")
    env = {
        **pipeline_env(str(tmp_path / "data"), catalogue, home),
        "DAGSTER_EXECUTOR": "celery",
        "DAGSTER_CELERY_BROKER_URL": BROKER,
        "DAGSTER_CELERY_QUEUE": queue,
    }
    return queue, catalogue, home, env


def worker_process_ids(worker: subprocess.Popen) -> set[int]:
    root = psutil.Process(worker.pid)
    return {root.pid, *(child.pid for child in root.children(recursive=True))}


def test_curate_job_shards_fan_out_over_two_celery_workers_with_in_process_results(
    tmp_path, demo_catalogue
) -> None:
    """Two workers listen on the run's queue: each runs shards of the per-image assets, and
    the results equal an in-process run's."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    queue, catalogue, home, env = celery_env(tmp_path, demo_catalogue)
    env["PIPELINE_IMAGE_SHARDS"] = "4"
    instance = dg.DagsterInstance.from_config(str(home))
    # Settings are EnvVars, read when the run starts: the reference run needs the env too.
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        reference_defs = build_definitions()
        reference = reference_defs.resolve_job_def("curate").execute_in_process(instance=instance)
    assert reference.success
    expected = data_versions(instance)
    # The reference stored every shard's result; without them the Celery run plans every shard
    # again (each reusing the reference's table, so no image is fetched twice).
    shutil.rmtree(tmp_path / "data" / "shards")

    workers = [
        start_worker(env, queue, tmp_path / f"worker{i}.log", f"{queue}-{i}", concurrency=1)
        for i in range(2)
    ]
    try:
        launched = run_in_repo(
            [str(BIN / "dagster"), "job", "execute", "-m", "dagster_project.definitions"]
            + ["-j", "curate"],
            env,
            timeout_s=300,
        )
        assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
        pids_of_worker = [worker_process_ids(worker) for worker in workers]
    finally:
        for worker in workers:
            stop_process(worker)
    worker_pids = set().union(*pids_of_worker)

    run = instance.get_run_records(limit=1)[0].dagster_run
    assert run.run_id != reference.run_id and run.status == dg.DagsterRunStatus.SUCCESS
    events = instance.all_logs(run.run_id)
    delegated = [  # what the worker reports when it picks up a step
        e
        for e in events
        if e.is_dagster_event
        and e.dagster_event.event_type == dg.DagsterEventType.ENGINE_EVENT
        and "Celery worker" in e.dagster_event.engine_event_data.metadata
    ]
    hosts = {e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in delegated}
    assert {h.split("@")[0] for h in hosts} == {f"{queue}-0", f"{queue}-1"}, hosts
    step_starts = [
        e
        for e in events
        if e.is_dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
    ]
    assert len(delegated) == len(step_starts) >= 7  # one Celery task per step
    step_pids = {e.dagster_event.pid for e in step_starts}
    assert step_pids <= worker_pids and os.getpid() not in step_pids, (step_pids, worker_pids)
    shard_pids = {
        e.dagster_event.pid for e in step_starts if "_shard[" in (e.dagster_event.step_key or "")
    }
    assert len(shard_pids) >= 2  # 4 shards x 3 per-image assets, not all in one process
    for pids in pids_of_worker:  # every worker ran at least one shard
        assert shard_pids & pids, (shard_pids, pids_of_worker)
    assert data_versions(instance) == expected  # content-derived: identical results
    instance.dispose()


def step_pids_of(instance: dg.DagsterInstance, run_ids: list[str]) -> set[int]:
    return {
        e.dagster_event.pid
        for run_id in run_ids
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
    }


def run_in_repo(
    command: list[str], env: dict[str, str], timeout_s: float
) -> subprocess.CompletedProcess:
    """A pipeline command at the repository root with the test's env on top, output captured."""
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def make_refresh(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`make refresh GROUPS=ingest,images,curation`, minus make's setup step."""
    command = [sys.executable, "-m", "dagster_project.cli", "refresh"]
    return run_in_repo(command + ["--groups", "ingest,images,curation"], env, timeout_s=600)


def test_make_refresh_runs_its_steps_in_the_celery_worker(tmp_path, demo_catalogue) -> None:
    """The refresh scenarios with DAGSTER_EXECUTOR=celery: a fresh build, a no-change refresh
    that launches nothing, a title edit that re-fetches no image; every step in the worker."""
    require_service("RabbitMQ", "127.0.0.1", 5672)
    queue, catalogue, home, env = celery_env(tmp_path, demo_catalogue)
    instance = dg.DagsterInstance.from_config(str(home))
    worker = start_worker(env, queue, tmp_path / "worker.log")
    try:
        built = make_refresh(env)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        n_runs = len(instance.get_run_records())
        unchanged = make_refresh(env)
        assert unchanged.returncode == 0 and "Nothing to do" in unchanged.stdout
        assert len(instance.get_run_records()) == n_runs

        frame = pl.read_csv(catalogue, infer_schema=False)
        frame.with_columns(
            pl.when(pl.int_range(pl.len()) == 5)
            .then(pl.lit("Renamed Trench Coat"))
            .otherwise(pl.col("title"))
            .alias("title")
        ).write_csv(catalogue)
        edited = make_refresh(env)
        assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
        worker_pids = worker_process_ids(worker)
    finally:
        stop_process(worker)

    runs = [r.dagster_run for r in instance.get_run_records()]
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    assert len(runs) > n_runs
    step_pids = step_pids_of(instance, [run.run_id for run in runs])
    assert step_pids and step_pids <= worker_pids, (step_pids, worker_pids)
    images = instance.get_latest_materialization_event(dg.AssetKey("product_images"))
    edit_runs = {run.run_id for run in runs[: len(runs) - n_runs]}  # newest first
    assert images is not None and images.run_id in edit_runs
    # A title edit leaves every URL answered: no download shard runs, nothing is fetched.
    metadata = images.asset_materialization.metadata
    assert (metadata["attempted"].value, metadata["shards_computed"].value) == (0, 0)
    instance.dispose()
