"""Progress lines come at a human rate: about every 10 % of the work, always at the end."""

from __future__ import annotations

from curation.images.batch import map_images
from schemas.progress import ProgressGate, progress_lines


def test_gate_lets_through_every_tenth_and_the_last_even_when_counts_jump() -> None:
    gate = ProgressGate(total=1000, every_s=3600)
    passed = [done for done in range(1, 1001) if gate.due(done, last=done == 1000)]
    assert passed == list(range(100, 1001, 100))
    jumpy = ProgressGate(total=100, every_s=3600)
    assert [d for d in (3, 40, 41, 45, 90, 100) if jumpy.due(d, last=d == 100)] == [40, 90, 100]


def test_gate_lets_a_line_through_after_the_time_limit() -> None:
    gate = ProgressGate(total=1000, every_s=0.0)
    assert gate.due(1) and gate.due(2)


def test_map_images_reports_about_ten_lines_for_a_long_batch() -> None:
    lines: list[str] = []
    results = map_images(
        lambda x: x * 2,
        list(range(1000)),
        workers=2,
        progress=progress_lines("hashing", lines.append),
    )
    assert results == [x * 2 for x in range(1000)]
    assert 2 <= len(lines) <= 12, lines
    assert lines[-1].startswith("hashing: 1000/1000 images (100 %)")


def test_a_short_batch_reports_once_at_the_end() -> None:
    lines: list[str] = []
    report = progress_lines("normalise", lines.append)
    for done in range(1, 40):
        report(done, 39)
    assert len(lines) == 1 and lines[0].startswith("normalise: 39/39 images (100 %)")
