"""Files of a training or evaluation run at any fsspec URL (`s3://…`, `gs://…`, local paths).

torch, peft and transformers write real files, so a run works in a local folder and publishes
it to its URL at the end; a remote model folder is fetched into a local cache before it is
loaded. Local paths are used in place. `fsspec` is a dependency of `datasets`, which reading the
dataset needs anyway.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

# Resumable optimizer state stays on the machine that trains; the rest is the checkpoint.
LOCAL_ONLY = ("checkpoints",)


def is_remote(uri: str) -> bool:
    import fsspec

    fs, _ = fsspec.core.url_to_fs(uri)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return not ({"file", "local"} & set(protocols))


def join(root: str, *names: str) -> str:
    return "/".join([str(root).rstrip("/"), *names])


def local_dir(uri: str) -> Path:
    """Where a run for `uri` works: the folder itself, or a stable local stand-in for a URL
    (stable, so a retried run on the same machine resumes from its checkpoints)."""
    if not is_remote(uri):
        return Path(uri)
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    root = Path(os.environ.get("CATALOGUE_VLM_WORKDIR", Path(tempfile.gettempdir())))
    return root / "catalogue-vlm-runs" / key


def publish(local: Path, uri: str) -> None:
    """Upload a finished run folder to `uri` (no-op when `uri` is the local folder itself)."""
    if not is_remote(uri):
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        relative = path.relative_to(local)
        if relative.parts[0] not in LOCAL_ONLY:
            fs.put_file(str(path), f"{root.rstrip('/')}/{relative.as_posix()}")


def fetch(uri: str) -> Path:
    """A local copy of the model folder at `uri` (the folder itself when it is local)."""
    local = local_dir(uri)
    if not is_remote(uri):
        return local
    import fsspec

    fs, root = fsspec.core.url_to_fs(uri)
    root = root.rstrip("/")
    for name in fs.find(root):
        relative = name[len(root) + 1 :]
        if relative.split("/", 1)[0] not in LOCAL_ONLY:
            target = local / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(target))
    return local


def read_text(uri: str) -> str:
    import fsspec

    with fsspec.open(uri, "r", encoding="utf-8") as handle:
        return handle.read()
