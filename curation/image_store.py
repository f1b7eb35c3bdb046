"""Content-addressed image storage on any fsspec filesystem (local dir, s3, gcs, memory, ...).

Images live at `{root}/images/ab/abcdef….{ext}` where `abcdef…` is the sha256 of the bytes:
identical bytes from different URLs are stored once, a stored file never changes, and an
existing target means the work is already done. Writes are atomic (temporary name in the
same directory, then a rename) so a crash never leaves a half-written image under its final
name for a later run to trust.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Two hex characters of fan-out: 256 directories keep listings short on every filesystem.
_FANOUT_CHARS = 2
IMAGES_DIR = "images"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_path_for(root: str, sha256: str, ext: str) -> str:
    """Where the image with this digest lives; keeps the root's own style (URL or local path)."""
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        # The digest becomes a path component: refuse anything that could escape the root.
        raise ValueError(f"not a lowercase sha256 hex digest: {sha256!r}")
    if not ext.isalnum():
        raise ValueError(f"bad extension: {ext!r}")
    base = str(root).rstrip("/") or "/"
    return f"{base}/{IMAGES_DIR}/{sha256[:_FANOUT_CHARS]}/{sha256}.{ext}"


def exists(path: str) -> bool:
    fs, fs_path = fsspec.core.url_to_fs(path)
    return bool(fs.exists(fs_path))


def store_image_bytes(root: str, data: bytes, ext: str) -> str:
    """Store `data` content-addressed under `root`; returns its path. Idempotent and atomic."""
    path = image_path_for(root, sha256_hex(data), ext)
    fs, fs_path = fsspec.core.url_to_fs(path)
    if fs.exists(fs_path):
        return path
    if isinstance(fs, LocalFileSystem):
        _write_local_atomic(fs_path, data)
    else:
        _write_fsspec_atomic(fs, fs_path, data)
    return path


def _write_local_atomic(path: str, data: bytes) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # Another worker may have stored the same bytes meanwhile: replacing it with identical
        # content is harmless, which is why no lock is needed.
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_fsspec_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    # Object stores have no rename, but fs.mv is a server-side copy+delete there: readers still
    # never see a partially uploaded object under the final key.
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    try:
        with fs.open(tmp, "wb") as handle:
            handle.write(data)
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
