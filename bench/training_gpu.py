"""Training benchmark (6, GPU): seed configuration vs ours on random models of the reference's
size and of a 2026 model's: `python -m bench.training_gpu` (about 10 minutes on one large GPU).

Phi-3-vision is remote code, so its stand-in is the same family built from config alone (no
hub, no weights): a LLaVA with a CLIP ViT-L/14 tower and a Phi-3-mini decoder, ~4.1 B
parameters. The second is a Qwen3-VL-4B-sized Qwen3-VL (bench/gpu_models.py). Rows are
synthetic token ids shaped like the task: the image's placeholder tokens, a short question and
an answer of 20-45 tokens, drawn per row so dynamic padding sees a realistic spread of lengths.

- seed: full fine-tune, fp32 weights, AdamW, batch 1 x grad-accum 64, every row padded to 512,
  labels = input_ids (the reference tutorial's setup).
- ours: bf16 weights + autocast, LoRA r 16 on the decoder's attention/MLP (nothing else
  trained), gradient checkpointing, batch 16, dynamic padding, answer-only labels.

A few forward+backward micro-batches are timed after a warm-up step, and one optimizer step;
a step is grad-accum micro-batches plus that update. tokens/s counts real (non-padding)
tokens; peak memory is torch.cuda.max_memory_allocated per configuration. `--tiny-debug`
shrinks the models to check the script end to end on a CPU (no numbers, RESULTS.md untouched).
Needs only torch, transformers and peft (training/ imports nothing more).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from bench.common import Report, base_parser, benchmark_main
from bench.gpu_models import LLAVA_TINY, QWEN_TINY, LlavaSize, QwenSize
from bench.seed import pad_to_fixed_length, unmasked_labels
from training.collate import IGNORE_INDEX, build_labels
from training.config import TrainConfig
from training.optim import attach_lora, build_optimizer, enable_gradient_checkpointing


@dataclass(frozen=True)
class Setting:
    label: str
    full_finetune: bool
    dtype: torch.dtype
    batch: int
    grad_accum: int
    pad_to_length: int | None
    loss_on_prompt: bool
    gradient_checkpointing: bool
    learning_rate: float


SETTINGS: dict[str, Setting] = {
    "seed": Setting(
        "seed: full FT, fp32, batch 1 x accum 64, pad 512, labels = input_ids",
        True, torch.float32, 1, 64, 512, True, False, 5e-5,
    ),
    "ours": Setting(
        "ours: LoRA r16, bf16, batch 16, dynamic padding, answer-only labels, grad ckpt",
        False, torch.bfloat16, 16, 1, None, False, True, 1e-4,
    ),
}  # fmt: skip


Size = LlavaSize | QwenSize


def make_batch(size: Size, setting: Setting, generator: torch.Generator) -> dict[str, Any]:
    """One micro-batch of synthetic rows, padded and labelled as the setting says."""
    text_ids = (100, size.vocab_size - 100)
    ids, prompt_lengths = [], []
    for _ in range(setting.batch):
        n_answer = int(torch.randint(*size.answer_tokens, (1,), generator=generator))
        question = torch.randint(*text_ids, (size.question_tokens,), generator=generator)
        answer = torch.randint(*text_ids, (n_answer + 1,), generator=generator)  # + terminator
        image = size.image_block()
        ids.append(torch.cat([image, question, answer]))
        prompt_lengths.append(len(image) + size.question_tokens)
    input_ids = pad_sequence(ids, batch_first=True, padding_value=size.pad_id)
    mask = pad_sequence([torch.ones_like(i) for i in ids], batch_first=True)
    if setting.loss_on_prompt:
        labels = unmasked_labels(input_ids)
    else:
        labels = build_labels(input_ids, mask, prompt_lengths, [size.image_id])
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if setting.pad_to_length is not None:
        label_pad = size.pad_id if setting.loss_on_prompt else IGNORE_INDEX
        pad = {"input_ids": size.pad_id, "attention_mask": 0, "labels": label_pad}
        batch = pad_to_fixed_length(batch, setting.pad_to_length, pad)
    batch.update(size.extra_inputs(batch["input_ids"]))
    vision = size.vision_inputs(setting.batch, generator)
    vision["pixel_values"] = vision["pixel_values"].to(setting.dtype)
    return {**batch, **vision}


def prepare(size: Size, setting: Setting, device: torch.device) -> tuple[Any, Any]:
    """Model (+ LoRA) and optimizer, set up as training.train would."""
    config = TrainConfig(learning_rate=setting.learning_rate, weight_decay=0.0)
    model = size.build(setting.dtype, device)
    if not setting.full_finetune:
        model = attach_lora(model, size.preset(), config).to(device)
    if setting.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.train()
    return model, build_optimizer(model, config)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def micro_step(model: Any, batch: dict[str, Any], setting: Setting, device: torch.device) -> None:
    batch = {k: v.to(device) for k, v in batch.items()}
    # Autocast only where weights are bf16: LoRA's own weights stay fp32 (peft's default).
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=setting.dtype != torch.float32):
        loss = model(**batch).loss
    (loss / setting.grad_accum).backward()


def optimizer_update(model: Any, optimizer: Any) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(size: Size, setting: Setting, device: torch.device, steps: int) -> dict[str, Any]:
    """Warm-up micro-batch + update (allocates AdamW's moments, picks kernels), then `steps`
    timed micro-batches and one timed update; peak memory covers all of it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, optimizer = prepare(size, setting, device)
    generator = torch.Generator().manual_seed(0)
    micro_step(model, make_batch(size, setting, generator), setting, device)
    optimizer_update(model, optimizer)
    batches = [make_batch(size, setting, generator) for _ in range(steps)]
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        micro_step(model, batch, setting, device)
    sync(device)
    micro_s = (time.perf_counter() - start) / steps
    start = time.perf_counter()
    optimizer_update(model, optimizer)
    sync(device)
    update_s = time.perf_counter() - start
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        # per micro-batch, padding included / excluded
        "padded_tokens": statistics.mean(b["input_ids"].numel() for b in batches),
        "real_tokens": statistics.mean(float(b["attention_mask"].sum()) for b in batches),
        "micro_s": micro_s,
        "update_s": update_s,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30
        if device.type == "cuda"
        else None,
    }
    del model, optimizer
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def table_row(
    model: str, setting: Setting, r: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    step_s = setting.grad_accum * r["micro_s"] + r["update_s"]
    real_per_s = setting.grad_accum * r["real_tokens"] / step_s
    base_step_s = SETTINGS["seed"].grad_accum * base["micro_s"] + base["update_s"]
    base_real_per_s = SETTINGS["seed"].grad_accum * base["real_tokens"] / base_step_s
    row = {
        "model": model,
        "configuration": setting.label,
        "parameters": r["parameters"],
        "trainable": r["trainable"],
        "tokens/row": r["padded_tokens"] / setting.batch,
        "real tokens/row": r["real_tokens"] / setting.batch,
        "micro-batch s": r["micro_s"],
        "update s": r["update_s"],
        "real tokens/s": real_per_s,
        "padded tokens/s": setting.grad_accum * r["padded_tokens"] / step_s,
        "samples/s": setting.grad_accum * setting.batch / step_s,
        "peak GPU GiB": r["peak_gib"],
        "real tokens/s vs seed": real_per_s / base_real_per_s,
    }
    if r["peak_gib"] and base["peak_gib"]:
        row["peak memory vs seed"] = r["peak_gib"] / base["peak_gib"]
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("training_gpu", __doc__)
    parser.add_argument("--steps", type=int, default=6, help="timed micro-batches per config")
    parser.add_argument("--ours-batch", type=int, default=16, help="our micro-batch size")
    parser.add_argument(
        "--models", nargs="+", choices=list(MODELS), default=list(MODELS), help="stand-ins"
    )
    parser.add_argument(
        "--tiny-debug", action="store_true", help="toy model, CPU allowed, RESULTS.md untouched"
    )
    args = parser.parse_args(argv)
    if args.tiny_debug:
        args.no_results = True  # a smoke run must never overwrite real numbers
    return args


MODELS: dict[str, tuple[Size, Size]] = {  # name -> (full size, --tiny-debug size)
    "phi3-vision-sized": (LlavaSize(), LLAVA_TINY),
    "qwen3-vl-sized": (QwenSize(), QWEN_TINY),
}


def run(args: argparse.Namespace) -> Report:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.tiny_debug:
        raise SystemExit("bench.training_gpu needs a CUDA GPU (or --tiny-debug for a smoke run)")
    settings = {**SETTINGS, "ours": replace(SETTINGS["ours"], batch=args.ours_batch)}
    rows, shapes = [], []
    for name in args.models:
        size = MODELS[name][1 if args.tiny_debug else 0]
        results = {key: measure(size, s, device, args.steps) for key, s in settings.items()}
        rows += [table_row(size.name, settings[k], r, results["seed"]) for k, r in results.items()]
        shapes.append(f"{size.name}: {size.image_tokens} image tokens per row")
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (tiny-debug)"
    notes = [
        f"Device: {gpu}, torch {torch.__version__}. " + "; ".join(shapes) + ", answers "
        f"{LlavaSize.answer_tokens[0]}-{LlavaSize.answer_tokens[1]} tokens; {args.steps} timed "
        "micro-batches per configuration after one warm-up step.",
        "A step = grad-accum micro-batches + one update (seed: 64 x batch 1; ours: 1 x batch "
        f"{args.ours_batch}); tokens/s and samples/s = per step / step time. real = non-padding.",
        "Peak GPU memory: torch.cuda.max_memory_allocated over build, warm-up and timed steps "
        "(weights, gradients, AdamW moments, activations).",
    ]
    title = "Training (6, GPU: random Phi-3-vision- and Qwen3-VL-sized models, ours vs the seed)"
    return Report("training_gpu", title, rows, notes)


main = benchmark_main(parse_args, run)


if __name__ == "__main__":
    main(sys.argv[1:])
