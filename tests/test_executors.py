"""DAGSTER_EXECUTOR picks where steps run; the default forks each step from a forkserver that
has imported the code location once, instead of spawning an interpreter per step."""

from __future__ import annotations

import sys

import dagster as dg
import pytest

from dagster_project.executors import FORKSERVER_PRELOAD, executor_from_env, max_concurrent_steps


@dg.op
def preloaded_modules() -> list[str]:
    return [name for name in FORKSERVER_PRELOAD if name in sys.modules]


@dg.op
def all_preloaded(names: list[str]) -> None:
    # This module imports none of FORKSERVER_PRELOAD: a spawned step would hold none of them.
    assert names == FORKSERVER_PRELOAD, names


@dg.job(executor_def=executor_from_env())
def two_steps() -> None:
    all_preloaded(preloaded_modules())


def test_default_steps_are_forked_from_a_preloaded_forkserver(tmp_path) -> None:
    # This test module imports none of FORKSERVER_PRELOAD: a spawned step would not hold them.
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = dg.execute_job(dg.reconstructable(two_steps), instance=instance)
        assert result.success


@pytest.mark.parametrize("kind", ["", "multiprocess", " Multiprocess "])
def test_multiprocess_means_the_forkserver_one(monkeypatch, kind: str) -> None:
    monkeypatch.setenv("DAGSTER_EXECUTOR", kind)
    executor = executor_from_env()
    assert executor.name == "multiprocess"
    assert executor is not dg.multiprocess_executor  # Dagster's own spawns per step


def test_an_unknown_executor_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_EXECUTOR", "threads")
    with pytest.raises(ValueError, match="multiprocess, in_process"):
        executor_from_env()


def test_steps_in_flight_default_to_twice_the_cores(monkeypatch) -> None:
    monkeypatch.delenv("PIPELINE_MAX_CONCURRENT_STEPS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 3)
    assert max_concurrent_steps() == 6
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT_STEPS", "1")
    assert max_concurrent_steps() == 1


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_a_bad_step_limit_is_refused(monkeypatch, bad: str) -> None:
    monkeypatch.setenv("PIPELINE_MAX_CONCURRENT_STEPS", bad)
    with pytest.raises(ValueError, match="positive integer"):
        max_concurrent_steps()
