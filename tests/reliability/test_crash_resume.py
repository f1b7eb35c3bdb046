"""kill -9 in the middle of the image download, then rerun: nothing torn, nothing fetched twice
that was recorded as finished, and the result equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from curation.download import URL_INDEX_DIR
from curation.images.store import remove_stale_temporaries
from schemas.atomic import is_temporary
from tests.curation.fault_server import FaultServer
from tests.reliability._child import write_catalogue
from tests.reliability._store import check_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
N_PRODUCTS = 60
DELAY_S = 0.1  # per image: with 4 workers the whole batch takes ~1.5 s, long enough to kill
COMPARED = ["url", "status", "reason", "sha256", "format", "width", "height", "bytes"]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as running:
        yield running


WORKERS = 4


def _start_fetch(urls_file: Path, root: Path, out: Path, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._child", "fetch", str(urls_file), str(root),
         str(out), str(WORKERS), str(batch)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _run_fetch(urls_file: Path, root: Path, out: Path, batch: int) -> dict:
    process = _start_fetch(urls_file, root, out, batch)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def _index_files(root: Path) -> list[Path]:
    index = root / URL_INDEX_DIR
    files = [p for p in index.rglob("*") if p.is_file()] if index.exists() else []
    return [p for p in files if not is_temporary(p.name)]


def _recorded(root: Path) -> int:
    """Successes durably recorded in the URL index (one JSON line each)."""
    return sum(len(p.read_bytes().splitlines()) for p in _index_files(root))


@pytest.mark.parametrize("batch", [1, 10])
def test_kill_9_mid_download_then_rerun_resumes_and_matches(
    server: FaultServer, tmp_path: Path, batch: int
) -> None:
    """With index writes batched `batch` at a time, a kill -9 re-fetches at most the batch
    being gathered plus the downloads in flight (one per worker)."""
    urls = [server.url(f"/product?id={i}&delay={DELAY_S}") for i in range(N_PRODUCTS)]
    urls += [server.url("/status/404"), server.url("/html-as-jpeg")]  # failures stay failures
    urls_file = tmp_path / "urls.json"
    urls_file.write_text(json.dumps(urls))

    # Reference: one uninterrupted run in its own store, one durable index write per batch.
    clean_root = tmp_path / "clean"
    _run_fetch(urls_file, clean_root, clean_root / "product_images.parquet", batch)
    assert len(_index_files(clean_root)) == -(-N_PRODUCTS // batch)
    assert _recorded(clean_root) == N_PRODUCTS
    server.state.hits.clear()

    # Crash: SIGKILL once a third of the images are recorded, mid-stream.
    root, out = tmp_path / "crashed", tmp_path / "crashed" / "product_images.parquet"
    process = _start_fetch(urls_file, root, out, batch)
    deadline = time.monotonic() + 30
    while _recorded(root) < N_PRODUCTS // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists(), "the table was written: the kill came too late to test anything"
    finished_at_kill = _recorded(root)
    assert N_PRODUCTS // 3 <= finished_at_kill < N_PRODUCTS
    check_store(root)  # whatever was on disk at the kill: intact objects or temporaries only
    hits_before = dict(server.state.hits)

    # Resume: recorded downloads are not fetched again; every row completes.
    stats = _run_fetch(urls_file, root, out, batch)
    assert stats["reused"] >= finished_at_kill
    assert stats["ok"] == N_PRODUCTS and stats["ok"] + stats["failed"] + stats["bad_image"] == len(
        urls
    )
    refetched = [path for path, n in server.state.hits.items() if n > hits_before.get(path, 0) > 0]
    refetched = [p for p in refetched if p.startswith("/product")]
    # Only the batch being gathered (or written) and the downloads in flight at the kill are
    # fetched a second time.
    assert len(refetched) <= batch + WORKERS, refetched

    # Same rows, same images as the uninterrupted run.
    resumed = pl.read_parquet(out).select(COMPARED)
    clean = pl.read_parquet(clean_root / "product_images.parquet").select(COMPARED)
    assert resumed.equals(clean)
    stored, temporaries = check_store(root)
    clean_stored, _ = check_store(clean_root)
    assert stored == clean_stored == set(resumed["sha256"].drop_nulls())
    # Orphaned temporaries (if the kill hit a write) are recognisable and swept up.
    remove_stale_temporaries(str(root), older_than_s=0)
    assert check_store(root)[1] == []
    assert len(temporaries) <= WORKERS


SHARDS = 2


def _start_materialize(catalogue: Path, data_dir: Path, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._child", "materialize", str(catalogue),
         str(data_dir), str(SHARDS), str(batch)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_kill_9_mid_sharded_download_then_rerun_completes_every_row(
    server: FaultServer, tmp_path: Path
) -> None:
    """product_images through Dagster in shards, killed mid-download: the rerun completes every
    row; a shard whose result was stored is not run again, and the shard that was running
    fetches again at most its gathering batch plus its downloads in flight."""
    batch = 10
    urls = [server.url(f"/product?id={i}&delay={DELAY_S}") for i in range(N_PRODUCTS)]
    catalogue = write_catalogue(tmp_path / "catalogue.csv", urls)
    data_dir = tmp_path / "data"
    process = _start_materialize(catalogue, data_dir, batch)
    deadline = time.monotonic() + 60
    while _recorded(data_dir) < N_PRODUCTS // 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert not (data_dir / "product_images.parquet").exists(), "killed too late to test"
    assert N_PRODUCTS // 3 <= _recorded(data_dir) < N_PRODUCTS
    hits_before = dict(server.state.hits)

    rerun = _start_materialize(catalogue, data_dir, batch)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr[-4000:]
    assert json.loads(stdout.strip().splitlines()[-1]) == {"success": True, "rows": N_PRODUCTS}
    table = pl.read_parquet(data_dir / "product_images.parquet")
    assert (table["status"] == "ok").all() and table["sha256"].n_unique() == N_PRODUCTS
    refetched = [p for p, n in server.state.hits.items() if n > hits_before.get(p, 0) > 0]
    # The in-process executor runs one shard at a time: one shard's batch and workers at most.
    assert len(refetched) <= batch + WORKERS, refetched
    stored, temporaries = check_store(data_dir)
    assert stored >= set(table["sha256"]) and len(temporaries) <= WORKERS


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_mid_training_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    """kill -9 the training command the `lora_adapter` asset launches, once a checkpoint is on
    disk; the rerun resumes from that checkpoint and ends at the uninterrupted step count."""
    from tests.training.conftest import make_catalogue_dataset, tiny_train_config

    dataset = make_catalogue_dataset(tmp_path / "hf", 64, 16, 16, n_categories=4, seed=5)
    out = tmp_path / "run"
    config = tiny_train_config(
        dataset, tmp_path / "cache", out, max_steps=12, save_every_steps=2, per_device_batch_size=4
    )
    config_path = tmp_path / "cfg.json"
    config.save(config_path)
    command = [sys.executable, "-m", "training.train", "--config", str(config_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    victim = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while not list(out.glob("checkpoints/step-*")) and time.monotonic() < deadline:
        assert victim.poll() is None, "training ended before the first checkpoint"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (out / "metrics.json").exists()  # it really died mid-run
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert result["resumed_from_step"] and result["resumed_from_step"] >= 2
    assert result["steps"] == 12
    assert (out / "adapter" / "adapter_model.safetensors").exists()
