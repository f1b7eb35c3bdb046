"""Instance storage on PostgreSQL through deploy/dagster.postgres.yaml (dagster-postgres).

The test creates a database of its own on the local server, materializes the curation
groups into it, and reads materializations and staleness back from a second instance object,
the way the webserver and daemon of a team deployment would.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from dagster_project.cli import selection_for
from dagster_project.definitions import build_definitions
from dagster_project.refresh import DEFAULT_TARGET, observe_catalogue, refresh, requested_now
from tests.e2e.helpers import copy_catalogue, pipeline_env, require_service, unavailable
from tests.e2e.ui_server import BIN, REPO_ROOT, stop_process

pytestmark = pytest.mark.slow

SERVER = "postgresql://postgres@127.0.0.1:5432"
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres ships psycopg2.
DRIVER = "postgresql+psycopg2://"
SELECTION = selection_for(["ingest", "images", "curation"])


@pytest.fixture
def database():
    require_service("PostgreSQL", "127.0.0.1", 5432)
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"catalogue_vlm_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(f"{SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        unavailable(f"cannot log in to PostgreSQL as postgres at {SERVER}: {exc}")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_materializations_and_staleness_live_in_postgres(tmp_path, demo_catalogue, database):
    catalogue = copy_catalogue(demo_catalogue.catalogue_path, tmp_path / "catalogue.csv", 200)
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.postgres.yaml", home / "dagster.yaml")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in pipeline_env(str(tmp_path / "data"), catalogue, home).items():
            mp.setenv(name, value)
        mp.setenv("DAGSTER_PG_URL", database.replace("postgresql://", DRIVER))
        mp.setenv("DAGSTER_EXECUTOR", "in_process")  # what is under test is the storage
        defs = build_definitions()
        graph = defs.resolve_asset_graph()
        # The team profile queues submitted runs; its daemon drains the queue.
        with (
            dg.DagsterInstance.from_config(str(home)) as writer,
            running_daemon(tmp_path / "daemon.log"),
        ):
            assert type(writer.run_storage).__name__ == "PostgresRunStorage"
            assert refresh(writer, DEFAULT_TARGET, SELECTION).success
            runs = writer.get_runs()
            assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            assert any(
                e.dagster_event_type == dg.DagsterEventType.RUN_ENQUEUED
                for e in (writer.all_logs(runs[-1].run_id))
            )

        with dg.DagsterInstance.from_config(str(home)) as reader:
            assert type(reader.event_log_storage).__name__ == "PostgresEventLogStorage"
            ledger = reader.fetch_materializations(dg.AssetKey("curation_ledger"), limit=5)
            assert len(ledger.records) == 1
            metadata = ledger.records[0].asset_materialization.metadata
            assert metadata["dagster/row_count"].value == 200
            assert requested_now(reader, DEFAULT_TARGET, SELECTION) == []
            # A catalogue edit is seen through the same database (the refresh cursor lives there).
            frame = pl.read_csv(catalogue, infer_schema=False)
            frame.with_columns(pl.col("title").str.to_uppercase()).write_csv(catalogue)
            observe_catalogue(reader, defs)
            assert requested_now(reader, DEFAULT_TARGET, SELECTION) == [
                dg.AssetKey("raw_catalogue")
            ]
    assert count_rows(database, "ASSET_MATERIALIZATION") >= len(SELECTION.resolve(graph))
    assert count_rows(database, "ASSET_OBSERVATION") == 2  # initial version, then the edit


@contextmanager
def running_daemon(log_path: Path) -> Iterator[None]:
    """`dagster-daemon run` on the test's instance, serving the code location `make ui` does."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-m", "dagster_project.definitions"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield
    finally:
        stop_process(process)


def count_rows(url: str, event_type: str) -> int:
    """Straight from the database: the events are really stored there."""
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM event_logs WHERE dagster_event_type = %s", [event_type]
        )
        return cursor.fetchone()[0]
