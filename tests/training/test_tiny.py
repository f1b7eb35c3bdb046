"""The tiny base's vision-tower pretraining: it learns, it only reads the train split, and the
build cache notices when the pictures or labels change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.data import load_splits, tokenizer_corpus
from training.tiny import (
    TinyArchitecture,
    VisionPretrainData,
    build_pretrained_tiny,
    ensure_tiny_base,
    tiny_cache_key,
    vision_pretrain_data,
)


@pytest.fixture(scope="module")
def train_split(tiny_dataset_dir: Path):
    return load_splits(str(tiny_dataset_dir))["train"]


def test_pretraining_separates_the_train_categories(train_split):
    arch = TinyArchitecture(image_size=32, vision_pretrain_epochs=20, vision_pretrain_batch=32)
    corpus = tokenizer_corpus(train_split)
    random_model, _, no_report = build_pretrained_tiny(arch, corpus, None)
    model, _, report = build_pretrained_tiny(arch, corpus, vision_pretrain_data(train_split))
    assert no_report["vision_pretrain"] is None
    losses = report["vision_pretrain"]["epoch_losses"]
    assert report["vision_pretrain"]["images"] == len(train_split) and len(losses) == 20
    assert losses[-1] < 0.5 * losses[0], losses
    # Only the tower moved; the decoder is the same seeded random init.
    tuned, fresh = model.state_dict(), random_model.state_dict()
    changed = {k for k in tuned if not torch.equal(tuned[k], fresh[k])}
    assert changed and all("vision_tower" in k for k in changed)


def test_data_key_follows_image_bytes_and_labels(train_split):
    key = vision_pretrain_data(train_split).key
    assert vision_pretrain_data(train_split).key == key
    relabelled = train_split.map(
        lambda row, i: {"category3_code": "OTHER" if i == 0 else row["category3_code"]},
        with_indices=True,
    )
    assert vision_pretrain_data(relabelled).key != key
    reordered = train_split.select(list(reversed(range(len(train_split)))))
    assert vision_pretrain_data(reordered).key != key


def test_cache_key_includes_the_pretraining_data_only_when_it_is_used(tmp_path):
    corpus = ["Product: A, Category: B, Full Price: 1"]
    never = VisionPretrainData(key="x", load=lambda: pytest.fail("loaded for a random tower"))
    random_tower = TinyArchitecture(image_size=32, vision_pretrain_epochs=0)
    built = ensure_tiny_base(random_tower, corpus, tmp_path, never)
    assert built == ensure_tiny_base(random_tower, corpus, tmp_path)
    pretrained = TinyArchitecture(image_size=32)
    assert tiny_cache_key(pretrained, corpus, "x") != tiny_cache_key(pretrained, corpus, "y")
