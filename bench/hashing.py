"""Hashing benchmark: our perceptual hashing vs a naive `imagehash.phash(Image.open(p))` loop.

Both hash the same files of the demo catalogue (each file once: ours is keyed by path here,
so content-addressed caching does not skip exact copies). Ours computes what dedupe compares
(phash and dhash of the whole picture, its content box and its centre, and a colour signature
of each) from a draft-mode (DCT-scaled) decode on worker threads; the naive loop computes one
phash, from a full decode, in one process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
import polars as pl
from PIL import Image

from bench.common import Report, base_parser, benchmark_main, ratio, timed
from curation.hamming import popcount64
from curation.images.hashing import compute_image_hashes, to_uint64
from demo import build_demo_catalogue
from schemas.atomic import atomic_path

IMAGEDEDUP_NOTE = (
    "imagededup PHash: not run. `pip install imagededup` pulls torch 2.14 + torchvision with "
    "CUDA wheels (~3 GB) over the project's pinned CPU torch 2.13, so it was not installed."
)


def naive_phash(paths: list[str]) -> list[int | None]:
    """What a script would write: open, phash, next; a broken file is skipped."""
    out: list[int | None] = []
    for path in paths:
        try:
            out.append(to_uint64(imagehash.phash(Image.open(path))))
        except Exception:  # the demo plants undecodable files; skip them as a script would
            out.append(None)
    return out


def ours(paths: list[str], workers: int) -> pl.DataFrame:
    frame = pl.DataFrame({"sha256": paths, "path": paths})
    return compute_image_hashes(frame, workers=workers)


def demo_root(demo_dir: Path | None) -> Path:
    return demo_dir or Path(tempfile.gettempdir(), "catalogue-vlm-bench-demo")


def demo_paths(root: Path, limit: int) -> list[str]:
    images = build_demo_catalogue(root).images_dir
    paths = sorted(str(p) for p in images.iterdir() if p.is_file())
    return paths[:limit] if limit else paths


def photo_sized(paths: list[str], root: Path, size: int, limit: int) -> list[str]:
    """Demo pictures re-encoded at product-photo size (the DBQ images are ~1-2k px a side).

    The demo draws 192 px images, which decode in well under a millisecond; real catalogue
    photos are where draft-mode decoding and parallel decoding earn their keep.
    """
    out_dir = root / f"photos-{size}px"
    out_dir.mkdir(parents=True, exist_ok=True)
    out: list[str] = []
    for path in paths:
        if len(out) >= limit:
            break
        target = out_dir / f"{Path(path).name}.jpg"
        if not target.exists():
            try:
                with Image.open(path) as img:
                    big = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
            except Exception:  # planted broken files: nothing to enlarge
                continue
            with atomic_path(target) as tmp:
                big.save(tmp, format="JPEG", quality=90)
        out.append(str(target))
    return out


def agreement(naive: list[int | None], hashed: pl.DataFrame, paths: list[str]) -> str:
    """How close our draft-mode phash is to the full-decode phash, over images both hashed."""
    by_path = dict(zip(hashed["sha256"].to_list(), hashed["phash"].to_list(), strict=True))
    pairs = [(a, by_path.get(p)) for a, p in zip(naive, paths, strict=True)]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return "no image hashed by both"
    a = np.array([x for x, _ in pairs], dtype=np.uint64)
    b = np.array([y for _, y in pairs], dtype=np.uint64)
    dist = popcount64(a ^ b)
    return (
        f"draft-mode phash vs full-decode phash over {len(pairs)} images: identical "
        f"{np.mean(dist == 0):.1%}, within 4 bits {np.mean(dist <= 4):.1%}, "
        f"median {np.median(dist):g} bits, max {int(dist.max())} bits"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("hashing", __doc__)
    parser.add_argument("--images", type=int, default=0, help="first N demo files (0 = all)")
    parser.add_argument("--workers", type=int, default=2, help="our worker threads")
    parser.add_argument("--demo-dir", type=Path, default=None, help="where the demo is cached")
    parser.add_argument(
        "--photo-size", type=int, default=1024, help="side of the enlarged set (0 = skip it)"
    )
    parser.add_argument("--photos", type=int, default=500, help="images in the enlarged set")
    return parser.parse_args(argv)


def compare(paths: list[str], label: str, workers: int) -> tuple[list[dict], str]:
    """Rows for naive vs ours (1 and `workers` threads) on one set of files."""
    for path in paths:  # warm the page cache, so neither side pays the first read
        Path(path).read_bytes()
    naive, naive_s = timed(lambda: naive_phash(paths))
    one, one_s = timed(lambda: ours(paths, 1))
    many, many_s = timed(lambda: ours(paths, workers))
    n = len(paths)
    methods = [
        ("naive imagehash.phash loop (phash only)", naive_s, sum(x is not None for x in naive)),
        ("ours, 1 thread (3 views + colour)", one_s, one["phash"].count()),
        (f"ours, {workers} threads (3 views + colour)", many_s, many["phash"].count()),
    ]
    rows = [
        {
            "images": label,
            "method": method,
            "seconds": seconds,
            "images/s": n / seconds,
            "hashed": f"{ok}/{n}",
            "speed-up": ratio(naive_s, seconds),
        }
        for method, seconds, ok in methods
    ]
    return rows, f"{label}: " + agreement(naive, many, paths)


def run(args: argparse.Namespace) -> Report:
    root = demo_root(args.demo_dir)
    paths = demo_paths(root, args.images)
    rows, agree = compare(paths, f"{len(paths)} demo files, 192 px", args.workers)
    notes = [
        "Demo files include planted undecodable ones: both sides skip them. Our time includes "
        "starting the thread pool; threads run in parallel because Pillow releases the GIL "
        "while decoding.",
        agree + ".",
    ]
    if args.photo_size:
        photos = photo_sized(paths, root, args.photo_size, args.photos)
        label = f"{len(photos)} demo pictures at {args.photo_size} px"
        more, agree = compare(photos, label, args.workers)
        rows += more
        notes.append(agree + ".")
    notes.append(IMAGEDEDUP_NOTE)
    return Report("hashing", "Hashing (2: perceptual hashes of the demo images)", rows, notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
