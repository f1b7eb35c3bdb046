"""Two runs on one data dir at once: the content store and the Parquet tables stay whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets.resources import parquet_io_manager
from tests.curation.fault_server import FaultServer
from tests.reliability._child import write_catalogue
from tests.reliability._store import check_store

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]
N_PRODUCTS = 40
COMPARED = ["url", "status", "reason", "sha256", "format", "width", "height", "bytes"]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._child", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def test_two_fetch_processes_share_one_store(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.url(f"/product?id={i}&delay=0.02") for i in range(N_PRODUCTS)]
    forward, backward = tmp_path / "forward.json", tmp_path / "backward.json"
    forward.write_text(json.dumps(urls))
    backward.write_text(json.dumps(urls[::-1]))  # opposite order: they race on every object
    root = tmp_path / "data"
    outs = [root / "a.parquet", root / "b.parquet"]
    processes = [
        _spawn("fetch", str(forward), str(root), str(outs[0]), "4"),
        _spawn("fetch", str(backward), str(root), str(outs[1]), "4"),
    ]
    for process in processes:
        _finish(process, timeout=60)
    a, b = (pl.read_parquet(out).select(COMPARED).sort("url") for out in outs)
    assert a.equals(b) and a.height == N_PRODUCTS and (a["status"] == "ok").all()
    stored, temporaries = check_store(root)
    assert stored == set(a["sha256"]) and temporaries == []


@pytest.mark.slow
def test_two_dagster_materializations_at_once(server: FaultServer, tmp_path: Path) -> None:
    urls = [server.url(f"/product?id={i}&delay=0.05") for i in range(N_PRODUCTS)]
    catalogue = write_catalogue(tmp_path / "catalogue.csv", urls)
    data_dir = tmp_path / "data"
    processes = [_spawn("materialize", str(catalogue), str(data_dir)) for _ in range(2)]
    for process in processes:
        assert _finish(process, timeout=150) == {"success": True, "rows": N_PRODUCTS}
    tables = sorted(data_dir.glob("*.parquet"))
    assert {t.stem for t in tables} >= {"raw_catalogue", "validated_products", "product_images"}
    for table in tables:
        pl.read_parquet(table)  # every table whole and readable
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []
    images = pl.read_parquet(data_dir / "product_images.parquet")
    assert images["sha256"].null_count() == 0
    stored, temporaries = check_store(data_dir)
    assert stored == set(images["sha256"]) and temporaries == []


@dg.asset
def table() -> pl.DataFrame:
    return pl.DataFrame({"x": list(range(1000))})


def test_a_failed_table_write_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash mid-write (here: the writer dies after half the bytes) leaves the last good
    Parquet in place and no temporary behind; dagster-polars alone would leave a torn file."""
    io_manager = parquet_io_manager(str(tmp_path))
    assert dg.materialize([table], resources={"io_manager": io_manager}).success
    target = tmp_path / "table.parquet"
    before = target.read_bytes()

    def torn_write(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        file.write(b"PAR1" + b"\0" * 100)  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", torn_write)
    result = dg.materialize([table], resources={"io_manager": io_manager}, raise_on_error=False)
    assert not result.success
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]
