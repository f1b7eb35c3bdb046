"""The tutorial's training layout, rebuilt only to measure what it costs (bench.training*).

The product trains LoRA on answer-only labels with dynamic padding (training/). The seed padded
every row to 512 tokens, set labels = input_ids (loss on the prompt, image placeholders and
padding alike) and fine-tuned every weight. Those switches live here so the product's
TrainConfig carries no mode nobody should pick.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.artefacts import CHECKPOINT_DIR
from training.checkpoint import list_checkpoints
from training.collate import IGNORE_INDEX, SEQUENCE_KEYS, VLMCollator, truncate
from training.config import TrainConfig
from training.preset_base import ModelPreset


@dataclass(frozen=True)
class SeedLayout:
    # None = dynamic padding; an int pads every row to exactly that many tokens.
    pad_to_length: int | None = None
    # True = labels are input_ids (only ids < 0 cannot be targets).
    loss_on_prompt: bool = False
    # True = no adapter: every parameter trains and "adapter/" holds the whole model.
    full_finetune: bool = False


SEED_LAYOUT = SeedLayout(pad_to_length=512, loss_on_prompt=True, full_finetune=True)


def unmasked_labels(input_ids: torch.Tensor) -> torch.Tensor:
    """labels = input_ids; negative ids (Phi-3-vision's image placeholders) are no vocabulary
    entry, so even the seed could not learn them."""
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


@dataclass
class SeedCollator(VLMCollator):
    pad_to_length: int | None = None
    loss_on_prompt: bool = False

    def __call__(self, samples: Any) -> dict[str, torch.Tensor]:
        batch, prompt_lens = self.encode(samples)
        if self.loss_on_prompt:
            batch["labels"] = unmasked_labels(batch["input_ids"])
        else:
            batch["labels"] = self.answer_labels(batch, prompt_lens)
        if self.pad_to_length is None:
            return truncate(batch, self.max_length, max(prompt_lens))
        batch = truncate(batch, min(self.max_length, self.pad_to_length), max(prompt_lens))
        return pad_to_fixed_length(batch, self.pad_to_length, self.pad_values())

    def pad_values(self) -> dict[str, int]:
        """A padded position holds the pad id (also as its label when every token is learned,
        as the seed's labels = input_ids were), else mask 0 / IGNORE_INDEX."""
        pad_id = self.processor.tokenizer.pad_token_id
        return {
            **dict.fromkeys(SEQUENCE_KEYS, 0),
            "input_ids": pad_id,
            "labels": pad_id if self.loss_on_prompt else IGNORE_INDEX,
        }


def keep_every_weight(model: Any, preset: ModelPreset, config: TrainConfig) -> Any:
    return model


def seed_setup(config: TrainConfig, layout: SeedLayout) -> Any:
    """training.run.setup with the seed's collator (and no adapter for a full fine-tune)."""
    from training.optim import attach_lora
    from training.run import setup

    if layout.full_finetune and list_checkpoints(Path(config.output_dir) / CHECKPOINT_DIR):
        # A checkpoint restores adapter weights; a full model checkpoint has none.
        raise ValueError(f"{config.output_dir} holds checkpoints; a full fine-tune cannot resume")
    collator = functools.partial(
        SeedCollator, pad_to_length=layout.pad_to_length, loss_on_prompt=layout.loss_on_prompt
    )
    adapt = keep_every_weight if layout.full_finetune else attach_lora
    return setup(config, adapt=adapt, collator_type=collator)
