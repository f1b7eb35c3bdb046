"""The benchmarks stay runnable: every --help works and two run end to end at toy sizes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from bench.common import Report, update_results
from demo import DemoCatalogue

MODULES = (
    "download",
    "hashing",
    "near_duplicates",
    "dedupe_rule",
    "dedupe_scale",
    "scale",
    "validation",
    "e2e",
)


@pytest.mark.parametrize("name", [*MODULES, "__main__"])
def test_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m bench" in capsys.readouterr().out


def test_results_sections_are_replaced_not_duplicated(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    update_results(results, "a", "## A\nfirst\n")
    update_results(results, "b", "## B\nkept\n")
    update_results(results, "a", "## A\nsecond\n")
    text = results.read_text()
    assert text.count("## A") == 1 and "second" in text and "first" not in text
    assert "## B\nkept" in text


def test_near_duplicates_toy_run(tmp_path: Path) -> None:
    from bench import near_duplicates

    results = tmp_path / "RESULTS.md"
    near_duplicates.main(["--sizes", "3000", "--distances", "4", "--sample", "8",
                          "--results", str(results)])  # fmt: skip
    text = results.read_text()
    assert "<!-- bench:near_duplicates:start -->" in text
    assert "| 3,000 | 4 |" in text
    report: Report = near_duplicates.run(
        near_duplicates.parse_args(["--sizes", "3000", "--distances", "4", "--sample", "8"])
    )
    assert all(row["recall of planted"] == 1.0 for row in report.rows)


def test_dedupe_rule_toy_run() -> None:
    from bench import dedupe_rule

    report = dedupe_rule.run(dedupe_rule.parse_args(["--sizes", "5000"]))
    today, ours = report.rows
    assert today["recall of copies"] == ours["recall of copies"] == 1.0
    assert ours["colourways merged"] == "0/5" and today["colourways merged"] == "5/5"


def test_dedupe_scale_toy_run() -> None:
    """The pipeline's dedupe on the full image_hashes shape (every view, colour signatures,
    64-digit sha256s, rows sharing an image) finds what was planted."""
    from bench import dedupe_scale

    args = dedupe_scale.parse_args(["--sizes", "5000", "--in-process", "--project", "50000"])
    row, guess = dedupe_scale.run(args).rows
    assert guess["measured or projected"] == "projected" and guess["seconds"] > row["seconds"]
    assert row["image rows"] == 5250
    assert row["copies clustered"] == "50/50" and row["colourways merged"] == "0/50"
    assert row["exact rows"] > 200  # 250 rows reuse an image; a few join a near copy's cluster
    assert row["peak RSS MiB"] >= row["RSS with inputs MiB"] > 0


def test_validation_toy_run(demo_catalogue: DemoCatalogue) -> None:
    from bench import validation

    args = validation.parse_args(["--rows", "4000", "--demo-dir", str(demo_catalogue.root)])
    report = validation.run(args)
    assert len({row["valid rows"] for row in report.rows}) == 1  # all paths agree
    assert not any("MISMATCH" in note for note in report.notes)
