"""What the multiprocess executor's forkserver holds before it forks a step.

Every step process builds the run's instance from its ref; on a cold interpreter the storage
layer (SQLAlchemy, alembic, the SQLite or PostgreSQL storages) costs about a second to import
and set up, on the critical path of every step. Opening the instance once here, before any
fork, leaves each step only its own connection to make (~0.15 s).
"""

from __future__ import annotations

import os

import dagster as dg

import dagster_project.definitions  # noqa: F401  (the code location every step loads)


def open_instance_once() -> None:
    # The forkserver inherits the run worker's environment, so this is the run's instance
    # (`make instance` and the CLI always write its dagster.yaml; without one there is nothing
    # worth warming, and Dagster would print a warning about it in every forkserver).
    home = os.environ.get("DAGSTER_HOME")
    if not home or not os.path.isfile(os.path.join(home, "dagster.yaml")):
        return
    with dg.DagsterInstance.get() as instance:
        instance.get_run_records(limit=1)


open_instance_once()
