"""Device and precision: one rule for training and evaluation."""

from __future__ import annotations

import torch


def best_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(setting: str, device: torch.device) -> bool:
    """bf16 only where it is fast and supported; CPU bf16 autocast is slower and less exact."""
    if setting == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return setting.lower() in ("true", "1", "yes")


def weight_dtype(setting: str, device: torch.device) -> torch.dtype:
    return torch.bfloat16 if resolve_precision(setting, device) else torch.float32
