"""A training output folder's layout, and loading base + adapter back from it.

Training writes these names, evaluation and the W&B sample table read them: one place, so the
two cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.preset_base import BaseRef, ModelPreset
from training.presets import get_preset
from training.runtime import best_device, weight_dtype

ADAPTER_DIR = "adapter"
PROCESSOR_DIR = "processor"
BASE_MODEL_DIR = "base_model"  # the tiny preset's locally built base travels with the adapter
CHECKPOINT_DIR = "checkpoints"
LINEAGE_FILE = "lineage.json"
METRICS_FILE = "metrics.json"


def load_model_for_eval(model_dir: Path, with_adapter: bool = True) -> tuple[Any, Any, ModelPreset]:
    """Base (as recorded in lineage.json) + the best adapter, on the best available device."""
    from peft import PeftModel

    lineage = json.loads((model_dir / LINEAGE_FILE).read_text())
    config = TrainConfig.from_dict(lineage["config"])
    base = lineage["base_model"]
    preset = get_preset(base.get("preset") or config.preset)
    preset.preflight()
    path = str(model_dir / base["path"]) if (model_dir / base["path"]).is_dir() else base["path"]
    ref = BaseRef(path=path, model_id=base["id"], revision=base.get("revision"))
    device = best_device()
    processor = preset.load_processor(BaseRef(str(model_dir / PROCESSOR_DIR), ref.model_id, None))
    model = preset.load_model(ref, weight_dtype(config.bf16, device))
    if with_adapter:
        model = PeftModel.from_pretrained(model, str(model_dir / ADAPTER_DIR))
    return model.to(device).eval(), processor, preset
