"""Subprocess entry points for crash and concurrency tests (run as `python -m`, never imported
by pytest as a test module). Each prints one JSON line when it finishes."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import polars as pl


def fetch(urls_file: str, root: str, out: str, workers: str, index_batch_size: str = "1") -> None:
    """fetch_images as product_images runs it, then the table written atomically. The index
    flushes by count only, so what a kill finds recorded depends on the batch size alone."""
    from curation.download import DownloadPolicy, fetch_images
    from schemas.atomic import write_bytes_atomic

    urls = json.loads(Path(urls_file).read_text())
    policy = DownloadPolicy(
        deadline_s=20.0,
        max_attempts=2,
        allowed_private_networks=("127.0.0.1/32",),
        index_batch_size=int(index_batch_size),
        index_flush_s=3600.0,
    )
    frame, stats = fetch_images(urls, root, policy, workers=int(workers))
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    write_bytes_atomic(out, buffer.getvalue())
    print(json.dumps(stats.as_dict()))


def write_catalogue(path: Path, urls: list[str]) -> Path:
    """A catalogue of one product per URL, in the shape `materialize` loads."""
    pl.DataFrame(
        {
            "category1_code": "WOMAN",
            "category2_code": "SCARVES",
            "category3_code": "SILK",
            "product_code": [str(i) for i in range(len(urls))],
            "title": [f"Scarf {i}" for i in range(len(urls))],
            "imageurl": urls,
            "full_price": "100",
            "price": "90",
            "full_price_eur": "95",
            "price_eur": "85",
        }
    ).write_csv(path)
    return path


def materialize(
    catalogue: str, data_dir: str, n_shards: str = "2", index_batch: str = "256"
) -> None:
    """raw_catalogue -> validated_products -> product_images through Dagster, in-process."""
    import dagster as dg

    from assets import images, ingest
    from assets.resources import DownloadSettings, PipelineSettings, parquet_io_manager
    from assets.values_io import VALUES_IO_MANAGER_KEY, PydanticJsonIOManager

    defs = dg.Definitions(
        assets=[*dg.load_assets_from_modules([ingest]), images.product_images],
        resources={
            "pipeline": PipelineSettings(
                data_dir=data_dir, catalogue_uri=catalogue, image_shards=int(n_shards)
            ),
            "downloads": DownloadSettings(
                workers=4,
                allow_private_hosts="1",
                deadline_s=20.0,
                index_batch_size=int(index_batch),
            ),
            "io_manager": parquet_io_manager(data_dir),
            VALUES_IO_MANAGER_KEY: PydanticJsonIOManager(base_dir=data_dir),
        },
    )
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    table = pl.read_parquet(f"{data_dir}/product_images.parquet")
    print(json.dumps({"success": result.success, "rows": table.height}))


if __name__ == "__main__":
    {"fetch": fetch, "materialize": materialize}[sys.argv[1]](*sys.argv[2:])
