"""The `curate` job sharded over Celery workers vs unsharded in one process (issue 17 item 4).

N catalogue rows point at the download bench's slow, faulty image server (`bench.cdn`). Run A:
`dagster job execute -j curate` with DAGSTER_EXECUTOR=in_process and PIPELINE_IMAGE_SHARDS=1.
Run B: the same command with DAGSTER_EXECUTOR=celery and PIPELINE_IMAGE_SHARDS=S, its steps
taken by W Celery worker subprocesses (concurrency 1 each) on a queue of their own on the local
RabbitMQ. Each run has its own data dir, instance and freshly started image server (so both see
the same fault plan). Reported: each shard's keys, seconds and worker from the per-image assets'
`shard_runs` metadata, each asset's wall time and images/s, shard concurrency (sum of shard
seconds / the asset's wall), and whether curation_ledger is the same table in both runs. The
measured per-worker rates then feed bench/scale.py's 10M-row extrapolation.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from bench import scale
from bench.cdn import ServerProcess, fault_plan, make_jpegs
from bench.common import Report, base_parser, publish

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BROKER = "pyamqp://guest:guest@127.0.0.1:5672//"
SHARDED_ASSETS = ("product_images", "image_hashes", "image_quality")
SHARD_COLUMNS = ("shard", "keys", "computed", "seconds", "host", "pid")


def write_catalogue(path: Path, urls: list[str]) -> Path:
    """One product per URL, in the demo catalogue's columns that ingest reads."""
    n = len(urls)
    pl.DataFrame(
        {
            "category1_code": "WOMAN",
            "category2_code": "SCARVES",
            "category3_code": "SILK",
            "product_code": [str(i) for i in range(n)],
            "title": [f"Scarf {i}" for i in range(n)],
            "imageurl": urls,
            "full_price": "100",
            "price": "90",
            "full_price_eur": "95",
            "price_eur": "85",
        }
    ).write_csv(path)
    return path


def dagster_home(path: Path) -> Path:
    """A fresh instance with the local profile (`make instance`): runs start without a daemon."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_ROOT / "deploy" / "dagster.local.yaml", path / "dagster.yaml")
    return path


def run_env(root: Path, catalogue: Path, shards: int, executor: str) -> dict[str, str]:
    return {
        "PIPELINE_DATA_DIR": str(root / "data"),
        "CATALOGUE_URI": str(catalogue),
        "DAGSTER_HOME": str(dagster_home(root / "home")),
        "DAGSTER_EXECUTOR": executor,
        "PIPELINE_IMAGE_SHARDS": str(shards),
        "PIPELINE_ALLOW_PRIVATE_HOSTS": "1",  # the bench server on 127.0.0.1
        "WANDB_MODE": "disabled",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",  # dagster-celery runs `celery`
    }


def start_worker(env: dict[str, str], queue: str, name: str, log: Path) -> subprocess.Popen:
    command = [
        str(BIN / "dagster-celery"),
        *("worker", "start", "-A", "dagster_celery.app", "-q", queue, "-n", name),
        *("-y", str(REPO_ROOT / "deploy" / "celery-worker.yaml"), "--"),
        *("--concurrency=1", "--prefetch-multiplier=1", "-O", "fair"),
    ]
    with open(log, "wb") as handle:
        worker = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while b" ready." not in log.read_bytes():
        if worker.poll() is not None or time.monotonic() > deadline:
            stop_worker(worker)
            raise RuntimeError(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return worker


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM to the worker's own session (it was started with one), then SIGKILL."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def execute_curate(env: dict[str, str], timeout_s: float) -> float:
    command = [str(BIN / "dagster"), "job", "execute", "-m", "dagster_project.definitions"]
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "-j", "curate"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"curate failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def parse_shard_runs(markdown: str) -> list[dict[str, Any]]:
    """The `shard_runs` metadata table (assets/_shards.py) back into rows."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(SHARD_COLUMNS) or not cells[0].isdigit():
            continue
        row: dict[str, Any] = dict(zip(SHARD_COLUMNS, cells, strict=True))
        for column in ("shard", "keys", "computed", "pid"):
            row[column] = int(row[column].replace(",", ""))
        row["seconds"] = float(row["seconds"].replace(",", ""))
        rows.append(row)
    return rows


def concurrency(shard_seconds: Sequence[float], wall_s: float) -> float:
    """How many shards ran at once on average over the asset's wall time."""
    return sum(shard_seconds) / wall_s if wall_s > 0 else 0.0


def overhead_per_wave(shard_seconds: Sequence[float], wall_s: float, workers: int) -> float:
    """The asset's wall time that its shards, spread evenly over `workers`, do not explain
    (planning, collecting, step launch, uneven shards), per wave of one shard per worker."""
    waves = math.ceil(len(shard_seconds) / workers)
    return max(0.0, (wall_s - sum(shard_seconds) / workers) / waves)


def asset_walls(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Per graph-backed asset: first step start to last step success among its ops."""
    spans: dict[str, list[float]] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not record.step_key:
            continue
        if event.event_type not in (
            dg.DagsterEventType.STEP_START,
            dg.DagsterEventType.STEP_SUCCESS,
        ):
            continue
        asset = record.step_key.split(".", 1)[0]
        spans.setdefault(asset, []).append(record.timestamp)
    return {asset: max(ts) - min(ts) for asset, ts in spans.items()}


def measure(home: Path) -> dict[str, dict[str, Any]]:
    """Shard rows and wall per per-image asset, from the run's instance."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        run_id = instance.get_run_records(limit=1)[0].dagster_run.run_id
        walls = asset_walls(instance, run_id)
        out = {}
        for asset in SHARDED_ASSETS:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None and event.asset_materialization is not None, asset
            meta = event.asset_materialization.metadata
            shards = parse_shard_runs(meta["shard_runs"].value)
            out[asset] = {"shards": shards, "wall_s": walls[asset]}
        return out
    finally:
        instance.dispose()


def normalised_ledger(data_dir: Path, port: int) -> pl.DataFrame:
    """curation_ledger with the data-dir prefix and the server's port taken out of its text."""
    ledger = pl.read_parquet(data_dir / "curation_ledger.parquet")
    prefix, host = f"{data_dir}/", f"127.0.0.1:{port}"
    text = [c for c, t in ledger.schema.items() if t == pl.String]
    ledger = ledger.with_columns(
        pl.col(c)
        .str.replace_all(prefix, "", literal=True)
        .str.replace_all(host, "cdn", literal=True)
        for c in text
    )
    return ledger.sort("row_id")


def ledger_verdict(a: pl.DataFrame, b: pl.DataFrame) -> str:
    if a.columns != b.columns or a.height != b.height:
        return f"differ: columns/rows {a.columns}/{a.height} vs {b.columns}/{b.height}"
    differing = [
        c for c in a.columns if not a.get_column(c).equals(b.get_column(c), check_names=True)
    ]
    return "equal" if not differing else f"differ in {differing}"


def one_run(
    tmp: Path,
    name: str,
    images: list[bytes],
    plan: list[str],
    args: argparse.Namespace,
    celery: bool,
    port: int = 0,
) -> dict[str, Any]:
    """One curate run against a fresh image server (the fault plan counts hits per server)."""
    root = tmp / name
    root.mkdir()
    shards = args.shards if celery else 1
    with ServerProcess(images, plan, args.latency_ms / 1000, set(), port) as server:
        catalogue = write_catalogue(root / "catalogue.csv", server.urls())
        env = run_env(root, catalogue, shards, "celery" if celery else "in_process")
        workers = []
        try:
            if celery:
                queue = f"bench-sharded-{uuid.uuid4().hex[:8]}"
                env |= {"DAGSTER_CELERY_BROKER_URL": BROKER, "DAGSTER_CELERY_QUEUE": queue}
                for i in range(args.workers):
                    log = root / f"worker{i}.log"
                    workers.append(start_worker(env, queue, f"{queue}-w{i}@%h", log))
            wall_s = execute_curate(env, args.timeout_s)
        finally:
            for worker in workers:
                stop_worker(worker)
        port = server.port
    measured = measure(Path(env["DAGSTER_HOME"]))
    ledger = normalised_ledger(Path(env["PIPELINE_DATA_DIR"]), port)
    return {"name": name, "wall_s": wall_s, "assets": measured, "ledger": ledger,
            "shards": shards, "port": port}  # fmt: skip


def shard_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for asset, measured in run["assets"].items():
        seconds = [s["seconds"] for s in measured["shards"]]
        for s in measured["shards"]:
            rows.append({
                "run": run["name"], "asset": asset, "shard": s["shard"], "keys": s["keys"],
                "computed": s["computed"], "seconds": s["seconds"],
                "images/s": s["keys"] / s["seconds"] if s["seconds"] else None,
                "worker (host/pid)": f"{s['host']}/{s['pid']}",
            })  # fmt: skip
        keys = sum(s["keys"] for s in measured["shards"])
        rows.append({
            "run": run["name"], "asset": asset, "shard": "all", "keys": keys,
            "seconds": measured["wall_s"], "images/s": keys / measured["wall_s"],
            "shard concurrency": concurrency(seconds, measured["wall_s"]),
            "worker (host/pid)": f"{len({s['pid'] for s in measured['shards']})} process(es)",
        })  # fmt: skip
    return rows


def per_worker_rate(run: dict[str, Any], asset: str) -> float:
    """Keys per shard-second: one worker's rate on this asset, over all its shards."""
    shards = run["assets"][asset]["shards"]
    return sum(s["keys"] for s in shards) / sum(s["seconds"] for s in shards)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("sharded", __doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--timeout-s", type=float, default=900.0, help="per curate run")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> tuple[Report, Report]:
    images, plan = make_jpegs(args.rows), fault_plan(args.rows, args.fault_rate)
    with tempfile.TemporaryDirectory(prefix="bench-sharded-") as name:
        tmp = Path(name)
        a = one_run(tmp, "A in-process, 1 shard", images, plan, args, celery=False)
        # Row ids derive from the URLs: B's server takes the port A's had.
        b_name = f"B celery, {args.shards} shards"
        b = one_run(tmp, b_name, images, plan, args, celery=True, port=a["port"])
    verdict = ledger_verdict(a["ledger"], b["ledger"])
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    notes = [
        f"{args.rows:,} rows, one image URL each, {args.latency_ms:g} ms server latency, "
        f"{args.fault_rate:.0%} planted faults (bench.cdn); run A took {a['wall_s']:.0f} s, "
        f"run B {b['wall_s']:.0f} s (whole `dagster job execute -j curate`, start-up included).",
        f"curation_ledger, data-dir prefix and server port stripped: **{verdict}** between A "
        f"and B ({a['ledger'].height:,} rows).",
        f"Run B: {args.workers} Celery workers (concurrency 1, prefetch 1, -O fair) on one "
        f"queue; the image server unpinned. Load average at the end {load} on {os.cpu_count()} "
        "cores (the bench's own workers, server and threads count in it): with fewer cores than "
        "workers the CPU-bound shards (hashing, quality) share them and cannot run that many "
        "times faster; shard concurrency says how many ran at once, the rates say what each "
        "got.",
        "An asset's seconds are its first step start to its last step success (plan, shards, "
        "collect); shard concurrency is the sum of its shard seconds over that wall. "
        "image_hashes and image_quality both read product_images only and run side by side, "
        "so their walls overlap.",
    ]
    measured = Report("sharded", "Sharded curate on Celery workers (17: measured in small)",
                      shard_rows(a) + shard_rows(b), notes)  # fmt: skip
    return measured, extrapolation(b, args)


def extrapolation(b: dict[str, Any], args: argparse.Namespace) -> Report:
    download = per_worker_rate(b, "product_images")
    hashing = per_worker_rate(b, "image_hashes")
    waves = math.ceil(args.shards / args.workers)
    overhead = sum(
        overhead_per_wave([s["seconds"] for s in m["shards"]], m["wall_s"], args.workers)
        for asset, m in b["assets"].items()
        if asset in ("product_images", "image_hashes")
    )
    inputs = scale.ScaleInputs(
        rows=10_000_000, download_per_worker=download, hashing_per_worker=hashing,
        dedupe_s=scale.DEDUPE_10M_S, shards=16, shard_overhead_s=overhead,
    )  # fmt: skip
    notes = [
        f"Inputs measured by run B: download {download:.0f} images/s per worker "
        f"(product_images keys per shard-second), hashing {hashing:.0f} (image_hashes), shard "
        f"overhead {overhead:.1f} s per wave ({waves} wave(s) of {args.workers} workers: asset "
        "wall minus shard seconds / workers, both assets); dedupe "
        f"{scale.DEDUPE_10M_S:,.0f} s at 10M (summary row 3c, measured). The quality shards "
        "(image_quality) are not in bench/scale.py's model.",
        "Assumptions: bench/scale.py's (shards of equal size, ceil(S/K) waves, download "
        "independent across workers, hashing one core per worker, the dedupe global and "
        "single-process). The per-worker rates were measured on 2 shared cores under the "
        "load above, so the hashing rate is a floor for a worker with a core of its own.",
    ]
    rows = scale.table(inputs, scale.WORKER_COUNTS)
    return Report("sharded_scale", "10M rows on K workers, from the sharded run's rates", rows,
                  notes, module="sharded")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    for report in run(args):
        publish(report, args, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
