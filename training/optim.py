"""What the loop is built from: LoRA on the preset's targets, gradient checkpointing, AdamW
groups, the warmup + cosine schedule, the step count and the resumable data order."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from training.config import TrainConfig
from training.preset_base import ModelPreset


def warmup_cosine(total_steps: int, warmup_steps: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def attach_lora(model: Any, preset: ModelPreset, config: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=preset.lora_targets(config.adapt_vision),
        modules_to_save=list(preset.modules_to_save) or None,
        bias="none",
    )
    return get_peft_model(model, lora)


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in backward; inputs must require grad or a frozen embedding would
    leave the checkpointed blocks with nothing to differentiate."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()


def build_optimizer(model: Any, config: TrainConfig) -> torch.optim.Optimizer:
    """Decay matrices only: decaying norms/biases just fights the signal."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95))


def count_total_steps(config: TrainConfig, n_train: int, world_size: int = 1) -> int:
    if config.max_steps:
        return config.max_steps
    batches = math.ceil(n_train / (config.per_device_batch_size * world_size))
    return max(1, math.ceil(config.num_epochs * batches / config.grad_accum_steps))


def batch_stream(n: int, batch_size: int, seed: int, start: int) -> Iterator[list[int]]:
    """Micro-batches of indices, reshuffled each epoch from (seed, epoch): resuming at micro-batch
    `start` replays exactly the order an uninterrupted run would have seen, without loading the
    skipped images."""
    per_epoch = math.ceil(n / batch_size)
    index = start
    while True:
        epoch, offset = divmod(index, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for b in range(offset, per_epoch):
            yield order[b * batch_size : (b + 1) * batch_size]
            index += 1
