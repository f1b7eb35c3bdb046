"""The preset registry, the local `tiny` preset and the older hub presets (SmolVLM, the
remote-code Phi-3-vision); the 2026 families are in training.hub_presets. Everything
model-specific lives in a preset, so train/evaluate stay model-agnostic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.config import TrainConfig
from training.hub_presets import HUB_PRESETS
from training.preset_base import (
    PHI3_EXTRA_HINT,
    PHI3_TRANSFORMERS_RANGE,
    BaseRef,
    Corpus,
    ModelPreset,
    check_version_range,
    dtype_kwargs,
    quant_kwargs,
)

if TYPE_CHECKING:
    from training.tiny import VisionPretrainData


class TinyPreset(ModelPreset):
    """A LLaVA built locally (training.tiny): its vision tower is pretrained on the train split's
    category3 labels while the base is built, the rest is random. As in LLaVA's own fine-tuning
    the tower then stays frozen; the projector, embeddings and head are trained in full through
    `modules_to_save` (they are tiny and end up in the adapter) and LoRA adapts the decoder's
    attention/MLP. Base + adapter reload exactly like a real preset. The tower stays frozen
    because training it at the adapter's lr undoes its pretraining (and costs its backward)."""

    name = "tiny"
    model_id = "tiny"
    lora_target_modules = r".*language_model.*\.(qkv_proj|o_proj|gate_up_proj|down_proj)"
    modules_to_save = ("multi_modal_projector", "embed_tokens", "lm_head")
    end_text = "<|end|>"

    def build_base(
        self, config: TrainConfig, corpus: Corpus, vision_data: VisionPretrainData | None
    ) -> BaseRef:
        from training.storage import is_remote
        from training.tiny import TinyArchitecture, default_cache_root, ensure_tiny_base

        arch = TinyArchitecture(image_size=config.image_size)
        # The build is loaded with from_pretrained, so it lives on a local disk: a cache_dir
        # on an object store (the data dir on s3) falls back to the local default.
        local = config.cache_dir and not is_remote(config.cache_dir)
        root = Path(config.cache_dir) if local else default_cache_root()
        path = ensure_tiny_base(arch, corpus(), root, vision_data)
        return BaseRef(path=str(path), model_id="tiny", revision=path.name.removeprefix("tiny-"))


class SmolVLMPreset(ModelPreset):
    """SmolVLM (Idefics3 architecture), supported natively by transformers: no remote code."""

    name = "smolvlm"
    model_id = "HuggingFaceTB/SmolVLM-256M-Instruct"
    # Not pinned to a sha here (no hub access where this was written): set `revision` in the
    # run config to pin it; lineage records the commit actually loaded either way.
    revision = None
    lora_target_modules = (
        r".*text_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
    )
    answer_prefix = " "  # the SmolVLM template renders "Assistant: <text>"
    end_text = "<end_of_utterance>"
    nested_images = True


class Phi3VisionPreset(ModelPreset):
    """The reference model (remote code). Batches are encoded sample by sample because its
    processor numbers images per call (`<|image_1|>`) and marks them with negative ids."""

    name = "phi3-vision"
    model_id = "microsoft/Phi-3-vision-128k-instruct"
    revision = "ed2772fabe9dc9acd0caad54b62761d92520cc44"
    trust_remote_code = True
    lora_target_modules = (
        r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
    )
    end_text = "<|end|>"

    def preflight(self) -> None:
        import transformers

        check_version_range(
            "transformers", transformers.__version__, PHI3_TRANSFORMERS_RANGE, PHI3_EXTRA_HINT
        )

    def load_processor(self, ref: BaseRef) -> Any:
        from transformers import AutoProcessor

        # num_crops=4: the HD transform's speed/detail setting recommended for single images.
        return AutoProcessor.from_pretrained(ref.path, num_crops=4, **self._hub_kwargs(ref))

    def load_model(self, ref: BaseRef, dtype: Any, quantization: Any = None) -> Any:
        from transformers import AutoModelForCausalLM

        # eager attention: the checkpoint's config asks for flash-attn, which is optional here.
        kwargs = {
            **self._hub_kwargs(ref),
            **dtype_kwargs(dtype),
            **quant_kwargs(quantization),
            "_attn_implementation": "eager",
        }
        return AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)

    def prompt_text(self, processor: Any, question: str) -> str:
        return f"<|user|>\n<|image_1|>\n{question}<|end|>\n<|assistant|>\n"

    def encode(
        self, processor: Any, texts: Sequence[str], images: Sequence[Any], padding_side: str
    ) -> dict[str, Any]:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        parts = [
            processor(text=t, images=[im], return_tensors="pt")
            for t, im in zip(texts, images, strict=True)
        ]
        pad_id = processor.tokenizer.pad_token_id
        ids = [p["input_ids"][0] for p in parts]
        masks = [torch.ones_like(i) for i in ids]
        return {
            "input_ids": pad_sequence(ids, True, pad_id, padding_side),
            "attention_mask": pad_sequence(masks, True, 0, padding_side),
            "pixel_values": torch.cat([p["pixel_values"] for p in parts]),
            "image_sizes": torch.cat([p["image_sizes"] for p in parts]),
        }

    def non_text_token_ids(self, processor: Any) -> list[int]:
        return []  # image positions are negative ids; collate masks every id < 0


PRESETS: dict[str, ModelPreset] = {
    preset.name: preset
    for preset in (TinyPreset(), SmolVLMPreset(), Phi3VisionPreset(), *HUB_PRESETS)
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def train_config_for(preset: str, **values: Any) -> TrainConfig:
    """A TrainConfig for `preset`: its GPU defaults (bf16, batch, lr, checkpointing), then
    `values`. The plain TrainConfig defaults are the tiny preset's CPU demo."""
    return TrainConfig(**{**get_preset(preset).gpu_defaults, **values, "preset": preset})
