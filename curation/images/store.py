"""Content-addressed image storage on any fsspec filesystem (local dir, s3, gcs, memory, ...).

Images live at `{root}/images/ab/abcdef….{ext}` where `abcdef…` is the sha256 of the bytes:
identical bytes from different URLs are stored once, a stored file never changes, and an
existing target means the work is already done. Writes are atomic (temporary name in the
same directory, then a rename) so a crash never leaves a half-written image under its final
name for a later run to trust.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import time

import fsspec
from fsspec.implementations.local import LocalFileSystem

from schemas.atomic import TMP_PREFIX, is_temporary, write_bytes_atomic

# Two hex characters of fan-out: 256 directories keep listings short on every filesystem.
_FANOUT_CHARS = 2
IMAGES_DIR = "images"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# A write takes milliseconds; a temporary this old was orphaned by a killed process.
STALE_TMP_AGE_S = 600.0


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_path_for(root: str, sha256: str, ext: str) -> str:
    """Where the image with this digest lives; keeps the root's own style (URL or local path)."""
    if not _SHA256_HEX.fullmatch(sha256):
        # The digest becomes a path component: refuse anything that could escape the root.
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
    if not ext.isalnum():
        raise ValueError(f"bad extension: {ext!r}")
    base = str(root).rstrip("/") or "/"
    return f"{base}/{IMAGES_DIR}/{sha256[:_FANOUT_CHARS]}/{sha256}.{ext}"


def exists(path: str) -> bool:
    fs, fs_path = fsspec.core.url_to_fs(path)
    return bool(fs.exists(fs_path))


def _local_root(root: str) -> str | None:
    """The local path of a store root, or None for any other filesystem. Parsing the URL of
    every image cost more than its write, so it is resolved once per root, working folder and
    home (a relative or `~` root resolves against those)."""
    return _resolved_local_root(root, os.getcwd(), os.environ.get("HOME"))


@functools.lru_cache(maxsize=64)
def _resolved_local_root(root: str, cwd: str, home: str | None) -> str | None:
    # cwd and home are the cache key; fsspec reads them itself. Only local roots are kept: an
    # object store's filesystem follows its options.
    fs, path = fsspec.core.url_to_fs(root)
    return path if isinstance(fs, LocalFileSystem) else None


def store_image_bytes(
    root: str, data: bytes, ext: str, *, durable: bool = True, sha256: str | None = None
) -> str:
    """Store `data` content-addressed under `root`; returns its path. Idempotent and atomic.

    `durable=False` skips the per-file fsync for a caller that makes a whole batch durable
    with one `schemas.atomic.sync_filesystem_of` before recording it (the downloader does). A
    stored file of the wrong size (what a power cut can leave of an unsynced write) is
    written again rather than trusted. `sha256`: the digest of `data`, when the caller has
    already computed it.
    """
    digest = sha256 or sha256_hex(data)
    path = image_path_for(root, digest, ext)
    local_root = _local_root(str(root))
    if local_root is None:
        fs, fs_path = fsspec.core.url_to_fs(path)
    else:
        fs, fs_path = _LOCAL, image_path_for(local_root, digest, ext)
    try:
        if _stored_size(fs, fs_path) == len(data):
            return path
    except FileNotFoundError:
        pass
    write_bytes_atomic(fs_path, data, durable=durable, fs=fs)
    return path


_LOCAL = LocalFileSystem()


def _stored_size(fs: fsspec.AbstractFileSystem, fs_path: str) -> int:
    if isinstance(fs, LocalFileSystem):
        return os.stat(fs_path).st_size  # one system call; fsspec's info() makes two
    return int(fs.size(fs_path))


def remove_stale_temporaries(root: str, older_than_s: float = STALE_TMP_AGE_S) -> int:
    """Delete temporaries a crashed run left under `{root}/images` (local stores only: an
    object store never shows a half-written object). Young ones may belong to a live run."""
    fs, fs_path = fsspec.core.url_to_fs(f"{str(root).rstrip('/')}/{IMAGES_DIR}")
    if not isinstance(fs, LocalFileSystem) or not os.path.isdir(fs_path):
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for entry in glob.glob(
        os.path.join(glob.escape(fs_path), "**", f"{TMP_PREFIX}*"), recursive=True
    ):
        if is_temporary(entry) and _removed_if_older(entry, cutoff):
            removed += 1
    return removed


def _removed_if_older(path: str, cutoff: float) -> bool:
    # Concurrent shards share the store: between the listing and here, another writer may have
    # renamed its temporary into place, or another sweep may have removed it.
    try:
        if os.path.getmtime(path) > cutoff:
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
