"""Batching: dynamic padding and explicit label masking (the loss sees only the answer).

The labels are the answer tokens plus the turn terminator; everything else (prompt, image
placeholders, padding) is IGNORE_INDEX, so the loss measures only what the model must produce,
and a batch is as long as its longest row. (bench/seed.py rebuilds the tutorial's fixed-length,
labels = input_ids layout to measure what it costs.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from training.preset_base import ModelPreset

# torch.nn.CrossEntropyLoss's default ignore_index: these positions contribute no loss.
IGNORE_INDEX = -100

# Per-token tensors (batch, seq): cut together when a row exceeds max_length.
SEQUENCE_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
)


@dataclass(frozen=True)
class Sample:
    image: Any  # PIL image, RGB
    question: str
    answer: str


def build_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_lengths: Sequence[int],
    non_text_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Right-padded batch -> labels: the prompt prefix, padding, image placeholders (and any
    negative placeholder id) are IGNORE_INDEX; the rest (answer + terminator) is learned."""
    labels = input_ids.clone()
    for row, length in enumerate(prompt_lengths):
        labels[row, :length] = IGNORE_INDEX
    labels[attention_mask == 0] = IGNORE_INDEX
    labels[input_ids < 0] = IGNORE_INDEX
    for token_id in non_text_ids:
        labels[input_ids == token_id] = IGNORE_INDEX
    return labels


def common_prefix_length(full: torch.Tensor, prompt: torch.Tensor, prompt_len: int) -> int:
    """Where the answer starts. Normally prompt_len; shorter if the tokenizer merged across the
    prompt/answer boundary, so a prompt token is never mistaken for an answer token."""
    n = min(prompt_len, len(full))
    mismatch = (full[:n] != prompt[:n]).nonzero()
    return int(mismatch[0]) if len(mismatch) else n


@dataclass
class VLMCollator:
    processor: Any
    preset: ModelPreset
    max_length: int = 1024

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        batch, prompt_lens = self.encode(samples)
        batch["labels"] = self.answer_labels(batch, prompt_lens)
        return truncate(batch, self.max_length, max(prompt_lens))

    def encode(self, samples: Sequence[Sample]) -> tuple[dict[str, Any], list[int]]:
        """The right-padded batch of prompt + answer, and where each row's answer starts."""
        images = [s.image for s in samples]
        prompts = [self.preset.prompt_text(self.processor, s.question) for s in samples]
        fulls = [
            p + self.preset.answer_text(s.answer) for p, s in zip(prompts, samples, strict=True)
        ]
        batch = self.preset.encode(self.processor, fulls, images, padding_side="right")
        prompt_batch = self.preset.encode(self.processor, prompts, images, padding_side="right")
        prompt_lens = [
            common_prefix_length(batch["input_ids"][i], prompt_batch["input_ids"][i], int(n))
            for i, n in enumerate(prompt_batch["attention_mask"].sum(dim=1))
        ]
        return batch, prompt_lens

    def answer_labels(self, batch: dict[str, Any], prompt_lens: Sequence[int]) -> torch.Tensor:
        return build_labels(
            batch["input_ids"],
            batch["attention_mask"],
            prompt_lens,
            self.preset.non_text_token_ids(self.processor),
        )


def truncate(batch: dict[str, Any], max_length: int, longest_prompt: int) -> dict[str, Any]:
    """Cut over-long answers; refuse to cut a prompt (that would drop image tokens and break
    the model's image/text alignment in a way that is hard to debug later)."""
    if batch["input_ids"].shape[1] <= max_length:
        return batch
    if longest_prompt >= max_length:
        raise ValueError(
            f"a prompt is {longest_prompt} tokens (image tokens included), over max_length="
            f"{max_length}; raise max_length"
        )
    keys = (*SEQUENCE_KEYS, "labels")
    return {k: (v[:, :max_length] if k in keys else v) for k, v in batch.items()}
