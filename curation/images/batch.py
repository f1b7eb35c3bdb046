"""Per-image work over many stored files, spread over threads.

Pillow releases the GIL while it reads and decodes, and a thread costs nothing to start, where a
spawned process costs ~1 s of imports, more than decoding a few thousand small images.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from schemas.progress import Progress

T = TypeVar("T")
R = TypeVar("R")

# Below this many images a thread pool's set-up and hand-offs are not worth it (a 192 px image
# decodes in well under a millisecond), so small inputs run on the calling thread.
MIN_IMAGES_FOR_THREADS = 16

# Hashing and quality measures are mostly Python and small-array numpy work that holds the GIL:
# a second thread is no faster there, even on 1024 px photos (bench/RESULTS.md, hashing), and
# slows the other shard's process on the same cores. Their parallelism is the shards.
CPU_BOUND_WORKERS = 1

# Images per task handed to a thread: large enough that scheduling is noise next to decoding,
# small enough that the last tasks do not leave cores idle.
MAX_CHUNK_SIZE = 64


def map_images(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int | None = None,
    progress: Progress | None = None,
) -> list[R]:
    """[fn(item) for item in items], in order, on up to `workers` threads (default: cores);
    `progress` hears (done, total) as results come in, on the calling thread."""
    n_workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    report = progress or (lambda done, total: None)
    results: list[R] = []
    if n_workers == 1 or len(items) < MIN_IMAGES_FOR_THREADS:
        for item in items:
            results.append(fn(item))
            report(len(results), len(items))
        return results
    size = max(1, min(MAX_CHUNK_SIZE, -(-len(items) // (n_workers * 4))))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="images") as pool:
        for chunk in pool.map(lambda chunk: [fn(item) for item in chunk], chunks):
            results.extend(chunk)
            report(len(results), len(items))
    return results
