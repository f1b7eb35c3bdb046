"""A training run's state and how it is built: the base model (built, downloaded or resumed),
the adapter, optimizer, schedule, tracker and ranks that `training.train`'s loop works on.
Progress lines on stdout are JSON objects with an "event" key (`emit`)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.artefacts import CHECKPOINT_DIR
from training.checkpoint import TrainState, list_checkpoints, load_checkpoint
from training.collate import VLMCollator
from training.config import TrainConfig
from training.data import load_splits, tokenizer_corpus
from training.distributed import Ranks, init_ranks, launched_ranks, main_first, wrap
from training.optim import (
    attach_lora,
    build_optimizer,
    count_total_steps,
    enable_gradient_checkpointing,
    warmup_cosine,
)
from training.pipes import forward as forward_to_dagster
from training.preset_base import BaseRef, ModelPreset
from training.presets import get_preset
from training.runtime import best_device, four_bit_quantization, resolve_precision, weight_dtype
from training.storage import local_dir
from training.tiny import vision_pretrain_data
from training.tracking import Tracker, start_tracker


@dataclass
class Run:
    """Everything the loop needs, built once by `setup`."""

    config: TrainConfig
    preset: ModelPreset
    ref: BaseRef
    dataset: Any
    processor: Any
    model: Any
    device: torch.device
    use_bf16: bool
    collator: VLMCollator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    state: TrainState
    resumed_from: int | None
    tracker: Tracker
    out: Path
    ranks: Ranks = field(default_factory=Ranks)
    # What forward runs through while training: the model, or DDP around it.
    train_model: Any = None


def emit(event: str, **values: Any) -> None:
    """One JSON object per line: trivially parsed by the Dagster asset or a shell pipeline.

    Rank 0 speaks for a data-parallel run (the values it emits are already all-reduced).
    Under Dagster Pipes the line goes to the run log only (which the terminal shows too);
    printing it as well would show every line twice."""
    if not launched_ranks().is_main:
        return
    if not forward_to_dagster(event, values):
        print(json.dumps({"event": event, **values}), flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_base(config: TrainConfig, dataset: Any) -> tuple[ModelPreset, BaseRef, Any, Any]:
    preset = get_preset(config.preset)
    preset.preflight()
    vision = vision_pretrain_data(dataset["train"]) if preset.name == "tiny" else None
    device = best_device()
    quantization = four_bit_quantization(device) if config.load_in_4bit else None
    ref = preset.resolve(config, lambda: tokenizer_corpus(dataset["train"]), vision)
    processor = preset.load_processor(ref)
    model = preset.load_model(ref, weight_dtype(config.bf16, device), quantization)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return preset, ref, processor, model


# How the loaded base becomes the trained model (LoRA here; bench/seed.py trains it in full).
Adapt = Callable[[Any, ModelPreset, TrainConfig], Any]


def setup(
    config: TrainConfig,
    adapt: Adapt = attach_lora,
    collator_type: Callable[[Any, ModelPreset, int], VLMCollator] = VLMCollator,
) -> Run:
    out = local_dir(config.output_dir)  # published to output_dir when that is a URL
    out.mkdir(parents=True, exist_ok=True)
    ranks = init_ranks(best_device())
    device = ranks.device(best_device())
    seed_everything(config.seed)
    dataset = load_splits(config.dataset_dir)
    with main_first(ranks):  # one rank builds (or downloads) the base; the others reuse it
        preset, ref, processor, model = load_base(config, dataset)
    # Re-seed: whether the base was just built or came from cache must not shift the LoRA init
    # (identical on every rank; DDP also broadcasts rank 0's weights).
    seed_everything(config.seed)
    model = adapt(model, preset, config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if not config.load_in_4bit:  # quantized weights were placed on the GPU as they loaded
        model.to(device)
    if ranks.rank:  # dropout masks differ per rank; rank 0 keeps a 1-process run's stream
        seed_everything(config.seed + ranks.rank)
    total = count_total_steps(config, len(dataset["train"]), ranks.world_size)
    optimizer = build_optimizer(model, config)
    warmup = int(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup))
    state, resumed = TrainState(), None
    checkpoints = list_checkpoints(out / CHECKPOINT_DIR)
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler, ranks.rank)
        resumed = state.step
        emit("resume", step=state.step, checkpoint=str(checkpoints[-1]))
    tracker = Tracker()
    if ranks.is_main:
        tracker = start_tracker(
            config.wandb_project,
            config.resolved_wandb_mode(),
            config.to_dict(),
            out / "wandb",
            config.wandb_dataset_artifact,
            name=config.output_dir.rstrip("/").rsplit("/", 1)[-1],
        )
    collator = collator_type(processor, preset, config.max_length)
    use_bf16 = resolve_precision(config.bf16, device)
    return Run(
        config, preset, ref, dataset, processor, model, device, use_bf16, collator,
        optimizer, scheduler, total, state, resumed, tracker, out, ranks,
        wrap(model, ranks, device),
    )  # fmt: skip
