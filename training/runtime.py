"""Device and precision: one rule for training and evaluation."""

from __future__ import annotations

from typing import Any

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


QLORA_EXTRA_HINT = "pip install 'catalogue-vlm[qlora]'  (bitsandbytes)"


def four_bit_quantization(device: torch.device) -> Any:
    """QLoRA's base: NF4 weights, double-quantized, bf16 compute. bitsandbytes' 4-bit kernels
    are CUDA kernels, so a CPU run is refused here rather than failing deep in a forward."""
    if device.type != "cuda":
        raise ValueError(
            "load_in_4bit (QLoRA) needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on "
            f"{device.type}. Train in full precision on this machine (load_in_4bit=false)."
        )
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"load_in_4bit (QLoRA) needs bitsandbytes: {QLORA_EXTRA_HINT}")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
