"""The one atomic writer: old content or all of the new, no temporary left behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from schemas.atomic import (
    atomic_path,
    is_temporary,
    replace_directory,
    sync_filesystem_of,
    write_bytes_atomic,
    write_text_atomic,
)


def test_write_replaces_and_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "eval.json"
    write_text_atomic(target, "old")
    write_bytes_atomic(str(target), "new ✓".encode())
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(target.parent) == ["eval.json"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "table.csv"
    write_text_atomic(target, "old")
    with pytest.raises(OSError, match="disk full"), atomic_path(target) as tmp:
        Path(tmp).write_text("half")
        assert is_temporary(tmp)
        raise OSError("disk full")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_fsspec_urls_come_back_as_urls() -> None:
    url = f"memory://atomic-{uuid.uuid4().hex}/reports/page.html"
    with atomic_path(url) as tmp:
        assert tmp.startswith("memory://") and is_temporary(tmp)
        with fsspec.open(tmp, "w") as handle:
            handle.write("<h1>ok</h1>")
    write_bytes_atomic(url.replace("page", "other"), b"x")
    fs, path = fsspec.core.url_to_fs(url)
    assert fs.cat(path) == b"<h1>ok</h1>"
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path.rsplit("/", 1)[0], detail=False)) == [
        "other.html",
        "page.html",
    ]


def test_replace_directory_swaps_a_folder_whole(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    for generation in ("old", "new"):
        tmp = tmp_path / f".{generation}"
        tmp.mkdir()
        (tmp / "weights.safetensors").write_text(generation)
        replace_directory(tmp, target)
    assert (target / "weights.safetensors").read_text() == "new"
    assert os.listdir(tmp_path) == ["adapter"]


def test_sync_reaches_the_filesystem_of_a_path_not_yet_made(tmp_path: Path) -> None:
    sync_filesystem_of(tmp_path / "store" / "not" / "made")  # syncs tmp_path's filesystem
    sync_filesystem_of("memory://store/images")  # an object store: nothing to sync


def test_a_failed_sync_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctypes
    import errno

    def failing_syncfs(descriptor: int) -> int:
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr("schemas.atomic._syncfs", lambda: failing_syncfs)
    with pytest.raises(OSError, match="syncfs failed"):
        sync_filesystem_of(tmp_path)


def test_a_local_write_into_a_missing_folder_makes_it(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "image.jpg"
    write_bytes_atomic(str(target), b"x" * 100_000, durable=False)
    assert target.read_bytes() == b"x" * 100_000 and os.listdir(target.parent) == ["image.jpg"]
