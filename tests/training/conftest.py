"""A synthetic `training_dataset` for training tests and the CPU demo-bar run.

Each category is a (shape, colour) pair drawn on a noisy background, so the category is visible
in the image; the title's first word is the drawn pattern (also visible), the price depends on
the category plus an invisible material multiplier (so a model can beat the median price but
cannot be exact). The rows have the export's columns and the TRL `messages` shape.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from schemas.prompt import DEFAULT_QUESTION, format_answer

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")
COLOURS = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "black": (20, 20, 20),
    "orange": (230, 140, 20),
}
NOUNS = (
    "Trench Coat", "Scarf", "Tote Bag", "Sneaker", "Polo Shirt", "Belt", "Wallet", "Cap",
    "Dress", "Skirt", "Jacket", "Sweater", "Shirt", "Boot", "Loafer", "Backpack", "Hoodie",
    "Card Case", "Bucket Hat", "Gilet", "Parka", "Cardigan", "Trousers", "Shorts", "Swimsuit",
    "Umbrella", "Sunglasses", "Watch", "Bracelet", "Crossbody Bag",
)  # fmt: skip
PATTERNS = ("Plain", "Striped", "Check")
MATERIALS = {"Cotton": 1.0, "Wool": 1.3, "Leather": 1.8, "Silk": 1.5}


def plural(noun: str) -> str:
    if noun.endswith("ss"):
        return noun + "es"
    return noun if noun.endswith("s") else noun + "s"


def category_style(index: int) -> tuple[str, str]:
    """Category k -> (shape, colour): every one of the 30 combinations is distinct."""
    colour = list(COLOURS)[(index // len(SHAPES)) % len(COLOURS)]
    return SHAPES[index % len(SHAPES)], colour


def draw_product(shape: str, colour: str, pattern: str, rng: random.Random) -> Image.Image:
    size = 96
    bg = tuple(rng.randint(215, 250) for _ in range(3))
    image = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(image)
    half = rng.randint(24, 34)
    cx, cy = rng.randint(half + 4, size - half - 4), rng.randint(half + 4, size - half - 4)
    box = (cx - half, cy - half, cx + half, cy + half)
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[colour])
    _draw_shape(draw, shape, box, fill)
    _draw_pattern(draw, pattern, box)
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, ...], fill: Any) -> None:
    x0, y0, x1, y1 = box
    cx, cy, w = (x0 + x1) // 2, (y0 + y1) // 2, (x1 - x0) // 2
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif shape == "cross":
        t = w // 3
        draw.rectangle((cx - t, y0, cx + t, y1), fill=fill)
        draw.rectangle((x0, cy - t, x1, cy + t), fill=fill)
    else:  # bar: a wide, flat rectangle
        draw.rectangle((x0, cy - w // 3, x1, cy + w // 3), fill=fill)


def _draw_pattern(draw: ImageDraw.ImageDraw, pattern: str, box: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if pattern in ("Striped", "Check"):
        for x in range(x0, x1, 8):
            draw.line((x, y0, x, y1), fill=(255, 255, 255), width=2)
    if pattern == "Check":
        for y in range(y0, y1, 8):
            draw.line((x0, y, x1, y), fill=(255, 255, 255), width=2)


def make_rows(n: int, n_categories: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cat = rng.randrange(n_categories)
        shape, colour = category_style(cat)
        pattern, material = rng.choice(PATTERNS), rng.choice(list(MATERIALS))
        noun = NOUNS[cat % len(NOUNS)]
        title = f"{pattern} {material} {noun}"
        base = 150 + 90 * cat
        price = float(round(base * MATERIALS[material] / 10) * 10)
        answer = format_answer(title, plural(noun), price)
        row_id = hashlib.sha256(f"{seed}-{i}".encode()).hexdigest()[:16]
        rows.append(
            {
                "image": draw_product(shape, colour, pattern, rng),
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "text": None},
                            {"type": "text", "text": DEFAULT_QUESTION},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "answer": answer,
                "row_id": row_id,
                "parent_row_id": None,
                "title": title,
                "category1_code": "WOMAN" if cat % 2 else "MAN",
                "category2_code": shape.upper(),
                "category3_code": plural(noun),
                "full_price": price,
                "is_synthetic": False,
            }
        )
    return rows


def make_catalogue_dataset(
    out_dir: Path, n_train: int, n_val: int, n_test: int, n_categories: int = 6, seed: int = 0
) -> Path:
    """Save a DatasetDict shaped like the `training_dataset` export and return its folder."""
    import datasets

    features = datasets.Features(
        {
            "image": datasets.Image(),
            "messages": [
                {
                    "role": datasets.Value("string"),
                    "content": [
                        {"type": datasets.Value("string"), "text": datasets.Value("string")}
                    ],
                }
            ],
            "answer": datasets.Value("string"),
            "row_id": datasets.Value("string"),
            "parent_row_id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "category1_code": datasets.Value("string"),
            "category2_code": datasets.Value("string"),
            "category3_code": datasets.Value("string"),
            "full_price": datasets.Value("float64"),
            "is_synthetic": datasets.Value("bool"),
        }
    )
    sizes = {"train": n_train, "validation": n_val, "test": n_test}
    splits = {}
    for offset, (name, n) in enumerate(sizes.items()):
        rows = make_rows(n, n_categories, seed * 1000 + offset)
        columns = {key: [row[key] for row in rows] for key in features}
        splits[name] = datasets.Dataset.from_dict(columns, features=features)
    out_dir = Path(out_dir)
    datasets.DatasetDict(splits).save_to_disk(str(out_dir))
    return out_dir


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~100 rows, 6 categories: enough for loss-goes-down and round-trip tests."""
    return make_catalogue_dataset(tmp_path_factory.mktemp("hf_dataset"), 96, 24, 24, 6, seed=1)


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny-base build shared by all tests (keyed by corpus, so it is built once)."""
    return tmp_path_factory.mktemp("tiny_cache")


@pytest.fixture(scope="session")
def tiny_processor(tiny_dataset_dir: Path, tiny_cache_dir: Path) -> Any:
    """The tiny base's processor (32 px images) for collate-level tests."""
    from transformers import AutoProcessor

    from training.data import load_splits, tokenizer_corpus
    from training.tiny import TinyArchitecture, ensure_tiny_base

    corpus = tokenizer_corpus(load_splits(str(tiny_dataset_dir))["train"])
    return AutoProcessor.from_pretrained(
        ensure_tiny_base(TinyArchitecture(image_size=32), corpus, tiny_cache_dir)
    )


def tiny_train_config(
    dataset_dir: Path, cache_dir: Path, output_dir: Path, **overrides: Any
) -> Any:
    """Test-sized TrainConfig: a handful of steps, W&B off, no workers."""
    from training.config import TrainConfig

    values: dict[str, Any] = {
        "dataset_dir": str(dataset_dir),
        "output_dir": str(output_dir),
        "cache_dir": str(cache_dir),
        "per_device_batch_size": 8,
        "max_steps": 4,
        "eval_every_steps": 0,
        "save_every_steps": 0,
        "wandb_mode": "disabled",
        "max_eval_batches": 2,
        "image_size": 32,  # 4 image tokens with patch 16: fast tests, same code path
    }
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="session")
def trained_run(
    tiny_dataset_dir: Path, tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """One short finished run (output_dir with adapter, lineage, base) reused by read-only tests."""
    from training.train import train

    out = tmp_path_factory.mktemp("run")
    config = tiny_train_config(tiny_dataset_dir, tiny_cache_dir, out, max_steps=6)
    return train(config)
