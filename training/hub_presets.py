"""The VLM families people fine-tune in 2026, all native to the installed transformers (no
remote code): Qwen3-VL, Gemma 3 and Phi-4-multimodal (its vision path).

Each preset adapts the language model's attention + MLP projections; the vision tower stays
frozen unless TrainConfig.adapt_vision. Module-name regexes are the names transformers 5 gives
the loaded model (checked against a tiny random instance of each architecture in the tests).
Revisions: the field is there to pin; with no hub access where these were written, each run's
lineage.json records the commit actually loaded, which is what to pin from.
"""

from __future__ import annotations

import functools
from typing import Any

from training.preset_base import BaseRef, ModelPreset, check_torchvision, check_version_range

# Qwen3-VL and the PIL image-processor backends arrived in transformers 4.57 / 5.
NATIVE_TRANSFORMERS_RANGE = (">=4.57", "<6")
NATIVE_HINT = "pip install -U 'transformers>=4.57,<6'"


class NativePreset(ModelPreset):
    def preflight(self) -> None:
        import transformers

        check_version_range(
            "transformers", transformers.__version__, NATIVE_TRANSFORMERS_RANGE, NATIVE_HINT
        )


# Shared by the Llama-style decoders (Qwen3-VL, Gemma 3): separate q/k/v and gate/up.
LM_ATTENTION_MLP = (
    r"model\.language_model\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)
# A GPU run of a 2-5 B model: bf16 where supported, activations recomputed, LoRA's usual lr.
GPU_DEFAULTS: dict[str, Any] = {
    "bf16": "auto",
    "learning_rate": 1e-4,
    "per_device_batch_size": 8,
    "gradient_checkpointing": True,
    "num_epochs": 1.0,
    "eval_every_steps": 100,
    "save_every_steps": 100,
}


@functools.cache
def qwen_vl_image_processor_class() -> type:
    """Qwen3-VL's processor without its video half. transformers builds a video processor only
    with torchvision, which a bare GPU box lacks; catalogue rows are single images, and the
    image path (Qwen2-VL's image processor, the token expansion) is the family's own code."""
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class QwenVLImageProcessor(Qwen3VLProcessor):
        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None
        ) -> None:
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token = None
            self.vision_start_token = "<|vision_start|>"
            self.vision_end_token = "<|vision_end|>"
            self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
            self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)

    return QwenVLImageProcessor


class Qwen3VLPreset(NativePreset):
    """Qwen3-VL (2B instruct: the size that fine-tunes on one 24 GB GPU with LoRA)."""

    name = "qwen3-vl"
    model_id = "Qwen/Qwen3-VL-2B-Instruct"
    revision = None
    lora_target_modules = LM_ATTENTION_MLP
    vision_lora_target_modules = (
        r"model\.visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(linear_fc1|linear_fc2))"
    )
    end_text = "<|im_end|>"
    gpu_defaults = GPU_DEFAULTS
    # A catalogue picture needs no more than ~256 visual tokens (32 px each after the merge);
    # the hub default allows ~16k, which would dominate every sequence.
    max_image_pixels = 512 * 512

    def load_processor(self, ref: BaseRef) -> Any:
        processor_class = qwen_vl_image_processor_class()
        processor = processor_class.from_pretrained(ref.path, **self._hub_kwargs(ref))
        size = dict(processor.image_processor.size)
        size["longest_edge"] = min(size.get("longest_edge", self.max_image_pixels),
                                   self.max_image_pixels)  # fmt: skip
        processor.image_processor.size = size
        return processor


class Gemma3Preset(NativePreset):
    """Gemma 3 (4B instruct, SigLIP tower; 256 soft tokens per image)."""

    name = "gemma3"
    model_id = "google/gemma-3-4b-it"
    revision = None
    lora_target_modules = LM_ATTENTION_MLP
    vision_lora_target_modules = (
        r"model\.vision_tower\.encoder\.layers\.\d+\."
        r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    )
    end_text = "<end_of_turn>"
    nested_images = True  # Gemma3Processor takes one list of images per text
    gpu_defaults = GPU_DEFAULTS

    def non_text_token_ids(self, processor: Any) -> list[int]:
        """The begin/soft/end image tokens the processor expands one placeholder into."""
        tokenizer = processor.tokenizer
        names = ("boi_token", "image_token", "eoi_token")
        tokens = [getattr(tokenizer, name, None) for name in names]
        return [tokenizer.convert_tokens_to_ids(t) for t in tokens if t]


PHI4_EXTRA_HINT = "pip install 'catalogue-vlm[phi4]'  (torchvision)"


class Phi4MultimodalPreset(NativePreset):
    """Phi-4-multimodal through transformers' native Phi4Multimodal classes, vision path only
    (audio inputs are never passed). Its image processor exists only as a torchvision backend,
    so the preset needs torchvision (the `phi4` extra), which the CPU test env cannot import."""

    name = "phi4-multimodal"
    model_id = "microsoft/Phi-4-multimodal-instruct"
    # The hub repo's main branch is remote code; transformers' docs load the native weights
    # from this branch.
    revision = "refs/pr/70"
    lora_target_modules = (
        r"model\.layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))"
    )
    vision_lora_target_modules = (
        r"model\.embed_tokens_extend\.image_embed\.img_processor\.encoder\.layers\.\d+\."
        r"(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))"
    )
    end_text = "<|end|>"
    gpu_defaults = GPU_DEFAULTS

    def preflight(self) -> None:
        super().preflight()
        check_torchvision(self.name, PHI4_EXTRA_HINT)

    def load_model(self, ref: BaseRef, dtype: Any, quantization: Any = None) -> Any:
        from transformers import AutoModelForCausalLM

        from training.preset_base import dtype_kwargs, quant_kwargs

        kwargs = {**self._hub_kwargs(ref), **dtype_kwargs(dtype), **quant_kwargs(quantization)}
        return AutoModelForCausalLM.from_pretrained(ref.path, **kwargs)


HUB_PRESETS: tuple[ModelPreset, ...] = (Qwen3VLPreset(), Gemma3Preset(), Phi4MultimodalPreset())
