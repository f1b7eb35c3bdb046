"""Shared by the e2e and deploy tests: instance homes, catalogue copies, service probes."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import polars as pl
import pytest

# `.ci/run` sets this: there every service and the browser are installed, so a skip would hide
# a broken deployment path instead of reporting a machine that lacks it.
REQUIRE_SERVICES = os.environ.get("CI_REQUIRE_SERVICES") == "1"
LOCAL_PROFILE = Path(__file__).resolve().parents[2] / "deploy" / "dagster.local.yaml"
# The Parquet tables of the ingest, images and curation groups: what a curation run leaves.
CURATION_TABLES = (
    "raw_catalogue",
    "validated_products",
    "rejected_rows",
    "product_images",
    "image_hashes",
    "image_quality",
    "duplicate_clusters",
    "curation_ledger",
    "curated_products",
)


def unavailable(reason: str) -> None:
    """Skip on a machine without the service; fail where services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CI_REQUIRE_SERVICES=1, so this is a failure, not a skip)")
    pytest.skip(reason)


def reachable(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    if not reachable(host, port):
        unavailable(f"{name} is not reachable at {host}:{port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_dagster_home(home: Path, extra_yaml: str = "") -> Path:
    """A Dagster instance directory with the local profile `make instance` installs (runs start
    without a daemon; telemetry off, no network)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(LOCAL_PROFILE.read_text() + extra_yaml)
    return home


def copy_catalogue(source: Path, target: Path, n_rows: int | None = None) -> Path:
    """A copy of the demo catalogue (its file:// image URLs still point at the demo images);
    `n_rows` keeps the head only, for tests that exercise plumbing rather than data."""
    frame = pl.read_csv(source, infer_schema=False)
    if n_rows is not None:
        frame = frame.head(n_rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(target)
    return target


def pipeline_env(data_dir: str, catalogue: Path, home: Path) -> dict[str, str]:
    return {
        "PIPELINE_DATA_DIR": data_dir,
        "CATALOGUE_URI": str(catalogue),
        "DAGSTER_HOME": str(home),
        "WANDB_MODE": "disabled",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
