"""Batching: dynamic padding and explicit label masking (the loss sees only the answer).

The reference trained on `labels = input_ids` padded to 512, i.e. it spent most of its loss on
padding, image placeholders and the fixed question. Here the labels are the answer tokens plus
the turn terminator; everything else is IGNORE_INDEX, and a batch is as long as its longest row.
The seed's layout (`pad_to_length=512`, `loss_on_prompt=True`) stays available for benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from training.presets import ModelPreset

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


def pad_sequences(seqs: Sequence[torch.Tensor], value: int, side: str) -> torch.Tensor:
    """Stack 1-D tensors, padded to the longest one on the given side."""
    longest = max(len(s) for s in seqs)
    out = torch.full((len(seqs), longest), value, dtype=seqs[0].dtype)
    for row, seq in enumerate(seqs):
        if side == "left":
            out[row, longest - len(seq) :] = seq
        else:
            out[row, : len(seq)] = seq
    return out


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


def unmasked_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """The seed's `labels = input_ids`: loss on prompt, image tokens and padding alike. Only
    negative ids (Phi-3-vision's image placeholders) are masked: they are no vocabulary entry."""
    labels = input_ids.clone()
    labels[input_ids < 0] = IGNORE_INDEX
    return labels


def pad_to_fixed_length(
    batch: dict[str, Any], length: int, pad_values: dict[str, int]
) -> dict[str, Any]:
    """Right-pad each per-token tensor named in pad_values to exactly `length` columns."""
    out = dict(batch)
    for key, value in pad_values.items():
        if key in out:
            extra = length - out[key].shape[1]
            out[key] = torch.nn.functional.pad(out[key], (0, extra), value=value)
    return out


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
    # None = dynamic padding; an int = every row exactly that long (TrainConfig.pad_to_length).
    pad_to_length: int | None = None
    # True = the seed's unmasked labels (TrainConfig.loss_on_prompt).
    loss_on_prompt: bool = False

    def __call__(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
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
        if self.loss_on_prompt:
            batch["labels"] = unmasked_labels(batch["input_ids"])
        else:
            batch["labels"] = build_labels(
                batch["input_ids"],
                batch["attention_mask"],
                prompt_lens,
                self.preset.non_text_token_ids(self.processor),
            )
        if self.pad_to_length is None:
            return truncate(batch, self.max_length, max(prompt_lens))
        batch = truncate(batch, min(self.max_length, self.pad_to_length), max(prompt_lens))
        return pad_to_fixed_length(batch, self.pad_to_length, self.pad_values())

    def pad_values(self) -> dict[str, int]:
        """What a padded position holds: the pad id (also as label when every token is
        learned, as the seed's labels = input_ids were), else mask 0 / IGNORE_INDEX."""
        pad_id = self.processor.tokenizer.pad_token_id
        return {
            **dict.fromkeys(SEQUENCE_KEYS, 0),
            "input_ids": pad_id,
            "labels": pad_id if self.loss_on_prompt else IGNORE_INDEX,
        }


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
