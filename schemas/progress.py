"""Progress at a rate a person can read: a line about every 10 % of the work or every 10 s.

Long steps (downloads, hashing, quality, variants, training, evaluation) take a `Progress`
callback, called with (done, total) as work completes; the assets hand in one that writes to
the Dagster run log, which also reaches the terminal of `make demo`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Progress = Callable[[int, int], None]
# Below this many items the work ends before a tenth of it is worth a line: only the last one.
MIN_ITEMS_FOR_STEPS = 100


class ProgressGate:
    """Lets a report through when another ~10 % of `total` is done or `every_s` has passed,
    and always for the last item; counts may jump (a batch finishing at once)."""

    def __init__(self, total: int, every_fraction: float = 0.1, every_s: float = 10.0):
        self.every = max(1, int(total * every_fraction))
        self.every_s = every_s
        self.next_at = self.every
        self.last_t = time.monotonic()

    def due(self, done: int, last: bool = False) -> bool:
        now = time.monotonic()
        if last or done >= self.next_at or now - self.last_t >= self.every_s:
            self.next_at = (done // self.every + 1) * self.every
            self.last_t = now
            return True
        return False


def progress_lines(label: str, emit: Callable[[str], None], unit: str = "images") -> Progress:
    """A `Progress` that emits "label: done/total (pct), rate" lines through `emit`."""
    start = time.monotonic()
    gate: ProgressGate | None = None

    def report(done: int, total: int) -> None:
        nonlocal gate
        if total <= 0:
            return
        gate = gate or ProgressGate(total, 0.1 if total >= MIN_ITEMS_FOR_STEPS else 1.0)
        if gate.due(done, last=done >= total):
            rate = done / max(time.monotonic() - start, 1e-6)
            emit(f"{label}: {done}/{total} {unit} ({100 * done // total} %), {rate:.1f}/s")

    return report
