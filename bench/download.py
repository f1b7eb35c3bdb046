"""Download benchmark: our fetcher vs the seed's serial `requests.get` loop vs img2dataset.

A threaded HTTP/1.1 server on 127.0.0.1 serves N distinct JPEGs, each response delayed by a
fixed latency (a far CDN), with a few percent of faults planted by URL: transient 500s (first
hit fails), permanent 500s, 404s and transient hangs (first hit never answers). Every client
sees the same fault plan: the server's hit counters are reset before each client runs. The
server and the clients are pinned to disjoint CPUs (what `taskset` does), so the client's
images/s is not shared with the server's own Python.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import Report, base_parser, publish, ratio, timed
from curation.download import DownloadPolicy, fetch_images
from schemas.tables import IMAGE_STATUS_OK

FAULT_KINDS = ("flaky_500", "always_500", "not_found", "hang_once")
# img2dataset is not installed with the project (it pins pandas<3): point at its CLI here.
IMG2DATASET_ENV = "IMG2DATASET_BIN"
# The server process stops itself after this long even if the parent never says so.
MAX_SERVER_LIFETIME_S = 900.0


def make_jpegs(n: int, seed: int = 0) -> list[bytes]:
    """n distinct small JPEGs (noise over a random tint), so content addressing stores n files."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        tint = Image.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
        noise = Image.effect_noise((160, 120), 40).convert("RGB")
        buffer = io.BytesIO()
        Image.blend(tint, noise, 0.5).save(buffer, format="JPEG", quality=85)
        out.append(buffer.getvalue())
    return out


def fault_plan(n: int, rate: float, seed: int = 0) -> list[str]:
    """'ok' or a fault kind per image; each kind gets an equal share of `rate`."""
    rng = random.Random(seed)
    n_each = round(n * rate / len(FAULT_KINDS))
    plan = ["ok"] * n
    for i, index in enumerate(rng.sample(range(n), n_each * len(FAULT_KINDS))):
        plan[index] = FAULT_KINDS[i // n_each]
    return plan


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, as every CDN speaks: a client that reuses connections may.
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def handle(self) -> None:
        # A client closing a kept-alive connection between requests is no server error.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        srv = self.server
        try:
            index = int(self.path.split("?")[0].removeprefix("/img/").removesuffix(".jpg"))
            kind = srv.plan[index]
        except (ValueError, IndexError):
            kind, index = "not_found", -1
        hits = srv.hit(index)
        if srv.stop.wait(srv.latency_s):
            return
        if kind == "hang_once" and hits == 1:
            srv.stop.wait(srv.hang_s)  # bounded: the client's timeout fires long before
            self.close_connection = True
            return
        if kind == "not_found":
            self._send(404, b"not found", "text/plain")
        elif kind == "always_500" or (kind == "flaky_500" and hits == 1):
            self._send(500, b"oops", "text/plain")
        else:
            self._send(200, srv.images[index], "image/jpeg")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that gave up is not the server's problem


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops SYNs under 32 concurrent clients


class ImageServer:
    """`with ImageServer(images, plan, latency_s=0.05) as server:` on 127.0.0.1, ephemeral port."""

    def __init__(
        self, images: list[bytes], plan: list[str], latency_s: float, hang_s: float
    ) -> None:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        srv = self._httpd
        srv.images, srv.plan, srv.latency_s, srv.hang_s = images, plan, latency_s, hang_s  # type: ignore[attr-defined]
        srv.stop = threading.Event()  # type: ignore[attr-defined]
        self._lock = threading.Lock()
        self.hits: Counter[int] = Counter()
        srv.hit = self._hit  # type: ignore[attr-defined]
        self.port = int(srv.server_address[1])
        self._thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)

    def _hit(self, index: int) -> int:
        with self._lock:
            self.hits[index] += 1
            return self.hits[index]

    def urls(self) -> list[str]:
        n = len(self._httpd.plan)  # type: ignore[attr-defined]
        return [f"http://127.0.0.1:{self.port}/img/{i}.jpg" for i in range(n)]

    def __enter__(self) -> ImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.stop.set()  # type: ignore[attr-defined]
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _serve(
    images: list[bytes], plan: list[str], latency_s: float, cpus: set[int], conn: Connection
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    with ImageServer(images, plan, latency_s, hang_s=MAX_SERVER_LIFETIME_S) as server:
        conn.send(server.port)
        conn.poll(MAX_SERVER_LIFETIME_S)  # any message (or the parent dying) means stop


class ServerProcess:
    """The server in its own process: in-process, its threads would compete with the clients
    for the GIL, which a real CDN does not. A fresh process per client resets the fault plan."""

    def __init__(
        self, images: list[bytes], plan: list[str], latency_s: float, cpus: set[int]
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(images, plan, latency_s, cpus, child), daemon=True
        )
        self._n = len(plan)
        self.port = 0

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.port}/img/{i}.jpg" for i in range(self._n)]

    def __enter__(self) -> ServerProcess:
        self._process.start()
        if not self._conn.poll(60):
            self._process.kill()
            raise RuntimeError("bench image server did not start")
        self.port = self._conn.recv()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._conn.send("stop")
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()  # our own child, by handle
            self._process.join(timeout=5)


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
    return {"seconds": seconds, "ok": ok, "retries": None, "cpu_s": cpu_s}


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
    server_cpus, client_cpus = placement(args)
    os.sched_setaffinity(0, client_cpus)  # what `taskset -c` does; children inherit it
    cores = len(client_cpus)
    notes = _setup_notes(args, plan, server_cpus, client_cpus)

    def serve() -> ServerProcess:
        return ServerProcess(images, plan, latency_s, server_cpus)

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
    _compare_with_img2dataset(rows)
    return Report("download", "Download (1: images from a slow, faulty HTTP server)", rows, notes)


def _setup_notes(
    args: argparse.Namespace, plan: list[str], server_cpus: set[int], client_cpus: set[int]
) -> list[str]:
    return [
        f"{len(plan)} URLs, {args.latency_ms:g} ms latency per request; planted faults: "
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


IMG2DATASET_MARGINAL = "img2dataset, start-up subtracted"


def _compare_with_img2dataset(rows: list[dict[str, Any]]) -> None:
    """Adds each row's images/s as a multiple of img2dataset's without its start-up."""
    theirs = next((row for row in rows if row["client"] == IMG2DATASET_MARGINAL), None)
    if theirs is None or not theirs["images/s"]:
        return
    for row in rows:
        row["images/s vs img2dataset w/o start-up"] = row["images/s"] / theirs["images/s"]


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
            binary, chosen, root / folder, args.timeout_s, args.workers[0], retries=3
        )

    try:
        startup = cli([startup_url], "startup")
        result = cli(urls, "all")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"img2dataset failed to run: {exc}"[:400])
        return []
    notes.append(
        "img2dataset: same URL list, 1 process x the first thread count, 3 retries, no "
        "re-encoding; it reports no retries; it opens a connection per request "
        "(urllib.request). Its CLI row includes its start-up (imports, its worker process, "
        "shard files), which ours, timed in a warm process, does not pay: the start-up row "
        "is one good URL, and the row after it subtracts that time, CPU and image, which "
        "is the rate the ratio column compares against. " + PUBLISHED_IMG2DATASET
    )
    if result["seconds"] <= startup["seconds"]:
        notes.append("img2dataset: its 1-URL start-up took longer than the full run; no rate.")
        return [_row("img2dataset (CLI)", result, len(urls), *baseline)]
    marginal = {
        "seconds": result["seconds"] - startup["seconds"],
        "ok": result["ok"] - startup["ok"],
        "cpu_s": result["cpu_s"] - startup["cpu_s"],
        "retries": None,
    }
    return [
        _row("img2dataset (CLI)", result, len(urls), *baseline),
        _row("img2dataset start-up (CLI, 1 URL)", startup, 1, *baseline),
        _row(IMG2DATASET_MARGINAL, marginal, len(urls) - 1, *baseline),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    publish(run(args), args, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
