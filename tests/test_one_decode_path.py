"""One decode path: only curation/images/ turns image bytes into pixels with Pillow.

Every other module goes through `curation.images` (sniff, open with caps, normalise), so the
report, hashes, quality flags, variants and the export cannot disagree about a picture again.
Benchmarks are exempt: they time naive baselines on purpose.
"""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKED = ("schemas", "curation", "training", "assets", "dagster_project", "demo")
ALLOWED = ROOT / "curation" / "images"
# Pillow's ways in from bytes or files: Image.open (however imported), the incremental parser.
DECODES = re.compile(r"\bImage\.open\(|\bImageFile\.Parser\(|from PIL\.Image import open\b")


def offenders() -> list[str]:
    found = []
    for folder in CHECKED:
        for path in (ROOT / folder).rglob("*.py"):
            if ALLOWED in path.parents:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if DECODES.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_only_curation_images_opens_image_bytes_with_pillow() -> None:
    assert offenders() == []


def test_the_check_sees_a_decode(tmp_path: pathlib.Path) -> None:
    assert DECODES.search("    with Image.open(io.BytesIO(data)) as im:")
    assert DECODES.search("img = PIL.Image.open(path)")
    assert not DECODES.search("img = open_image(data)")
