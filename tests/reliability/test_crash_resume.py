"""kill -9 in the middle of the image download, then rerun: nothing torn, nothing fetched twice
that had finished, and the result equals an uninterrupted run's."""

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
from curation.image_store import remove_stale_temporaries
from tests.curation.fault_server import FaultServer
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


def _start_fetch(urls_file: Path, root: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._child", "fetch", str(urls_file), str(root),
         str(out), "4"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _run_fetch(urls_file: Path, root: Path, out: Path) -> dict:
    process = _start_fetch(urls_file, root, out)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    return json.loads(stdout.strip().splitlines()[-1])


def _recorded(root: Path) -> int:
    index = root / URL_INDEX_DIR
    return sum(1 for p in index.rglob("*.json")) if index.exists() else 0


def test_kill_9_mid_download_then_rerun_resumes_and_matches(
    server: FaultServer, tmp_path: Path
) -> None:
    urls = [server.url(f"/product?id={i}&delay={DELAY_S}") for i in range(N_PRODUCTS)]
    urls += [server.url("/status/404"), server.url("/html-as-jpeg")]  # failures stay failures
    urls_file = tmp_path / "urls.json"
    urls_file.write_text(json.dumps(urls))

    # Reference: one uninterrupted run in its own store.
    clean_root = tmp_path / "clean"
    _run_fetch(urls_file, clean_root, clean_root / "product_images.parquet")
    server.state.hits.clear()

    # Crash: SIGKILL once a third of the images are in, mid-stream.
    root, out = tmp_path / "crashed", tmp_path / "crashed" / "product_images.parquet"
    process = _start_fetch(urls_file, root, out)
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

    # Resume: finished downloads are not fetched again.
    stats = _run_fetch(urls_file, root, out)
    assert stats["reused"] >= finished_at_kill
    refetched = [path for path, n in server.state.hits.items() if n > hits_before.get(path, 0) > 0]
    refetched = [p for p in refetched if p.startswith("/product")]
    # Only images in flight at the kill (at most one per worker) are fetched a second time.
    assert len(refetched) <= 4, refetched

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
    assert len(temporaries) <= 4


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
