"""Scale: a generated 200k-row catalogue through load, validation, dedupe and the ledger in a
fresh process, within 4 GiB peak RSS, every row accounted for. Numbers: docs/reliability.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
ROWS = int(os.environ.get("SCALE_ROWS", "200000"))
MAX_PEAK_RSS_MIB = 4096


def test_200k_rows_fit_in_4_gib_and_are_all_accounted_for() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.reliability._scale", str(ROWS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=280,
        check=True,
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    print(report)  # shown with -s: the numbers docs/reliability.md records
    assert report["rows"] == report["ledger_rows"] == report["ledger_unique_ids"] == ROWS
    assert sum(report["outcomes"].values()) == ROWS
    assert report["outcomes"]["invalid"] == report["planted_invalid"] > 0
    assert report["outcomes"]["duplicate"] > 0 and report["curated"] > 0.8 * ROWS
    assert report["peak_rss_mib"] < MAX_PEAK_RSS_MIB, report
