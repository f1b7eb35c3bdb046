"""Typed resources and the IO manager factory, beside the assets that use them.

`PipelineSettings` is also where `CATALOGUE_URI=demo` turns into the generated demo catalogue.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import fsspec
import polars as pl
from dagster_polars import PolarsParquetIOManager
from upath import UPath

from curation.download import DEFAULT_POLICY
from curation.images.sniff import DEFAULT_ALLOWED_FORMATS
from curation.shards import DEFAULT_IMAGE_SHARDS
from demo import build_demo_catalogue
from schemas.atomic import atomic_path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CATALOGUE = "demo"  # CATALOGUE_URI value (and default): the embedded demo catalogue


def default_data_dir() -> str:
    return os.environ.get("PIPELINE_DATA_DIR") or str(PROJECT_ROOT / "data")


# What an unset variable means; the Makefile exports the same values.
ENV_DEFAULTS = {
    "CATALOGUE_URI": DEMO_CATALOGUE,
    "MODEL_PRESET": "tiny",
    "WANDB_MODE": "offline",
    "PIPELINE_DOWNLOAD_WORKERS": "64",
    "PIPELINE_EXTRA_URL_SCHEMES": "",
    "PIPELINE_ALLOW_PRIVATE_HOSTS": "0",
    "PIPELINE_IMAGE_FORMATS": ",".join(sorted(DEFAULT_ALLOWED_FORMATS)),
    "PIPELINE_IMAGE_SHARDS": str(DEFAULT_IMAGE_SHARDS),
}


class PipelineSettings(dg.ConfigurableResource):
    """Where data lives and what it is made from; every field maps to a documented env var."""

    data_dir: str  # PIPELINE_DATA_DIR: any fsspec URL
    catalogue_uri: str = DEMO_CATALOGUE  # CATALOGUE_URI: CSV/Parquet/JSONL URL, hf:<name>, demo
    model_preset: str = "tiny"  # MODEL_PRESET
    wandb_mode: str = "offline"  # WANDB_MODE: online only when the user asks for it
    # PIPELINE_IMAGE_SHARDS: how many groups the per-image steps split their images into, each
    # a step of its own that the executor may run on another worker (curation.shards).
    image_shards: int = DEFAULT_IMAGE_SHARDS

    def path(self, *parts: str) -> str:
        """A path under the data dir, as a string any fsspec filesystem understands."""
        return "/".join([self.data_dir.rstrip("/"), *parts])

    @property
    def is_demo(self) -> bool:
        return self.catalogue_uri.strip().lower() == DEMO_CATALOGUE

    def resolved_catalogue_uri(self) -> str:
        """The catalogue to load. `demo` becomes the generated demo CSV: next to the data when
        the data dir is local, else in a local cache (its images are read as file:// URLs).

        The one place production code reaches the `demo` package."""
        if not self.is_demo:
            return self.catalogue_uri
        fs, path = fsspec.core.url_to_fs(self.data_dir)
        protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        local = "file" in protocols or "local" in protocols
        root = Path(path) / "demo_catalogue" if local else Path.home() / ".cache/catalogue-vlm/demo"
        return str(build_demo_catalogue(root).catalogue_path)


class DownloadSettings(dg.ConfigurableResource):
    """Knobs of the image downloader; the defaults, and why they are what they are, live in
    curation.download.DownloadPolicy."""

    # Downloads wait on the network, not the CPU: many more threads than cores pays off
    # (bench/RESULTS.md, download: 64 threads beat 16 by ~1.6x on 2 cores).
    workers: int = 64
    connect_timeout_s: float = DEFAULT_POLICY.connect_timeout_s
    read_timeout_s: float = DEFAULT_POLICY.read_timeout_s
    deadline_s: float = DEFAULT_POLICY.deadline_s
    max_attempts: int = DEFAULT_POLICY.max_attempts
    max_bytes: int = DEFAULT_POLICY.max_bytes
    max_pixels: int = DEFAULT_POLICY.max_pixels
    # Successes per durable URL-index write: what a kill -9 can make a rerun fetch again.
    index_batch_size: int = DEFAULT_POLICY.index_batch_size
    # PIPELINE_ALLOW_PRIVATE_HOSTS=1 lets URLs reach loopback/private hosts (intranet, tests);
    # text, so that it too is read through dg.EnvVar when a run starts.
    allow_private_hosts: str = "0"
    # Extra schemes beyond http/https; local files are allowed for a local or demo catalogue.
    extra_schemes: str = ""
    # PIPELINE_IMAGE_FORMATS: image formats accepted, comma-separated (curation.images.sniff);
    # TIFF and BMP are off by default, a row serving one becomes `format: TIFF not allowed`.
    # Empty means the default list.
    allowed_formats: str = ENV_DEFAULTS["PIPELINE_IMAGE_FORMATS"]

    @property
    def private_hosts_allowed(self) -> bool:
        return self.allow_private_hosts.strip().lower() in {"1", "true", "yes"}


def fill_env_defaults() -> None:
    """Unset settings get their documented default in the environment, so the resources can
    read every one through `dg.EnvVar` (resolved when a run starts, shown by name in the UI)."""
    os.environ.setdefault("PIPELINE_DATA_DIR", default_data_dir())
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


def pipeline_settings_from_env() -> PipelineSettings:
    fill_env_defaults()
    return PipelineSettings(
        data_dir=dg.EnvVar("PIPELINE_DATA_DIR"),
        catalogue_uri=dg.EnvVar("CATALOGUE_URI"),
        model_preset=dg.EnvVar("MODEL_PRESET"),
        wandb_mode=dg.EnvVar("WANDB_MODE"),
        image_shards=dg.EnvVar.int("PIPELINE_IMAGE_SHARDS"),
    )


def download_settings_from_env() -> DownloadSettings:
    fill_env_defaults()
    return DownloadSettings(
        workers=dg.EnvVar.int("PIPELINE_DOWNLOAD_WORKERS"),
        allow_private_hosts=dg.EnvVar("PIPELINE_ALLOW_PRIVATE_HOSTS"),
        extra_schemes=dg.EnvVar("PIPELINE_EXTRA_URL_SCHEMES"),
        allowed_formats=dg.EnvVar("PIPELINE_IMAGE_FORMATS"),
    )


class AtomicPolarsParquetIOManager(PolarsParquetIOManager):
    """dagster-polars writes straight into `{asset}.parquet`: a crash mid-write leaves a torn
    file there, and a second run (or a reader such as `previous_table`) can see half of one.
    Here every write goes to a hidden temporary sibling and is renamed over the target, so the
    final path holds the old complete file or the new complete file, nothing in between."""

    def write_df_to_path(self, context: Any, df: pl.DataFrame, path: UPath) -> None:
        with _atomic_target(path) as tmp:
            super().write_df_to_path(context, df, tmp)

    def sink_df_to_path(self, context: Any, df: pl.LazyFrame, path: UPath) -> None:
        with _atomic_target(path) as tmp:
            super().sink_df_to_path(context, df, tmp)


@contextlib.contextmanager
def _atomic_target(path: UPath) -> Iterator[UPath]:
    # The temporary is hidden and has no .parquet suffix: no glob or scan takes it for a table.
    # `path.fs` keeps the filesystem's own options (an s3 endpoint, credentials).
    with atomic_path(path.path, fs=path.fs) as tmp:
        yield path.with_name(tmp.rsplit("/", 1)[-1])


def parquet_io_manager(data_dir: str) -> PolarsParquetIOManager:
    """Table assets land at {data_dir}/{asset_key}.parquet (the path other tools read)."""
    return AtomicPolarsParquetIOManager(base_dir=data_dir)
