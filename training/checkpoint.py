"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `checkpoints/step-00000120/` holding the adapter (peft's
safetensors), `state.safetensors` (optimizer moments, torch RNG states) and `state.json` (step,
optimizer hyper-parameters, scheduler state, python RNG, best metrics). It is written to a
temporary folder and renamed into place, so a crash mid-save leaves the previous one intact.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from schemas.atomic import replace_directory

CHECKPOINT_PREFIX = "step-"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    best_val_loss: float | None = None
    best_step: int | None = None
    samples_seen: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], python_state: list) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = python_state
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    root: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """`extra_tensors`: the other data-parallel ranks' RNG states (`rng.rank{r}.torch`)."""
    target = root / f"{CHECKPOINT_PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "adapter"))
    tensors, optim_meta = optimizer_to_flat(optimizer)
    save_file({**tensors, **rng_tensors(), **(extra_tensors or {})}, str(tmp / "state.safetensors"))
    meta = {
        "train_state": state.__dict__,
        "optimizer": optim_meta,
        "scheduler": scheduler.state_dict(),
        "python_rng": random.getstate(),
    }
    (tmp / "state.json").write_text(json.dumps(meta))
    replace_directory(tmp, target)
    _prune(root)
    return target


def _prune(root: Path) -> None:
    for old in list_checkpoints(root)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written ones are still named .tmp-*)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(p for p in found if (p / "state.json").exists())


def load_checkpoint(
    path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0
) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and RNGs in place; return the counters.
    Data-parallel ranks share everything but their torch RNG stream (dropout)."""
    from peft import set_peft_model_state_dict

    adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    set_peft_model_state_dict(model, adapter)
    tensors = load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text())
    optimizer.load_state_dict(optimizer_from_flat(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    restore_rng(tensors, meta["python_rng"])
    if rank and f"rng.rank{rank}.torch" in tensors:
        torch.set_rng_state(tensors[f"rng.rank{rank}.torch"])
    return TrainState(**meta["train_state"])
