"""The training dataset as a Hugging Face `DatasetDict`: TRL's VLM chat shape, self-contained.

Validation and test hold real rows only (metrics must describe the catalogue, not our
augmentations); train adds the synthetic variants. Image bytes are embedded on save, so the
saved folder keeps loading after the image store moves or is cleaned. The embedded image is the
row's normalised picture (`normalised_path`, curation.images.normalised), so a consumer's plain
`row["image"].convert("RGB")` (TRL's collators, transformers' processors, training/data.py)
sees the product upright on white in sRGB, not a black background or a clipped 16-bit grey.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from curation.splits import split_counts_table
from curation.variants import variant_kind_counts
from schemas.atomic import replace_directory
from schemas.markdown import markdown_table
from schemas.prompt import DEFAULT_QUESTION, format_answer
from schemas.tables import LABEL_COLUMNS, SPLIT_NAMES

if TYPE_CHECKING:
    import datasets


@functools.cache
def _features() -> datasets.Features:
    """The export's columns (`FEATURES`). Built on first use: `datasets` costs every process
    that loads the code location most of a second, and only the export and its readers use it.
    Content items share one struct type ({type, text}) so Arrow can store user and assistant
    turns in one column; an image item has text None, as TRL's VLM collators expect."""
    import datasets

    content = datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")})
    return datasets.Features(
        {
            "image": datasets.Image(),
            "messages": datasets.List({"role": datasets.Value("string"), "content": content}),
            "answer": datasets.Value("string"),
            "row_id": datasets.Value("string"),
            # null for real rows (they have no parent); a variant's real train row otherwise.
            "parent_row_id": datasets.Value("string"),
            **{
                c: datasets.Value("float64" if c == "full_price" else "string")
                for c in LABEL_COLUMNS
            },
            "is_synthetic": datasets.Value("bool"),
        }
    )


def __getattr__(name: str) -> object:
    if name == "FEATURES":
        return _features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def chat_messages(question: str, answer: str) -> list[dict]:
    """One user turn (image, then question) and the assistant's answer, TRL VLM SFT style."""
    return [
        {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": question}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


def _records(frame: pl.DataFrame, id_col: str, parent_col: str | None) -> dict[str, list]:
    """Column dict for `Dataset.from_dict`; `frame` needs normalised_path, question, labels."""
    missing = frame.filter(pl.col("normalised_path").is_null())
    if missing.height:
        raise ValueError(
            f"{missing.height} rows have no normalised image, e.g. {missing[id_col][0]}: "
            "rematerialize product_images"
        )
    labels = [pl.col(c).cast(pl.Float64) if c == "full_price" else pl.col(c) for c in LABEL_COLUMNS]
    rows = frame.select("normalised_path", "question", id_col, *labels).to_dicts()
    answers = [format_answer(r["title"], r["category3_code"], r["full_price"]) for r in rows]
    parents = frame[parent_col].to_list() if parent_col else [None] * len(rows)
    return {
        # A path is enough here: save_to_disk embeds the bytes (embed_local_files).
        "image": [r["normalised_path"] for r in rows],
        "messages": [chat_messages(r["question"], a) for r, a in zip(rows, answers, strict=True)],
        "answer": answers,
        "row_id": [r[id_col] for r in rows],
        "parent_row_id": parents,
        **{c: [r[c] for r in rows] for c in LABEL_COLUMNS},
        "is_synthetic": [parent_col is not None] * len(rows),
    }


def build_dataset_dict(splits: pl.DataFrame, variants: pl.DataFrame) -> datasets.DatasetDict:
    """train = real train rows then variants; validation/test = real rows, in table order."""
    import datasets

    leaked = set(variants["parent_row_id"].to_list()) - set(
        splits.filter(pl.col("split") == "train")["row_id"].to_list()
    )
    if leaked:
        raise ValueError(f"{len(leaked)} variants have a parent outside train, e.g. {min(leaked)}")
    real = splits.with_columns(question=pl.lit(DEFAULT_QUESTION))
    out: dict[str, datasets.Dataset] = {}
    for name in SPLIT_NAMES:
        columns = _records(real.filter(pl.col("split") == name), "row_id", None)
        if name == "train":
            synthetic = _records(variants, "variant_id", "parent_row_id")
            columns = {k: v + synthetic[k] for k, v in columns.items()}
        out[name] = datasets.Dataset.from_dict(columns, features=_features(), split=name)
    return datasets.DatasetDict(out)


def save_dataset_dict(dsd: datasets.DatasetDict, out_dir: str, card_markdown: str) -> str:
    """Write dataset + README.md card to a sibling temp dir, then swap it in; returns out_dir."""
    fs, path = fsspec.core.url_to_fs(out_dir)
    path = path.rstrip("/")
    tmp_path = f"{path}.tmp-{uuid.uuid4().hex}"
    tmp_url = tmp_path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(tmp_path)
    try:
        dsd.save_to_disk(tmp_url)
        with fs.open(f"{tmp_path}/README.md", "w", encoding="utf-8") as handle:
            handle.write(card_markdown)
        if isinstance(fs, LocalFileSystem):
            replace_directory(tmp_path, path)
        else:
            # Object stores have no directory rename (and s3fs's recursive mv of a "folder"
            # fails): copy object by object, then drop the temporary prefix.
            if fs.exists(path):
                fs.rm(path, recursive=True)
            for name in fs.find(tmp_path):
                fs.copy(name, path + name[len(tmp_path) :])
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path, recursive=True)
    return out_dir


def _split_section(splits: pl.DataFrame, variants: pl.DataFrame) -> str:
    real = dict(splits.group_by("split").len().iter_rows())
    rows = [
        (name, real.get(name, 0), variants.height if name == "train" else 0) for name in SPLIT_NAMES
    ]
    rows = [(n, r, s, r + s) for n, r, s in rows]
    return markdown_table(("split", "real rows", "synthetic rows", "total"), rows)


def _category_section(splits: pl.DataFrame, variants: pl.DataFrame) -> str:
    synthetic = dict(variants.group_by("category3_code").len().iter_rows())
    table = split_counts_table(splits)
    rows = [
        (*row, synthetic.get(row[0], 0))
        for row in table.select("category3_code", *SPLIT_NAMES, "total").iter_rows()
    ]
    return markdown_table(("category3_code", *SPLIT_NAMES, "total real", "synthetic (train)"), rows)


def dataset_card(
    splits: pl.DataFrame,
    variants: pl.DataFrame,
    upstream_versions: Mapping[str, str],
    split_rule: str,
) -> str:
    """README.md for the saved dataset: what is in it, how it was split, from which data."""
    kinds = variant_kind_counts(variants)
    features = "\n".join(f"- `{name}`: {feature!r}" for name, feature in _features().items())
    versions = sorted(upstream_versions.items())
    return (
        "\n\n".join(
            [
                "---\ntask_categories:\n- image-text-to-text\ntags:\n- product-catalogue\n"
                "- synthetic-augmentation\n---",
                "# Product catalogue VLM dataset",
                "Each sample is one product photo with a question (real rows ask "
                f"`{DEFAULT_QUESTION}`); the answer is `Product: <title>, Category: "
                "<category3_code>, Full Price: <full_price>` (schemas.prompt.format_answer).",
                "Validation and test contain real catalogue rows only; synthetic variants "
                "(`is_synthetic`) are derived from train rows and name theirs in `parent_row_id`, "
                "which is null for real rows.",
                "## Splits\n\n" + _split_section(splits, variants),
                "## Categories\n\n" + _category_section(splits, variants),
                "## Synthetic variants\n\n"
                + markdown_table(("variant_kind", "rows"), list(kinds.items()) or [("(none)", 0)]),
                "## Split rule\n\n```text\n" + split_rule.strip() + "\n```",
                "## Upstream data versions\n\n"
                + markdown_table(("asset", "data version"), versions or [("(none)", "")]),
                "## Features\n\n" + features,
            ]
        )
        + "\n"
    )


def log_dataset_artifact(
    out_dir: str, name: str, metadata: Mapping[str, object], alias: str | None = None
) -> str | None:
    """Log the saved dataset as a W&B reference artifact (nothing is copied into W&B staging:
    the entries point at the snapshot's files, which never change), aliased `alias` (the
    snapshot fingerprint, so a training run asks for exactly `name:alias`). Returns
    `{run path}:{name}[:{alias}]`, or None when W&B is off.

    Offline unless the user set WANDB_MODE, so nothing leaves the machine by default.
    """
    mode = os.environ.get("WANDB_MODE", "offline")
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError:
        return None
    safe_name = re.sub(r"[^A-Za-z0-9_.-]", "-", name)
    project = os.environ.get("WANDB_PROJECT", "catalogue-vlm")
    # dir given explicitly: wandb caches its settings per process, so a WANDB_DIR set after an
    # earlier run in the same process would otherwise be ignored.
    with wandb.init(
        project=project,
        job_type="dataset",
        mode=mode,
        reinit="create_new",
        dir=os.environ.get("WANDB_DIR"),
    ) as run:
        artifact = wandb.Artifact(safe_name, type="dataset", metadata=dict(metadata))
        fs, path = fsspec.core.url_to_fs(out_dir)
        local = isinstance(fs, LocalFileSystem)
        artifact.add_reference(Path(path).resolve().as_uri() if local else out_dir)
        run.log_artifact(artifact, aliases=[alias] if alias else None)
        return f"{run.path}:{safe_name}" + (f":{alias}" if alias else "")
