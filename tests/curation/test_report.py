"""The data-quality report: counts that add up, plots and thumbnails embedded, untrusted text
escaped, empty catalogues survived, and the page written atomically."""

from __future__ import annotations

import base64
import io
import os
import re
import uuid
from pathlib import Path

import fsspec
import polars as pl
import pytest
from PIL import Image

from curation.report import build_data_quality_report, write_report_html
from schemas.tables import (
    CURATION_LEDGER_SCHEMA,
    DUPLICATE_CLUSTERS_SCHEMA,
    LEDGER_OUTCOMES,
    PRODUCT_IMAGES_SCHEMA,
    REJECTED_ROWS_SCHEMA,
    VALIDATED_PRODUCTS_SCHEMA,
    empty_frame,
)

SCRIPT_TITLE = "<script>alert('x')</script> Trench coat"
LINK_TITLE = "[click](javascript:alert(1)) scarf"
BLUE = (20, 40, 220)

# row_index: (outcome, reason, duplicate_of index, title, category3, full price)
ROWS: dict[int, tuple[str, str | None, int | None, str, str, float]] = {
    0: ("curated", None, None, "Check shirt", "Shirts", 450.0),
    1: ("curated", None, None, SCRIPT_TITLE, "Coats", 1990.0),
    2: ("duplicate", "duplicate: exact", 1, "Trench coat", "Coats", 1990.0),
    3: ("duplicate", "duplicate: near", 1, LINK_TITLE, "Scarves", 390.0),
    4: ("invalid", "full_price: not a number", None, "Broken row", "Bags", 0.0),
    5: ("download_failed", "http_status: 404", None, "Lost bag", "Bags", 2100.0),
    6: ("download_failed", "timeout: read timed out", None, "Slow bag", "Bags", 1800.0),
    7: ("bad_image", "not_image: html", None, "Html bag", "Bags", 1500.0),
    8: ("curated", None, None, "Belt", "Belts", 350.0),
    9: ("duplicate", "duplicate: exact", 8, "Cap", "Hats", 290.0),
}


def _rid(i: int) -> str:
    return f"r{i:02d}"


def _write_image(path: Path, colour: tuple[int, int, int], fmt: str, size=(64, 80)) -> str:
    Image.new("RGB", size, colour).save(path, format=fmt)
    return str(path)


def _ledger() -> pl.DataFrame:
    rows = [
        (i, _rid(i), o, r, None if d is None else _rid(d), None)
        for i, (o, r, d, *_) in ROWS.items()
    ]
    return pl.DataFrame(rows, schema=CURATION_LEDGER_SCHEMA, orient="row")


def _validated() -> pl.DataFrame:
    rows = [
        {
            "row_index": i,
            "row_id": _rid(i),
            "title": title,
            "category2_code": cat[:3].upper(),
            "category3_code": cat,
            "full_price": price,
            "price": price * (0.8 if i % 2 else 1.0),
            "flg_discount": bool(i % 2),
            "currency_code": "USD",
        }
        for i, (outcome, _, _, title, cat, price) in ROWS.items()
        if outcome != "invalid"
    ]
    return pl.DataFrame(rows, schema=VALIDATED_PRODUCTS_SCHEMA)


def _images(paths: dict[int, str]) -> pl.DataFrame:
    failed = ("download_failed", "bad_image")
    rows = [
        {
            "row_id": _rid(i),
            "url": f"https://img.example/{i}",
            "path": paths.get(i),
            "status": outcome if outcome in failed else "ok",
            "reason": reason if outcome in failed else None,
            "sha256": None if outcome in failed else f"sha-{paths[i]}",
            "format": None if outcome in failed else Path(paths[i]).suffix[1:],
            "width": 300,
            "height": 400,
            "bytes": 1000 * (i + 1),
        }
        for i, (outcome, reason, *_) in ROWS.items()
        if outcome != "invalid"
    ]
    return pl.DataFrame(rows, schema=PRODUCT_IMAGES_SCHEMA)


def _clusters() -> pl.DataFrame:
    rows = [
        # row, canonical row, size, hamming, kind, placeholder, label conflict
        _cluster_row(0, 0, 1, 0, "canonical", False, False),
        _cluster_row(1, 1, 3, 0, "canonical", False, True),
        _cluster_row(2, 1, 3, 0, "exact", False, True),
        _cluster_row(3, 1, 3, 4, "near", False, True),
        _cluster_row(8, 8, 2, 0, "canonical", True, True),
        _cluster_row(9, 8, 2, 0, "exact", True, True),
    ]
    return pl.DataFrame(rows, schema=DUPLICATE_CLUSTERS_SCHEMA)


@pytest.fixture
def frames(tmp_path: Path) -> dict[str, pl.DataFrame]:
    red = _write_image(tmp_path / "red.png", (220, 30, 30), "PNG")
    blue = _write_image(tmp_path / "blue.jpg", BLUE, "JPEG", size=(300, 400))
    near = _write_image(tmp_path / "near.jpg", (30, 50, 210), "JPEG", size=(300, 400))
    grey = _write_image(tmp_path / "grey.png", (128, 128, 128), "PNG")
    html_file = tmp_path / "page.bin"
    html_file.write_bytes(b"<html><body>not found</body></html>")
    paths = {0: red, 1: blue, 2: blue, 3: near, 7: str(html_file), 8: grey, 9: grey}
    rejected = pl.DataFrame(
        [(4, _rid(4), "full_price", "not a number"), (4, _rid(4), "title", "too short")],
        schema=REJECTED_ROWS_SCHEMA,
        orient="row",
    )
    return {
        "ledger": _ledger(),
        "validated": _validated(),
        "rejected": rejected,
        "images": _images(paths),
        "clusters": _clusters(),
    }


def _cluster_row(i: int, canon: int, size: int, dist: int, kind: str, ph: bool, lc: bool) -> dict:
    return {
        "row_id": _rid(i), "row_index": i, "sha256": f"sha{canon}", "cluster_id": _rid(canon),
        "cluster_size": size, "canonical_row_id": _rid(canon), "is_canonical": i == canon,
        "hamming_to_canonical": dist, "match_kind": kind, "is_placeholder": ph,
        "label_conflict": lc,
    }  # fmt: skip


def _section(html: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', html, re.S)
    assert match, f"no section {anchor}"
    return match.group(1)


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_markdown_outcome_counts_add_up_to_the_ledger(frames):
    report = build_data_quality_report(**frames)
    counts = {}
    for outcome in LEDGER_OUTCOMES:
        row = re.search(rf"^\| {outcome} \| (\d+) \| ([\d.]+)% \|$", report.markdown, re.M)
        assert row, outcome
        counts[outcome] = int(row.group(1))
    assert counts == {"curated": 3, "invalid": 1, "download_failed": 2, "bad_image": 1,
                      "duplicate": 3}  # fmt: skip
    assert sum(counts.values()) == frames["ledger"].height == report.summary["total_rows"]
    assert report.summary["n_duplicate"] == 3
    assert "| download_failed | http_status | 1 | http_status: 404 |" in report.markdown
    assert "| full_price | 1 | not a number |" in report.markdown


def test_summary_counts_clusters_placeholders_and_conflicts(frames):
    summary = build_data_quality_report(**frames).summary
    assert summary["n_clusters"] == 2
    assert summary["largest_cluster_size"] == 3
    assert summary["n_placeholder_rows"] == 2
    assert summary["n_label_conflicts"] == 2
    assert summary["n_rejected_rows"] == 1  # two failures, one row
    assert summary["discount_share"] == pytest.approx(5 / 9, abs=1e-4)


def test_html_embeds_plots_and_thumbnails_of_the_largest_cluster(frames):
    html = build_data_quality_report(**frames).html
    plots = re.findall(r'<img class="plot" src="(data:image/png;base64,[^"]+)"', html)
    assert len(plots) == 4  # outcomes, class balance, prices, image sizes
    assert all(_decode(uri).format == "PNG" for uri in plots)
    duplicates = _section(html, "duplicates")
    thumbs = re.findall(r'src="(data:image/jpeg;base64,[^"]+)"', duplicates)
    assert len(thumbs) == 3  # canonical, exact copy and near copy of the 3-row cluster
    first = _decode(thumbs[0]).convert("RGB")
    assert max(first.size) == 96
    r, g, b = first.getpixel((first.width // 2, first.height // 2))
    assert b > 180 and r < 60  # the canonical's own (blue) picture
    assert "near d=4" in duplicates
    # Offline page: every resource is inline, links only jump within the page.
    assert not re.search(r'(?:src|href)="(?!data:|#)', html)
    assert "<link" not in html and "url(" not in html


def test_catalogue_strings_are_escaped(frames):
    report = build_data_quality_report(**frames)
    assert "<script>" not in report.html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in report.html
    assert "<script>" not in report.markdown
    assert "](javascript" not in report.markdown
    assert "Content-Security-Policy" in report.html


def test_undecodable_bad_image_shows_a_box_with_the_reason(frames):
    images = _section(build_data_quality_report(**frames).html, "images")
    assert '<div class="nothumb">not_image: html</div>' in images


def test_relative_image_paths_resolve_against_thumbnails_root(frames, tmp_path):
    images = frames["images"].with_columns(
        pl.col("path").str.replace(str(tmp_path) + os.sep, "", literal=True)
    )
    report = build_data_quality_report(**{**frames, "images": images})
    assert "stored file missing" in _section(report.html, "duplicates")
    frames["images"] = images
    rooted = build_data_quality_report(**frames, thumbnails_root=str(tmp_path))
    assert "data:image/jpeg;base64" in _section(rooted.html, "duplicates")


@pytest.mark.parametrize("bare", [False, True])
def test_empty_catalogue(bare):
    schemas = [CURATION_LEDGER_SCHEMA, VALIDATED_PRODUCTS_SCHEMA, REJECTED_ROWS_SCHEMA,
               PRODUCT_IMAGES_SCHEMA, DUPLICATE_CLUSTERS_SCHEMA]  # fmt: skip
    inputs = [pl.DataFrame() if bare else empty_frame(s) for s in schemas]
    report = build_data_quality_report(*inputs)
    assert "0 catalogue rows" in report.markdown
    assert report.summary["total_rows"] == 0 and report.summary["n_clusters"] == 0
    assert "data:image/png" not in report.html
    assert report.html.rstrip().endswith("</html>")


def test_everything_failed(frames):
    ledger = frames["ledger"].with_columns(outcome=pl.lit("download_failed"))
    images = frames["images"].with_columns(status=pl.lit("download_failed"), path=None)
    report = build_data_quality_report(
        ledger,
        frames["validated"],
        frames["rejected"],
        images,
        empty_frame(DUPLICATE_CLUSTERS_SCHEMA),
    )
    assert "| download_failed | 10 | 100.0% |" in report.markdown
    assert report.summary["n_curated"] == 0 and report.summary["n_images_ok"] == 0


def test_write_report_html_replaces_atomically(tmp_path, monkeypatch):
    target = tmp_path / "reports" / "data_quality.html"
    write_report_html("<p>old</p>", str(target))
    write_report_html("<p>new ✓</p>", str(target))
    assert target.read_text(encoding="utf-8") == "<p>new ✓</p>"

    def crash(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_report_html("<p>half</p>", str(target))
    assert target.read_text(encoding="utf-8") == "<p>new ✓</p>"
    assert os.listdir(target.parent) == ["data_quality.html"]  # no tmp file left behind


def test_write_report_html_to_memory_filesystem():
    path = f"memory://dq-{uuid.uuid4().hex}/reports/data_quality.html"
    write_report_html("<h1>ok</h1>", path)
    with fsspec.open(path, "rt", encoding="utf-8") as handle:
        assert handle.read() == "<h1>ok</h1>"


def test_quality_section_counts_flags_and_shows_flagged_rows(frames):
    ledger = frames["ledger"].with_columns(
        quality_flags=pl.when(pl.col("row_index") == 0)
        .then(pl.lit(["grayscale"]))
        .when(pl.col("row_index") == 8)
        .then(pl.lit(["too_small", "blurry"]))
        .otherwise(pl.lit(None, dtype=pl.List(pl.String))),
        outcome=pl.when(pl.col("row_index") == 8)
        .then(pl.lit("bad_image"))
        .otherwise(pl.col("outcome")),
        reason=pl.when(pl.col("row_index") == 8)
        .then(pl.lit("quality: too_small (16x12 < 64 px)"))
        .otherwise(pl.col("reason")),
    )
    report = build_data_quality_report(**{**frames, "ledger": ledger})
    quality = _section(report.html, "quality")
    assert re.search(r"<td>too_small</td><td class=\"num\">1</td><td class=\"num\">1</td>"
                     r"<td class=\"num\">0</td>", quality)  # fmt: skip
    assert re.search(r"<td>grayscale</td><td class=\"num\">1</td><td class=\"num\">0</td>"
                     r"<td class=\"num\">1</td>", quality)  # fmt: skip
    assert len(re.findall(r'src="data:image/jpeg;base64,', quality)) == 2
    assert "| too_small | 1 | 1 | 0 |" in report.markdown
