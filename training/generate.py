"""Greedy answers from a (tuned or base) model: what evaluation scores and W&B shows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from schemas.progress import Progress
from training.data import question_and_answer
from training.preset_base import ModelPreset


@torch.no_grad()
def generate_answers(
    model: Any,
    processor: Any,
    preset: ModelPreset,
    rows: Sequence[dict[str, Any]],
    batch_size: int = 32,
    max_new_tokens: int = 48,
    progress: Progress | None = None,
) -> list[str]:
    """Batched greedy decoding, left-padded so every row's answer starts at the same column."""
    device = next(model.parameters()).device
    pad_id = processor.tokenizer.pad_token_id
    answers: list[str] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        prompts = [preset.prompt_text(processor, question_and_answer(r)[0]) for r in chunk]
        images = [r["image"].convert("RGB") for r in chunk]
        enc = preset.encode(processor, prompts, images, padding_side="left")
        enc = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in enc.items()}
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=preset.stop_token_ids(processor),
            pad_token_id=pad_id,
        )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        answers.extend(
            t.strip()
            for t in processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        )
        if progress is not None:
            progress(len(answers), len(rows))
    return answers
