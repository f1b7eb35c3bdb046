"""Download benchmark: our fetcher vs the seed's serial `requests.get` loop vs img2dataset.

A threaded HTTP/1.1 server (`bench.cdn`) serves N distinct JPEGs, each response delayed by a
fixed latency (a far CDN) and a new connection's first one by a round trip more (the TCP
handshake, which loopback does not cost), with a few percent of faults planted by URL:
transient 500s (first hit fails), permanent 500s, 404s and transient hangs (first hit never
answers). Every client
sees the same fault plan: the server's hit counters are reset before each client runs. The
server and the clients are pinned to disjoint CPUs (what `taskset` does), so the client's
images/s is not shared with the server's own Python.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.cdn import ServerProcess, fault_plan, make_jpegs
from bench.common import Report, base_parser, benchmark_main, ratio, timed
from curation.download import DownloadPolicy, fetch_images
from schemas.tables import IMAGE_STATUS_OK

# img2dataset is not installed with the project (it pins pandas<3): point at its CLI here.
IMG2DATASET_ENV = "IMG2DATASET_BIN"
# The retries img2dataset gets: the same three as ours (run_ours's max_attempts 4).
IMG2DATASET_RETRIES = 3


def run_ours(
    urls: list[str], root: Path, timeout_s: float, workers: int, max_attempts: int = 4
) -> dict[str, Any]:
    policy = DownloadPolicy(
        connect_timeout_s=timeout_s,
        read_timeout_s=timeout_s,
        max_attempts=max_attempts,
        allowed_private_networks=("127.0.0.1/32",),  # the bench server; nothing else private
    )
    cpu_before = time.process_time()
    (frame, stats), seconds = timed(lambda: fetch_images(urls, str(root), policy, workers=workers))
    cpu_s = time.process_time() - cpu_before
    retries = int((frame["attempts"] - 1).clip(lower_bound=0).sum())
    ok = int((frame["status"] == IMAGE_STATUS_OK).sum())
    return {"seconds": seconds, "ok": ok, "retries": retries, "reasons": stats.reasons,
            "cpu_s": cpu_s}  # fmt: skip


def run_serial(urls: list[str], root: Path, timeout_s: float) -> dict[str, Any]:
    """The seed's loop: one `requests.get` at a time, keep status 200, no retry, no check.

    The seed passes no timeout and would hang forever on the first silent server; here it gets
    the same timeout as ours (and an exception counts as a skipped row) so the run ends.
    """
    import requests  # a baseline-only dependency

    root.mkdir(parents=True, exist_ok=True)

    def loop() -> int:
        kept = 0
        for index, url in enumerate(urls):
            try:
                response = requests.get(url, timeout=timeout_s)
            except requests.RequestException:
                continue
            if response.status_code == 200:
                (root / f"{index}.jpg").write_bytes(response.content)
                kept += 1
        return kept

    cpu_before = time.process_time()
    ok, seconds = timed(loop)
    return {"seconds": seconds, "ok": ok, "retries": 0, "cpu_s": time.process_time() - cpu_before}


def find_img2dataset(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get(IMG2DATASET_ENV), shutil.which("img2dataset")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def run_img2dataset(
    binary: str, urls: list[str], root: Path, timeout_s: float, workers: int, retries: int
) -> dict[str, Any]:
    """img2dataset's CLI on the same URL list: one process, as many threads as our workers."""
    root.mkdir(parents=True, exist_ok=True)
    url_list = root / "urls.txt"
    url_list.write_text("\n".join(urls) + "\n")
    out = root / "out"
    command = [
        binary,
        f"--url_list={url_list}",
        "--input_format=txt",
        "--output_format=files",
        f"--output_folder={out}",
        "--processes_count=1",
        f"--thread_count={workers}",
        f"--timeout={timeout_s:g}",
        f"--retries={retries}",
        "--resize_mode=no",
        "--disable_all_reencoding=True",
        "--enable_wandb=False",
        f"--number_sample_per_shard={len(urls)}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # its import otherwise asks PyPI for a new version
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    # Inherits this process's CPU affinity: the client CPUs, not the server's.
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    seconds = time.perf_counter() - start
    cpu_s = _children_cpu_s() - cpu_before
    if done.returncode != 0:
        raise RuntimeError(f"img2dataset exited {done.returncode}: {done.stderr[-400:]}")
    stats = [json.loads(p.read_text()) for p in out.glob("*_stats.json")]
    ok = sum(int(s.get("successes", 0)) for s in stats)
    # Its own clock per shard: from reading the shard to its last write, without the start-up.
    durations = [float(s["duration"]) for s in stats if "duration" in s]
    shard_s = max(durations) if durations else None
    return {"seconds": seconds, "ok": ok, "retries": None, "cpu_s": cpu_s, "shard_s": shard_s}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children only
    return usage.ru_utime + usage.ru_stime


def _row(
    name: str, result: dict[str, Any], n: int, serial_s: float, client_cpus: int
) -> dict[str, Any]:
    images_per_s = result["ok"] / result["seconds"]
    return {
        "client": name,
        "seconds": result["seconds"],
        "images/s": images_per_s,
        "images/s per client core": images_per_s / client_cpus,
        "client CPU s": result["cpu_s"],
        "images per CPU s": result["ok"] / result["cpu_s"] if result["cpu_s"] else None,
        "ok": f"{result['ok']}/{n}",
        "retries": result["retries"],
        "speed-up vs serial": ratio(serial_s, result["seconds"]),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("download", __doc__)
    parser.add_argument("--images", type=int, default=1000, help="number of URLs")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="server delay per request")
    parser.add_argument(
        "--handshake-ms",
        type=float,
        default=None,
        help="extra delay of a new connection's first response, the TCP handshake's round trip "
        "that loopback lacks (default: the latency, one round trip; 0: none)",
    )
    parser.add_argument("--fault-rate", type=float, default=0.06, help="share of faulty URLs")
    parser.add_argument("--timeout-s", type=float, default=1.0, help="read timeout, all clients")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[64, 16],
        help="our thread counts to time (64 is the pipeline default); the no-retry row and "
        "img2dataset get the first",
    )
    parser.add_argument(
        "--serial-limit",
        type=int,
        default=0,
        help="time the serial loop on the first K URLs only and extrapolate (0 = all)",
    )
    parser.add_argument("--img2dataset", default=None, help=f"CLI path (else ${IMG2DATASET_ENV})")
    parser.add_argument(
        "--pairs",
        type=int,
        default=0,
        help="after the table, time K more alternating pairs (ours at the first thread count, "
        "then img2dataset) and report each pair's ratio and their median",
    )
    parser.add_argument(
        "--server-cpus",
        type=_cpu_list,
        default=None,
        help="CPUs the server runs on, e.g. 1 (default: the last allowed CPU when >= 2)",
    )
    parser.add_argument(
        "--client-cpus",
        type=_cpu_list,
        default=None,
        help="CPUs every client runs on, e.g. 0 (default: the allowed CPUs but the server's)",
    )
    return parser.parse_args(argv)


def _cpu_list(text: str) -> set[int]:
    return {int(cpu) for cpu in text.split(",") if cpu.strip()}


def placement(args: argparse.Namespace) -> tuple[set[int], set[int]]:
    """(server CPUs, client CPUs), disjoint when the machine has two or more CPUs to give."""
    allowed = sorted(os.sched_getaffinity(0))
    server = args.server_cpus if args.server_cpus is not None else set(allowed[-1:])
    if len(allowed) < 2 and args.server_cpus is None:
        server = set()  # one CPU: nothing to separate
    client = args.client_cpus or (set(allowed) - server) or set(allowed)
    return server, client


def run(args: argparse.Namespace) -> Report:
    allowed = os.sched_getaffinity(0)
    try:
        return _run_pinned(args)
    finally:
        os.sched_setaffinity(0, allowed)  # the report's machine line counts every CPU


def _run_pinned(args: argparse.Namespace) -> Report:
    n = args.images
    images, plan = make_jpegs(n), fault_plan(n, args.fault_rate)
    latency_s = args.latency_ms / 1000
    handshake_ms = args.latency_ms if args.handshake_ms is None else args.handshake_ms
    server_cpus, client_cpus = placement(args)
    os.sched_setaffinity(0, client_cpus)  # what `taskset -c` does; children inherit it
    cores = len(client_cpus)
    notes = _setup_notes(args, plan, server_cpus, client_cpus, handshake_ms)

    def serve() -> ServerProcess:
        return ServerProcess(images, plan, latency_s, server_cpus, handshake_s=handshake_ms / 1000)

    with tempfile.TemporaryDirectory(prefix="bench-download-") as tmp:
        with serve() as server:
            urls = server.urls()
            serial_urls = urls[: args.serial_limit] if args.serial_limit else urls
            serial = run_serial(serial_urls, Path(tmp, "serial"), args.timeout_s)
        if len(serial_urls) < n:
            notes.append(f"Serial loop timed on the first {len(serial_urls)} URLs, scaled to {n}.")
            scale = n / len(serial_urls)
            serial.update(
                seconds=serial["seconds"] * scale,
                ok=round(serial["ok"] * scale),
                cpu_s=serial["cpu_s"] * scale,
            )
        rows = [_row("seed serial requests.get", serial, n, serial["seconds"], cores)]
        for workers in args.workers:
            with serve() as server:
                ours = run_ours(server.urls(), Path(tmp, f"ours{workers}"), args.timeout_s, workers)
            rows.append(
                _row(f"ours fetch_images, {workers} threads", ours, n, serial["seconds"], cores)
            )
        notes.append(f"Our failure reasons: {ours['reasons']}.")
        workers = args.workers[0]
        with serve() as server:
            bare = run_ours(server.urls(), Path(tmp, "bare"), args.timeout_s, workers, 1)
        rows.append(_row(f"ours, {workers} threads, no retries", bare, n, serial["seconds"], cores))
        notes.append(
            "The no-retry row isolates what concurrency alone buys: retries win the transient "
            "failures back. Their backoff (full jitter, up to 0.25+0.5+1 s for a permanent 500) "
            "waits on a timer heap, not in a worker, but such a URL still ends that much later "
            "than it started, so the permanent 500s started last set the tail of the run."
        )
        with serve() as server:
            rows += _img2dataset_rows(
                find_img2dataset(args.img2dataset),
                server.urls(),
                Path(tmp, "i2d"),
                args,
                server.urls()[plan.index("ok")],
                (serial["seconds"], cores),
                notes,
            )
        if args.pairs:
            notes.append(_repeated_pairs(args, serve, Path(tmp, "pairs")))
    _compare_with_img2dataset(rows)
    return Report("download", "Download (1: images from a slow, faulty HTTP server)", rows, notes)


def _setup_notes(
    args: argparse.Namespace,
    plan: list[str],
    server_cpus: set[int],
    client_cpus: set[int],
    handshake_ms: float,
) -> list[str]:
    return [
        f"{len(plan)} URLs, {args.latency_ms:g} ms latency per request, {handshake_ms:g} ms "
        "more for a new connection's first request (the TCP handshake's round trip, which "
        "loopback does not cost: the server waits that long before reading a new "
        "connection); planted faults: "
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(plan).items()) if k != "ok")
        + " (flaky_500 and hang_once fail on the first request only). The server (HTTP/1.1, "
        "keep-alive) runs in its own process, restarted per client so each sees the same "
        "faults.",
        f"CPU placement: server on CPU {_cpus(server_cpus)}, every client (img2dataset "
        f"included) on CPU {_cpus(client_cpus)} (`os.sched_setaffinity`, as `taskset -c` "
        f"sets it), so images/s per client core divides by {len(client_cpus)}. Client CPU s "
        "is the client process's user+system time, all threads.",
        f"All clients use a {args.timeout_s:g} s read timeout. The seed passes none (it would "
        "hang on the first silent server); here it gets the same timeout so it terminates, and "
        "an exception skips the row, as its status check would.",
    ]


def _cpus(cpus: set[int]) -> str:
    return ",".join(map(str, sorted(cpus))) or "any"


IMG2DATASET_MARGINAL = "img2dataset, its own shard time"


def _compare_with_img2dataset(rows: list[dict[str, Any]]) -> None:
    """Adds each row's images/s as a multiple of img2dataset's without its start-up."""
    theirs = next((row for row in rows if row["client"] == IMG2DATASET_MARGINAL), None)
    if theirs is None or not theirs["images/s"]:
        return
    for row in rows:
        row["images/s vs img2dataset w/o start-up"] = row["images/s"] / theirs["images/s"]


def _repeated_pairs(
    args: argparse.Namespace, serve: Callable[[], ServerProcess], root: Path
) -> str:
    """Ours then img2dataset, K times, each on a fresh server: the ratio's spread, not one draw.

    Files of earlier runs stay until the end, so no run allocates inodes among ones freed
    seconds before (on an ext4 without a journal that costs each create a scan).
    """
    binary = find_img2dataset(args.img2dataset)
    if binary is None:
        return "Repeated pairs: not run, img2dataset's CLI not found."
    workers = args.workers[0]
    ratios: list[float] = []
    for index in range(args.pairs):
        with serve() as server:
            ours = run_ours(server.urls(), root / f"ours{index}", args.timeout_s, workers)
        with serve() as server:
            theirs = run_img2dataset(
                binary,
                server.urls(),
                root / f"i2d{index}",
                args.timeout_s,
                workers,
                IMG2DATASET_RETRIES,
            )
        if theirs["shard_s"]:
            ours_rate = ours["ok"] / ours["seconds"]
            ratios.append(ours_rate / (theirs["ok"] / theirs["shard_s"]))
    if not ratios:
        return "Repeated pairs: img2dataset reported no shard duration."
    listed = ", ".join(f"{value:.2f}" for value in sorted(ratios))
    return (
        f"Repeated pairs ({len(ratios)} x ours at {workers} threads then img2dataset, each on a "
        f"fresh server, after the table's runs): ours / img2dataset's shard-time images/s = "
        f"{listed}; median **{statistics.median(ratios):.2f}x**."
    )


PUBLISHED_IMG2DATASET = (
    "img2dataset's published figure, for scale: its README reports 1,350 images/s observed "
    "on its 18M-image benchmark (resizing on); the issue reads that as ~80 images/s per core."
)


def _img2dataset_rows(
    binary: str | None,
    urls: list[str],
    root: Path,
    args: argparse.Namespace,
    startup_url: str,
    baseline: tuple[float, int],  # (serial seconds, client cores)
    notes: list[str],
) -> list[dict[str, Any]]:
    if binary is None:
        notes.append(
            "img2dataset: not run, CLI not found (it pins pandas<3 so it is not in the project "
            f"venv; install it in its own venv and set ${IMG2DATASET_ENV}). "
            + PUBLISHED_IMG2DATASET
        )
        return []

    def cli(chosen: list[str], folder: str) -> dict[str, Any]:
        return run_img2dataset(
            binary, chosen, root / folder, args.timeout_s, args.workers[0], IMG2DATASET_RETRIES
        )

    try:
        startup = cli([startup_url], "startup")
        result = cli(urls, "all")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"img2dataset failed to run: {exc}"[:400])
        return []
    notes.append(
        f"img2dataset: same URL list, 1 process x the first thread count, {IMG2DATASET_RETRIES} "
        "retries, no re-encoding; it reports no retries; it opens a connection per request "
        "(urllib.request). Its CLI row includes its start-up (imports, its worker process, "
        "shard files), which ours, timed in a warm process, does not pay. The rate the ratio "
        "column compares against is its own: the seconds its stats file reports for the shard "
        "(from reading the shard to its last write, so no start-up), with the CPU of the 1-URL "
        "start-up row subtracted from the CLI's. " + PUBLISHED_IMG2DATASET
    )
    if result["shard_s"] is None:
        notes.append("img2dataset: its stats file reports no shard duration; no rate.")
        return [_row("img2dataset (CLI)", result, len(urls), *baseline)]
    marginal = {
        "seconds": result["shard_s"],
        "ok": result["ok"],
        "cpu_s": max(0.0, result["cpu_s"] - startup["cpu_s"]),
        "retries": None,
    }
    return [
        _row("img2dataset (CLI)", result, len(urls), *baseline),
        _row("img2dataset start-up (CLI, 1 URL)", startup, 1, *baseline),
        _row(IMG2DATASET_MARGINAL, marginal, len(urls), *baseline),
    ]


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
