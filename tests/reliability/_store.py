"""Assertions about the content store shared by the crash and concurrency tests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from schemas.atomic import is_temporary

_FINAL_NAME = re.compile(r"^(?P<fan>[0-9a-f]{2})/(?P<sha>[0-9a-f]{64})\.(jpg|png|webp|gif)$")


def check_store(root: Path) -> tuple[set[str], list[Path]]:
    """(sha256s stored, temporaries): every file under images/ is either a final object whose
    bytes hash to its name (so intact) or a recognisable temporary; nothing else exists."""
    stored: set[str] = set()
    temporaries: list[Path] = []
    images = root / "images"
    for path in sorted(images.rglob("*")) if images.exists() else []:
        if not path.is_file():
            continue
        if is_temporary(path.name):
            temporaries.append(path)
            continue
        match = _FINAL_NAME.match(path.relative_to(images).as_posix())
        assert match, f"unexpected file in the store: {path}"
        assert match["fan"] == match["sha"][:2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == match["sha"], f"torn or wrong object: {path}"
        stored.add(digest)
    return stored, temporaries
