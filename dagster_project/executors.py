"""Where steps run, chosen by env (scale-out by configuration, not by rewriting assets).

`DAGSTER_EXECUTOR`:
- unset / `multiprocess` — one subprocess per step on this machine, forked from a forkserver
  that has imported the code location once (Dagster's default spawns a fresh interpreter per
  step, which re-imports dagster, polars, PIL, datasets and our modules: ~4 s a step).
- `in_process` — every step in the run's own process (fast start; what the tests use).
- `celery` — steps become Celery tasks on `DAGSTER_CELERY_BROKER_URL` (RabbitMQ or Redis),
  consumed by `dagster-celery worker start -A dagster_celery.app -q $DAGSTER_CELERY_QUEUE`.
- `k8s` — each step is a Kubernetes Job (dagster-k8s); see docs/deploy.md.

The integrations are imported only when chosen, so the local demo does not need them.
"""

from __future__ import annotations

import os

import dagster as dg

DEFAULT_BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
DEFAULT_QUEUE = "dagster"
# What the forkserver imports before it forks any step: the code location (and so dagster,
# polars, PIL, numpy) and the instance's storage layer. It must not import torch: training runs
# in its own Pipes subprocess, and a forked torch is neither needed nor fork-safe
# (tests/training/test_imports).
FORKSERVER_PRELOAD = ["dagster_project.definitions", "dagster_project.step_preload"]


def max_concurrent_steps() -> int:
    """Steps in flight at once: twice the cores by default, since a step spends its first
    fraction of a second starting up and many (checks, collects, plans) little more; the
    CPU-heavy shards then share the cores. `PIPELINE_MAX_CONCURRENT_STEPS` overrides it."""
    configured = os.environ.get("PIPELINE_MAX_CONCURRENT_STEPS", "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise ValueError(
                f"PIPELINE_MAX_CONCURRENT_STEPS must be a positive integer, not {configured!r}"
            )
        return int(configured)
    return 2 * (os.cpu_count() or 1)


def multiprocess_executor() -> dg.ExecutorDefinition:
    return dg.multiprocess_executor.configured(
        {
            "start_method": {"forkserver": {"preload_modules": FORKSERVER_PRELOAD}},
            "max_concurrent": max_concurrent_steps(),
        },
        name="multiprocess",
    )


def celery_executor_from_env() -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {
            "broker": os.environ.get("DAGSTER_CELERY_BROKER_URL", DEFAULT_BROKER),
            "backend": os.environ.get("DAGSTER_CELERY_BACKEND_URL", "rpc://"),
            # Workers listen on named queues; a queue per deployment keeps teams apart.
            "config_source": {
                "task_default_queue": os.environ.get("DAGSTER_CELERY_QUEUE", DEFAULT_QUEUE)
            },
        },
        name="celery",
    )


def k8s_executor_from_env() -> dg.ExecutorDefinition:
    from dagster_k8s import k8s_job_executor

    # Image, namespace and per-step resources come from run config / op tags (docs/deploy.md).
    return k8s_job_executor


def executor_from_env() -> dg.ExecutorDefinition:
    kind = os.environ.get("DAGSTER_EXECUTOR", "multiprocess").strip().lower()
    if kind in ("", "multiprocess"):
        return multiprocess_executor()
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "celery":
        return celery_executor_from_env()
    if kind == "k8s":
        return k8s_executor_from_env()
    raise ValueError(
        f"DAGSTER_EXECUTOR must be multiprocess, in_process, celery or k8s, not {kind!r}"
    )
