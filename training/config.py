"""One flat training config (nanoGPT style): every knob, its default and why it is there.

The defaults are the CPU demo: the `tiny` preset reaches the demo bar in a few CPU minutes with
exactly these values, so `python -m training.train --config cfg.json` with only the two paths
set is the demo. Real presets override a handful of fields (lr, batch, bf16) in their JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.atomic import write_text_atomic

# Keys never written to lineage / W&B config even if someone puts them in `lineage`.
SECRET_MARKERS: tuple[str, ...] = ("API_KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")


@dataclass
class TrainConfig:
    # --- I/O -------------------------------------------------------------------------------
    # A `datasets.DatasetDict.save_to_disk` folder with train/validation/test splits.
    dataset_dir: str = "data/hf_dataset"
    # Everything the run produces: adapter/, checkpoints/, lineage.json, metrics.json.
    output_dir: str = "data/models/dev"

    # --- model -----------------------------------------------------------------------------
    # Which ModelPreset (training.presets): "tiny" trains on CPU; the others load real weights
    # from the hub (and want a GPU).
    preset: str = "tiny"
    # Overrides the preset's hub id: a local folder (offline boxes, tests) or another hub id.
    base_model: str | None = None
    # Hub revision (commit sha) of the base; None = the preset's pinned revision.
    revision: str | None = None
    # Where the tiny preset caches its locally built base (None = ~/.cache/catalogue_vlm).
    cache_dir: str | None = None

    # --- LoRA ------------------------------------------------------------------------------
    # Also adapt the vision tower's attention/MLP. Off: a pretrained tower already sees
    # products, and freezing it saves its backward pass.
    adapt_vision: bool = False
    # QLoRA: the frozen base in 4-bit NF4 (bitsandbytes, CUDA only), LoRA weights in full
    # precision; fits a 4B base in ~1/3 of the bf16 memory. Needs the `qlora` extra.
    load_in_4bit: bool = False
    # Rank of the low-rank update; 16 is plenty for a one-format answer.
    lora_r: int = 16
    # Scale = alpha / r; alpha = 2r is the usual starting point.
    lora_alpha: int = 32
    # Light regularisation: the demo set is small and repetitive.
    lora_dropout: float = 0.05

    # --- optimisation ------------------------------------------------------------------------
    # 2e-3 suits LoRA + the freshly initialised tiny modules; use ~1e-4 for real 4B models.
    learning_rate: float = 2e-3
    # AdamW decoupled decay on the trainable weights only.
    weight_decay: float = 0.01
    # Fraction of optimizer steps spent warming the lr up linearly before the cosine decay.
    warmup_ratio: float = 0.05
    # Passes over the train split; ignored when max_steps is set. 1.5 is where the demo's test
    # category accuracy stops improving (bench/RESULTS.md) at a few CPU minutes.
    num_epochs: float = 1.5
    # Hard cap on optimizer steps (tests, smoke runs); None = derived from num_epochs.
    max_steps: int | None = None
    # Samples per forward pass; the effective batch is this x grad_accum_steps.
    per_device_batch_size: int = 16
    # Accumulate gradients to reach a larger effective batch without more memory.
    grad_accum_steps: int = 1
    # Clip the global grad norm: guards the first steps of randomly initialised modules.
    max_grad_norm: float = 1.0
    # Validation loss every N optimizer steps (0 = only at the end); keeps the best adapter.
    # Each pass over the demo validation split costs ~5 s of a 2-core CPU, so not too often.
    eval_every_steps: int = 200
    # Resumable checkpoint every N optimizer steps (0 = only at the end).
    save_every_steps: int = 200
    # Truncation safety net only: padding is dynamic (longest sample in the batch).
    max_length: int = 1024
    # Stop once this many seconds went into optimizer steps (data, forward, backward, update;
    # evaluation and checkpoints excluded), whatever max_steps says: compares configurations at
    # the same training time. The last step may accumulate fewer micro-batches; the lr schedule
    # still follows max_steps / num_epochs.
    max_wall_s: float | None = None
    # Side of the square image the tiny preset's vision tower sees (real presets use their own).
    image_size: int = 64

    # --- runtime -----------------------------------------------------------------------------
    # Seeds python + torch RNGs and the data order (the order is also resumable).
    seed: int = 42
    # "auto": bf16 autocast on CUDA, fp32 on CPU; "true"/"false" force it.
    bf16: str = "auto"
    # Trade compute for memory on large presets; pointless for tiny.
    gradient_checkpointing: bool = False
    # DataLoader workers (image decoding + processor); 0 = in-process (deterministic, CPU demo).
    num_workers: int = 0
    # Cap on validation batches per evaluation (None = whole split).
    max_eval_batches: int | None = None

    # --- tracking & lineage ------------------------------------------------------------------
    # W&B project; runs are offline unless WANDB_MODE=online is set by the user.
    wandb_project: str = "catalogue-vlm"
    # None = env WANDB_MODE, else "offline"; "disabled" turns W&B off entirely.
    wandb_mode: str | None = None
    # W&B artifact name of the dataset (e.g. "training_dataset:v3"), linked as a run input.
    wandb_dataset_artifact: str | None = None
    # Passed through to lineage.json: catalogue_uri, catalogue_data_version, dagster_run_id, ...
    lineage: dict[str, Any] = field(default_factory=dict)

    def resolved_wandb_mode(self) -> str:
        """Offline unless the user explicitly asked for something else."""
        return self.wandb_mode or os.environ.get("WANDB_MODE") or "offline"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with secret-looking lineage keys removed (this goes into lineage/W&B)."""
        data = dataclasses.asdict(self)
        data["lineage"] = scrub_secrets(data["lineage"])
        return data

    def save(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return _from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """From a local path or any fsspec URL."""
        from training.storage import read_text

        return cls.from_dict(json.loads(read_text(str(path))))


@dataclass
class EvalConfig:
    # The DatasetDict folder (test split is evaluated, train split feeds the baselines).
    dataset_dir: str = "data/hf_dataset"
    # A training output_dir (adapter/, lineage.json, base_model/ for the tiny preset).
    model_dir: str = "data/models/dev"
    # Where eval.json / eval.html go (None = model_dir).
    output_dir: str | None = None
    # Split to evaluate on.
    split: str = "test"
    # Generation batch; greedy decoding is cheap, the image encoder dominates.
    batch_size: int = 32
    # The answer is ~20-40 tokens; 48 leaves room without wasting decode steps.
    max_new_tokens: int = 48
    # Evaluate only the first N rows (smoke runs); None = all.
    max_samples: int | None = None
    # Also generate with the untuned base, for the base-vs-tuned comparison.
    include_base: bool = True
    # Rows shown in eval.html (thumbnails are inlined, so keep the page small).
    html_rows: int = 60
    # Same meaning as TrainConfig.bf16.
    bf16: str = "auto"
    seed: int = 42

    def save(self, path: str | Path) -> None:
        write_text_atomic(Path(path), json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        return _from_dict(cls, data)

    @classmethod
    def load(cls, path: str | Path) -> EvalConfig:
        """From a local path or any fsspec URL."""
        from training.storage import read_text

        return cls.from_dict(json.loads(read_text(str(path))))


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Unknown keys are an error: a typo in a config file must not silently use a default."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")
    return cls(**data)


def scrub_secrets(values: dict[str, Any]) -> dict[str, Any]:
    """Drop keys that look like credentials: lineage files and W&B configs are shared widely."""
    return {
        key: value
        for key, value in values.items()
        if not any(marker in str(key).upper() for marker in SECRET_MARKERS)
    }
