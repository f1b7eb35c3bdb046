"""Many URLs at once: the retry scheduler and the result table (resume index: `url_index`).

`fetch_images` is the one driver: every attempt, retry and backoff of every URL goes through
its scheduler, and `fetch_image` is a batch of one. It never raises for a bad URL, server or
bytes; each row's `status` (schemas.tables IMAGE_STATUS_*) and `reason` say what went wrong,
so the curation ledger can account for every row.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import itertools
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeGuard

import polars as pl

from curation.download.connections import ConnectionPools
from curation.download.policy import DEFAULT_POLICY, DownloadPolicy
from curation.download.reasons import REASON_BAD_URL, FetchError, reason_code
from curation.download.transport import Deadline, fetch_once
from curation.download.url_index import UrlIndexWriter, recorded_rows
from curation.images import store as image_store
from curation.images.sniff import FORMAT_EXTENSIONS, BadImageError, inspect_image_bytes
from schemas.progress import Progress
from schemas.tables import (
    IMAGE_FETCH_SCHEMA,
    IMAGE_STATUS_BAD_IMAGE,
    IMAGE_STATUS_DOWNLOAD_FAILED,
    IMAGE_STATUS_OK,
    empty_frame,
)


@dataclass(frozen=True)
class ImageFetchResult:
    """One row of IMAGE_FETCH_SCHEMA."""

    url: str | None
    status: str
    reason: str | None
    sha256: str | None
    path: str | None
    format: str | None
    width: int | None
    height: int | None
    bytes: int | None
    attempts: int
    elapsed_s: float

    @property
    def reason_code(self) -> str | None:
        return reason_code(self.reason)

    def as_row(self) -> dict[str, Any]:
        # Flat fields: a plain read costs a tenth of dataclasses.asdict's recursive copy.
        return {name: getattr(self, name) for name in _RESULT_FIELDS}


_RESULT_FIELDS = tuple(f.name for f in fields(ImageFetchResult))


@dataclass(frozen=True)
class FetchStats:
    """`ok + failed + bad_image` equals the number of rows (reused rows count as ok)."""

    attempted: int
    reused: int
    ok: int
    failed: int
    bad_image: int
    reasons: dict[str, int] = field(default_factory=dict)  # reason code -> rows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _backoff_s(attempt: int, policy: DownloadPolicy) -> float:
    ceiling = min(policy.backoff_max_s, policy.backoff_base_s * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)  # full jitter: retries of many workers spread out


def _retry_delay(
    exc: FetchError, attempt: int, policy: DownloadPolicy, deadline: Deadline
) -> float | None:
    """Seconds to wait before the next attempt, or None when `exc` is the URL's final answer.

    The scheduler does not sleep it: the job waits on a heap while its worker takes other work.
    """
    exc.attempts = attempt
    if not exc.retryable or attempt >= policy.max_attempts:
        return None
    delay = exc.retry_after if exc.retry_after is not None else _backoff_s(attempt, policy)
    if delay >= deadline.remaining():
        return None  # waiting would only trade this error for a deadline error
    return delay


def _result(
    url: str | None, status: str, reason: str | None, started: float, **fields: Any
) -> ImageFetchResult:
    values: dict[str, Any] = dict.fromkeys(("sha256", "path", "format", "width", "height"))
    values.update(bytes=None, attempts=0)
    values.update(fields)
    elapsed = round(time.monotonic() - started, 4)
    return ImageFetchResult(url=url, status=status, reason=reason, elapsed_s=elapsed, **values)


def _is_usable(url: str | None) -> TypeGuard[str]:
    return isinstance(url, str) and bool(url.strip())


def _empty(url: str | None, started: float) -> ImageFetchResult:
    return _result(url, IMAGE_STATUS_DOWNLOAD_FAILED, f"{REASON_BAD_URL}: empty", started)


def _failed(url: str | None, exc: FetchError, started: float) -> ImageFetchResult:
    failed = IMAGE_STATUS_DOWNLOAD_FAILED
    return _result(url, failed, exc.reason, started, attempts=exc.attempts)


def _verified(
    url: str, data: bytes, attempts: int, started: float, store_root: str, policy: DownloadPolicy
) -> ImageFetchResult:
    """Check the downloaded bytes and store them if they are an allowed image."""
    try:
        kind, width, height = inspect_image_bytes(data, policy.max_pixels, policy.allowed_formats)
    except BadImageError as exc:
        bad = IMAGE_STATUS_BAD_IMAGE
        return _result(url, bad, exc.reason, started, bytes=len(data), attempts=attempts)
    digest = image_store.sha256_hex(data)
    # The URL index syncs the store once per batch before naming these images.
    ext = FORMAT_EXTENSIONS[kind]
    path = image_store.store_image_bytes(store_root, data, ext, durable=False, sha256=digest)
    return _result(
        url,
        IMAGE_STATUS_OK,
        None,
        started,
        sha256=digest,
        path=path,
        format=kind,
        width=width,
        height=height,
        bytes=len(data),
        attempts=attempts,
    )


def fetch_image(
    url: str | None, store_root: str, policy: DownloadPolicy = DEFAULT_POLICY
) -> ImageFetchResult:
    """Download, verify and store one image: a batch of one through the batch scheduler.

    Never raises for a bad URL, server or bytes. Unlike `fetch_images` it does not reuse an
    earlier success: it always fetches (and records the success in the URL index). Storage
    errors (full disk, missing bucket) do raise: they are the operator's problem and must fail
    the run rather than mark every row as a bad download.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch") as pool:
        rows = _fetch_scheduled([url], store_root, policy, pool, workers=1)
    return ImageFetchResult(**rows[url])


def _reuse_candidates(previous: pl.DataFrame | None) -> list[dict[str, Any]]:
    if previous is None or previous.height == 0:
        return []
    rows = (
        previous.select(list(IMAGE_FETCH_SCHEMA))
        .filter((pl.col("status") == IMAGE_STATUS_OK) & pl.col("sha256").is_not_null())
        .filter(pl.col("format").is_in(list(FORMAT_EXTENSIONS)))
        .unique(subset="url", keep="first", maintain_order=True)
    )
    return rows.to_dicts()


def _still_stored(row: dict[str, Any], store_root: str) -> dict[str, Any] | None:
    """The previous row, pointed at the current store, if its image is still there."""
    try:
        path = image_store.image_path_for(
            store_root, row["sha256"], FORMAT_EXTENSIONS[row["format"]]
        )
    except ValueError:
        return None
    return {**row, "path": path} if image_store.exists(path) else None


@dataclass
class _Job:
    """One URL of a batch between its attempts; one thread at a time holds it."""

    url: str | None
    started: float = 0.0
    deadline: Deadline | None = None
    attempt: int = 0
    last_error: FetchError | None = None
    ready_at: float = 0.0  # when the next attempt is due


def _attempt(
    job: _Job, store_root: str, policy: DownloadPolicy, pools: ConnectionPools | None = None
) -> dict[str, Any] | None:
    """Make the job's next attempt: its final row, or None to retry it at `job.ready_at`."""
    url = job.url
    if job.deadline is None:
        job.started = time.monotonic()
        # The budget starts at the first attempt, not when the URL joined the batch's queue.
        job.deadline = Deadline(policy.deadline_s)
    elif job.last_error is not None and job.deadline.remaining() <= 0:
        # Due, but no worker was free before the deadline: the last error stands, as it does
        # when a backoff would outlast the deadline.
        return _failed(url, job.last_error, job.started).as_row()
    if not _is_usable(url):
        return _empty(url, job.started).as_row()
    job.attempt += 1
    try:
        data = fetch_once(url.strip(), policy, job.deadline, pools)
    except FetchError as exc:
        delay = _retry_delay(exc, job.attempt, policy, job.deadline)
        if delay is None:
            return _failed(url, exc, job.started).as_row()
        job.last_error, job.ready_at = exc, time.monotonic() + delay
        return None
    return _verified(url, data, job.attempt, job.started, store_root, policy).as_row()


def _fetch_scheduled(
    urls: list[str | None],
    store_root: str,
    policy: DownloadPolicy,
    pool: ThreadPoolExecutor,
    workers: int,
    progress: Progress | None = None,
) -> dict[str | None, dict[str, Any]]:
    """Fetch `urls` through the scheduler, sharing keep-alive connections and recording each
    success in the URL index, one durable write per `policy.index_batch_size` successes."""
    index = UrlIndexWriter(store_root, policy.index_batch_size, policy.index_flush_s)
    finished = itertools.count(1)

    def on_row(row: dict[str, Any]) -> None:
        index.add(row)
        if progress is not None:
            progress(next(finished), len(urls))

    # Room for several hosts' connections to idle side by side between URLs, while open
    # sockets stay bounded: one in flight per worker plus the idle cap.
    with ConnectionPools(max_idle=max(16, 2 * workers)) as connections:
        attempt = functools.partial(
            _attempt, store_root=store_root, policy=policy, pools=connections
        )
        try:
            rows = _run_jobs(urls, pool, workers, attempt, on_row)
        except BaseException:
            # What finished stays recorded even when storage fails the batch.
            with contextlib.suppress(Exception):
                index.flush()
            raise
    index.flush()
    return rows


class _Scheduler:
    """The jobs of one batch for worker threads that pull their own work.

    A worker that ends an attempt takes its next job itself, under one lock: no thread between
    a finished attempt and the next, so the dispatch does not wait on whichever thread records
    rows. A due retry goes before a fresh URL, so a retry waits at most for one attempt to end
    (should its deadline pass meanwhile, its last error stands). A backoff waits on a heap of
    (due time, job), not in a worker: a sleeping worker held it for seconds per permanently
    failing URL, and a few of those set the tail of a batch.
    """

    def __init__(self, urls: list[str | None]) -> None:
        self._cond = threading.Condition()
        self._fresh = deque(_Job(url) for url in urls)
        self._waiting: list[tuple[float, int, _Job]] = []
        self._order = itertools.count()  # ties on the due time never compare jobs
        self._running = 0
        self._stopped = False
        self.rows: dict[str | None, dict[str, Any]] = {}

    def next_job(self) -> _Job | None:
        """The next job due, waiting for one if need be; None once the batch is over."""
        with self._cond:
            while not self._stopped:
                now = time.monotonic()
                if self._waiting and self._waiting[0][0] <= now:
                    job = heapq.heappop(self._waiting)[2]
                elif self._fresh:
                    job = self._fresh.popleft()
                elif self._waiting:
                    self._cond.wait(self._waiting[0][0] - now)
                    continue
                elif self._running:
                    self._cond.wait()  # a running attempt may yet hand back a retry
                    continue
                else:
                    return None
                self._running += 1
                return job
            return None

    def finish(self, job: _Job, row: dict[str, Any] | None) -> None:
        """Record the job's final row, or queue its retry (row None) for `job.ready_at`."""
        with self._cond:
            self._running -= 1
            if row is None:
                heapq.heappush(self._waiting, (job.ready_at, next(self._order), job))
                self._cond.notify()
            else:
                self.rows[job.url] = row
                if not self._running and not self._fresh and not self._waiting:
                    self._cond.notify_all()  # the batch is over: idle workers may leave

    def stop(self) -> None:
        """No job is handed out any more; attempts under way still end and report."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


def _run_jobs(
    urls: list[str | None],
    pool: ThreadPoolExecutor,
    workers: int,
    attempt: Callable[[_Job], dict[str, Any] | None],
    on_row: Callable[[dict[str, Any]], None],
) -> dict[str | None, dict[str, Any]]:
    """Run `attempt` on every URL's job on `workers` threads of `pool`; each final row goes to
    `on_row` on this thread as it lands. An error in an attempt (storage: disk full, a missing
    bucket) stops the batch and is raised once the attempts under way have ended."""
    scheduler = _Scheduler(urls)
    landed: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()

    def work() -> None:
        try:
            while (job := scheduler.next_job()) is not None:
                try:
                    row = attempt(job)
                except BaseException:
                    scheduler.stop()
                    raise
                scheduler.finish(job, row)
                if row is not None:
                    landed.put(row)
        finally:
            landed.put(None)  # this worker has left

    threads = [pool.submit(work) for _ in range(max(1, min(workers, len(urls))))]
    try:
        left = len(threads)
        while left:
            row = landed.get()
            if row is None:
                left -= 1
            else:
                on_row(row)
    except BaseException:
        scheduler.stop()
        wait(threads)
        raise
    for thread in threads:
        thread.result()  # the first storage error, after every finished row was recorded
    return scheduler.rows


def fetch_images(
    urls: Iterable[str | None],
    store_root: str,
    policy: DownloadPolicy = DEFAULT_POLICY,
    workers: int = 64,
    previous: pl.DataFrame | None = None,
    progress: Progress | None = None,
) -> tuple[pl.DataFrame, FetchStats]:
    """Fetch every distinct URL once (order of first appearance), reusing earlier successes.

    A URL whose image is still in the store is not fetched again when `previous` has it as ok
    or when a run (even one killed half-way) recorded it in the URL index; failures are
    retried. Threads, not processes: the work waits on the network. Opening the store sweeps
    the temporaries a killed run left in it.
    """
    image_store.remove_stale_temporaries(store_root)
    distinct = list(dict.fromkeys(urls))
    wanted = set(distinct)
    candidates = [row for row in _reuse_candidates(previous) if row["url"] in wanted]
    rows: dict[str | None, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fetch") as pool:
        checked = pool.map(lambda row: _still_stored(row, store_root), candidates)
        reused = {row["url"]: row for row in checked if row is not None}
        recorded = recorded_rows(store_root, (u for u in distinct if u not in reused))
        checked = pool.map(lambda row: _still_stored(row, store_root), recorded.values())
        reused.update((row["url"], row) for row in checked if row is not None)
        todo = [url for url in distinct if url not in reused]
        rows.update(_fetch_scheduled(todo, store_root, policy, pool, max(1, workers), progress))
    rows.update(reused)
    ordered = [rows[url] for url in distinct]
    frame = (
        pl.DataFrame(ordered, schema=IMAGE_FETCH_SCHEMA)
        if ordered
        else empty_frame(IMAGE_FETCH_SCHEMA)
    )
    return frame, fetch_stats(frame, attempted=len(todo), reused=len(reused))


def fetch_stats(frame: pl.DataFrame, attempted: int, reused: int) -> FetchStats:
    """The counts of a fetch table (one row per distinct URL): what was attempted, reused,
    stored, failed, and the failure reason codes."""
    statuses = Counter(frame.get_column("status").to_list())
    codes = Counter(code for code in map(reason_code, frame.get_column("reason").to_list()) if code)
    return FetchStats(
        attempted=attempted,
        reused=reused,
        ok=statuses[IMAGE_STATUS_OK],
        failed=statuses[IMAGE_STATUS_DOWNLOAD_FAILED],
        bad_image=statuses[IMAGE_STATUS_BAD_IMAGE],
        reasons=dict(sorted(codes.items())),
    )
