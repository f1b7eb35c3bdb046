"""bench/seed.py: the tutorial's layout (fixed padding, labels = input_ids, full fine-tune),
rebuilt on the real tiny processor and training loop so the benchmark measures what it claims."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from bench.seed import SeedCollator, SeedLayout, seed_setup, unmasked_labels
from tests.training.conftest import tiny_train_config
from training.collate import IGNORE_INDEX, VLMCollator
from training.data import SampleView, load_splits
from training.presets import get_preset
from training.train import train_loop


def test_pad_to_length_pads_every_row_to_exactly_that_length(tiny_processor, tiny_dataset_dir):
    view = SampleView(load_splits(str(tiny_dataset_dir))["test"])
    samples = [view[0], view[1]]
    dynamic = VLMCollator(tiny_processor, get_preset("tiny"))(samples)
    fixed = SeedCollator(tiny_processor, get_preset("tiny"), pad_to_length=64)(samples)
    n = dynamic["input_ids"].shape[1]
    assert n < 64
    for key in ("input_ids", "attention_mask", "labels"):
        assert fixed[key].shape == (2, 64)
        torch.testing.assert_close(fixed[key][:, :n], dynamic[key])  # same rows, more padding
    assert (fixed["input_ids"][:, n:] == tiny_processor.tokenizer.pad_token_id).all()
    assert (fixed["attention_mask"][:, n:] == 0).all()
    assert (fixed["labels"][:, n:] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="max_length"):  # a prompt is never cut to fit
        SeedCollator(tiny_processor, get_preset("tiny"), pad_to_length=10)(samples)


def test_loss_on_prompt_learns_every_position_like_the_seed(tiny_processor, tiny_dataset_dir):
    view = SampleView(load_splits(str(tiny_dataset_dir))["test"])
    collate = SeedCollator(
        tiny_processor, get_preset("tiny"), pad_to_length=64, loss_on_prompt=True
    )
    batch = collate([view[0], view[1]])
    # labels = input_ids: prompt, image tokens and padding all carry loss, nothing is ignored
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert (batch["labels"] == tiny_processor.image_token_id).any()
    assert (batch["labels"] == tiny_processor.tokenizer.pad_token_id).any()


def test_unmasked_labels_ignore_only_negative_placeholder_ids():
    ids = torch.tensor([[5, -1, -1, 7, 0]])
    assert unmasked_labels(ids).tolist() == [[5, IGNORE_INDEX, IGNORE_INDEX, 7, 0]]


def test_full_finetune_trains_every_parameter_and_saves_safetensors(
    tiny_dataset_dir, tiny_cache_dir, tmp_path
):
    config = tiny_train_config(
        tiny_dataset_dir, tiny_cache_dir, tmp_path, max_steps=2, per_device_batch_size=2
    )
    layout = SeedLayout(pad_to_length=48, loss_on_prompt=True, full_finetune=True)
    run = seed_setup(config, layout)
    params = list(run.model.parameters())
    assert not hasattr(run.model, "peft_config")
    assert all(p.requires_grad for p in params)
    before = [p.detach().clone() for p in params]
    train_loop(run)
    moved = [not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True)]
    assert sum(moved) > len(params) // 2  # the base itself is trained, not an adapter
    saved = load_file(str(tmp_path / "adapter/model.safetensors"))
    assert len(saved) >= len(dict(run.model.named_parameters())) - 1  # tied weights once
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    with pytest.raises(ValueError, match="cannot resume"):
        seed_setup(config, layout)
