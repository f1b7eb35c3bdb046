"""Label masking and dynamic padding, on the real tiny processor."""

from __future__ import annotations

import pytest
import torch

from training.collate import IGNORE_INDEX, Sample, VLMCollator, build_labels
from training.data import SampleView, load_splits
from training.presets import get_preset
from training.tiny import END_TOKEN, TinyArchitecture


def test_labels_cover_exactly_the_answer_and_end_token(tiny_processor, tiny_dataset_dir):
    samples = [SampleView(load_splits(str(tiny_dataset_dir))["test"])[i] for i in range(4)]
    samples.append(
        Sample(samples[0].image, samples[0].question, "Product: A, Category: B, Full Price: 1")
    )
    batch = VLMCollator(tiny_processor, get_preset("tiny"))(samples)
    tok = tiny_processor.tokenizer
    image_id = tiny_processor.image_token_id
    for row, sample in enumerate(samples):
        labels = batch["labels"][row]
        learned = labels[labels != IGNORE_INDEX]
        assert tok.decode(learned) == sample.answer + END_TOKEN
        assert image_id not in learned.tolist()
        # everything before the answer (image tokens + question) is masked
        first = int((labels != IGNORE_INDEX).nonzero()[0])
        arch = TinyArchitecture(image_size=32)
        n_image_tokens = (arch.image_size // arch.patch_size) ** 2
        assert (batch["input_ids"][row, :first] == image_id).sum() == n_image_tokens
        assert tok.decode(batch["input_ids"][row, :first]).endswith("<|assistant|>")


def test_padding_is_dynamic_to_longest_sample(tiny_processor, tiny_dataset_dir):
    view = SampleView(load_splits(str(tiny_dataset_dir))["test"])
    short = Sample(view[0].image, view[0].question, "Product: A, Category: B, Full Price: 1")
    long = Sample(view[1].image, view[1].question, view[1].answer + " extra words here")
    collate = VLMCollator(tiny_processor, get_preset("tiny"))
    single = [collate([s])["input_ids"].shape[1] for s in (short, long)]
    batch = collate([short, long])
    assert batch["input_ids"].shape[1] == max(single) < 512  # not padded to a fixed length
    pad = batch["attention_mask"] == 0
    assert pad[0].sum() == single[1] - single[0]  # short row padded on the right only
    assert not pad[0, : single[0]].any()
    assert (batch["labels"][pad] == IGNORE_INDEX).all()
    assert (batch["input_ids"][pad] == tiny_processor.tokenizer.pad_token_id).all()


def test_max_length_cuts_answers_but_refuses_to_cut_prompts(tiny_processor, tiny_dataset_dir):
    sample = SampleView(load_splits(str(tiny_dataset_dir))["test"])[0]
    cut = VLMCollator(tiny_processor, get_preset("tiny"), max_length=30)([sample])
    assert cut["input_ids"].shape[1] == cut["labels"].shape[1] == 30
    with pytest.raises(ValueError, match="max_length"):
        VLMCollator(tiny_processor, get_preset("tiny"), max_length=10)([sample])


def test_build_labels_masks_prompt_padding_and_placeholders():
    ids = torch.tensor([[5, 9, 9, 7, 8, 0], [5, -1, 9, 7, 8, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = build_labels(ids, mask, prompt_lengths=[2, 1], non_text_ids=[9])
    assert labels.tolist() == [
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX],
        [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8, 6],
    ]
