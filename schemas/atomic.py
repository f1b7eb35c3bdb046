"""Atomic writes: a reader sees the old file or all of the new one, never half of it.

The one writer behind every file the project writes (tables, images, the URL index, reports,
dataset folders, eval.json, lineage.json, checkpoints). It lives in `schemas` because that is
the one package both `curation` and `training` may import; it needs only the standard library
and fsspec (which transformers brings to any GPU box).

A write goes to a hidden sibling named `.tmp-<random>.part`, then is renamed over the target
(local disks: `os.replace`, atomic on POSIX) or moved there (object stores: `fs.mv` is a
server-side copy, so the final key never holds a partial upload). The name is one no stored
object or table uses, so nothing listing a folder mistakes a temporary (even one a kill -9
orphaned) for real data, and a sweep can find it (`is_temporary`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".part"


def is_temporary(name: str) -> bool:
    """Whether a file name is an in-flight (or crash-orphaned) write, never a stored object."""
    base = name.rsplit("/", 1)[-1]
    return base.startswith(TMP_PREFIX) and base.endswith(TMP_SUFFIX)


class _TemporaryNames:
    """Unique temporary names without a random draw (a getrandom call) per write: one random
    token per process, re-drawn in a forked child, and a counter."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._token = uuid.uuid4().hex
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{TMP_PREFIX}{self._token}-{next(self._counter):x}{TMP_SUFFIX}"


_NAMES = _TemporaryNames()


def _temporary_sibling(path: str) -> str:
    parent, _, _ = path.rpartition("/")
    name = _NAMES.next()
    return f"{parent}/{name}" if parent else name


@contextlib.contextmanager
def _replacing(fs: fsspec.AbstractFileSystem, target: str) -> Iterator[str]:
    tmp = _temporary_sibling(target)
    fs.makedirs(tmp.rpartition("/")[0] or ".", exist_ok=True)
    try:
        yield tmp
        if isinstance(fs, LocalFileSystem):
            os.replace(tmp, target)
        else:
            fs.mv(tmp, target)
    except BaseException:
        # Only a failed write leaves the temporary: after the move it is gone, and asking an
        # object store whether it still exists costs a HEAD and a LIST per written object.
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], fs: fsspec.AbstractFileSystem | None = None
) -> Iterator[str]:
    """A temporary sibling of `path` for any writer to fill; it replaces `path` when the block
    ends cleanly and is removed when it raises.

    `path` is a local path or an fsspec URL, and the temporary comes back in the same form. Pass
    `fs` (with a path without protocol) to keep a filesystem's own options, such as an s3
    endpoint; the temporary is then a path on `fs`.
    """
    if fs is not None:
        with _replacing(fs, os.fspath(path)) as tmp:
            yield tmp
        return
    fs, target = fsspec.core.url_to_fs(os.fspath(path))
    local = isinstance(fs, LocalFileSystem)
    with _replacing(fs, target) as tmp:
        yield tmp if local else fs.unstrip_protocol(tmp)


def write_bytes_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    durable: bool = True,
    fs: fsspec.AbstractFileSystem | None = None,
) -> None:
    """Write `data` to `path` (a local path or any fsspec URL) atomically. Replacing a file with
    identical bytes is harmless, so concurrent writers of one content-addressed object need no
    lock.

    `durable` flushes a local file to disk before the rename, so a power cut cannot leave an
    empty file under the final name; caches that are rebuilt on demand may skip the fsync.
    Pass `fs` (with a path without protocol) when the caller has already resolved it.
    """
    if fs is None:
        fs, target = fsspec.core.url_to_fs(os.fspath(path))
    else:
        target = os.fspath(path)
    if isinstance(fs, LocalFileSystem):
        _write_local(target, data, durable)
        return
    with _replacing(fs, target) as tmp, fs.open(tmp, "wb") as handle:
        handle.write(data)


_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _write_local(target: str, data: bytes, durable: bool) -> None:
    """The local case in five system calls (open, write, close, rename; fsync if durable): the
    downloader stores every image through here, and each call releases and retakes the GIL
    its 64 threads share. The folder is made only when the open finds it missing."""
    tmp = _temporary_sibling(target)
    try:
        descriptor = os.open(tmp, _NEW_FILE_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(tmp) or ".", exist_ok=True)
        descriptor = os.open(tmp, _NEW_FILE_FLAGS, 0o666)
    try:
        try:
            with memoryview(data) as view:
                written = 0
                while written < len(view):
                    written += os.write(descriptor, view[written:])
            if durable:
                os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sync_filesystem_of(path: str | os.PathLike[str]) -> None:
    """Make every write made so far on the local filesystem holding `path` durable: one
    `syncfs` (Linux; `sync` elsewhere) in place of an fsync per file, for writers that store
    many files and then record them. Object stores need nothing: an object is durable once its
    PUT returns."""
    fs, target = fsspec.core.url_to_fs(os.fspath(path))
    if not isinstance(fs, LocalFileSystem):
        return
    folder = target
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            return
        folder = parent
    syncfs = _syncfs()
    if syncfs is None:
        os.sync()
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        if syncfs(descriptor) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"syncfs failed: {os.strerror(error)}", folder)
    finally:
        os.close(descriptor)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    # Python's os has no syncfs; glibc and musl export it. `sync` would flush every
    # filesystem on the machine, other tenants' writes included.
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def replace_directory(tmp: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Swap a finished local folder in for `target` whole: readers see the old folder or the new
    one (and, for one rename's time, none) but never a mix. POSIX cannot rename a folder over a
    non-empty one, so the old copy is moved aside first and deleted after."""
    tmp, target = Path(tmp), Path(target)
    old = target.with_name(f"{TMP_PREFIX}{target.name}-old-{uuid.uuid4().hex}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
