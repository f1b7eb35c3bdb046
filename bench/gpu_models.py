"""Random stand-ins of the reference and a 2026 model, built from config alone (no hub, no
weights), for bench.training_gpu: a Phi-3-vision-sized LLaVA and a Qwen3-VL-4B-sized Qwen3-VL.

Each knows how to build itself on the device in the dtype, the token ids of one image in a
row, the pixel inputs its vision tower takes, and the preset whose LoRA targets it uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from training.hub_presets import Qwen3VLPreset
from training.preset_base import ModelPreset
from training.presets import TinyPreset
from training.tiny import LlavaPhi3Dims, llava_phi3_config


def on_device(factory: Any, config: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """Random init directly on the device and in the dtype: no 16 GB fp32 copy on the host."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return factory(config)
    finally:
        torch.set_default_dtype(previous)


class StandInPreset(TinyPreset):
    """The tiny preset's LoRA targets (the same LLaVA module names); like the phi3-vision
    preset, nothing else is trained: embeddings and head stay frozen at this size."""

    modules_to_save = ()


class TopOfVocab:
    """Special tokens hold the top ids of the vocabulary, as in the models' own tokenizers:
    SPECIALS[0] is vocab_size - 1, the next one the id below, and so on."""

    SPECIALS: ClassVar[tuple[str, ...]]
    vocab_size: int

    def special_id(self, name: str) -> int:
        return self.vocab_size - 1 - self.SPECIALS.index(name)

    @property
    def pad_id(self) -> int:
        return self.special_id("pad")

    @property
    def image_id(self) -> int:
        return self.special_id("image")


@dataclass(frozen=True)
class LlavaSize(TopOfVocab):
    """Phi-3-vision's size by default: CLIP ViT-L/14 tower (24 layers, 1024 wide) and a
    Phi-3-mini decoder (32 layers, 3072 wide), ~4.1 B parameters. 224 px (256 image tokens)
    rather than its 336 px HD crops keeps one image under the seed's 512 tokens."""

    image_size: int = 224
    patch_size: int = 14
    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    text_hidden: int = 3072
    text_intermediate: int = 8192
    text_layers: int = 32
    text_heads: int = 32
    vocab_size: int = 32064
    question_tokens: int = 12  # "<|user|>", "What is shown in this image?", "<|assistant|>"
    answer_tokens: tuple[int, int] = (20, 45)  # min, max: the catalogue's answers
    name: str = "Phi-3-vision-sized LLaVA"
    SPECIALS: ClassVar[tuple[str, ...]] = ("image", "pad")

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def image_block(self) -> torch.Tensor:
        return torch.full((self.image_tokens,), self.image_id)

    def vision_inputs(self, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        shape = (rows, 3, self.image_size, self.image_size)
        return {"pixel_values": torch.randn(shape, generator=generator)}

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def preset(self) -> ModelPreset:
        return StandInPreset()

    def build(self, dtype: torch.dtype, device: torch.device) -> Any:
        from transformers import LlavaForConditionalGeneration

        dims = LlavaPhi3Dims(
            image_size=self.image_size, patch_size=self.patch_size,
            vision_hidden=self.vision_hidden, vision_intermediate=self.vision_intermediate,
            vision_layers=self.vision_layers, vision_heads=self.vision_heads,
            vocab_size=self.vocab_size, text_hidden=self.text_hidden,
            text_intermediate=self.text_intermediate, text_layers=self.text_layers,
            text_heads=self.text_heads, max_positions=4096, pad_id=self.pad_id,
            image_id=self.image_id, vision_feature_layer=-2,
        )  # fmt: skip
        return on_device(LlavaForConditionalGeneration, llava_phi3_config(dims), dtype, device)


@dataclass(frozen=True)
class QwenSize(TopOfVocab):
    """Qwen3-VL-4B's size by default: a 24-layer, 1024-wide ViT (patch 16, 2 x 2 merge,
    deepstack taps) and a 36-layer, 2560-wide decoder (GQA 32/8), vocab 151936, ~4.4 B
    parameters. 512 px = 32 x 32 patches = 256 visual tokens, as many as the LLaVA's."""

    image_size: int = 512
    patch_size: int = 16
    merge: int = 2
    vision_hidden: int = 1024
    vision_intermediate: int = 4096
    vision_layers: int = 24
    vision_heads: int = 16
    deepstack: tuple[int, ...] = (5, 11, 17)
    text_hidden: int = 2560
    text_intermediate: int = 9728
    text_layers: int = 36
    text_heads: int = 32
    text_kv_heads: int = 8
    head_dim: int = 128
    mrope_section: tuple[int, int, int] = (24, 20, 20)
    vocab_size: int = 151936
    question_tokens: int = 12
    answer_tokens: tuple[int, int] = (20, 45)
    name: str = "Qwen3-VL-4B-sized Qwen3-VL"
    SPECIALS: ClassVar[tuple[str, ...]] = ("pad", "image", "vision_start", "vision_end", "video")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def image_tokens(self) -> int:
        return self.grid**2 // self.merge**2

    def image_block(self) -> torch.Tensor:
        image = torch.full((self.image_tokens,), self.image_id)
        start = torch.tensor([self.special_id("vision_start")])
        end = torch.tensor([self.special_id("vision_end")])
        return torch.cat([start, image, end])

    def vision_inputs(self, rows: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Qwen's flattened patches: (rows x grid^2, 3 x temporal 2 x patch^2), one frame."""
        width = 3 * 2 * self.patch_size**2
        pixels = torch.randn((rows * self.grid**2, width), generator=generator)
        grid = torch.tensor([[1, self.grid, self.grid]] * rows)
        return {"pixel_values": pixels, "image_grid_thw": grid}

    def extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """M-RoPE needs to know which positions are image tokens (1) and which text (0)."""
        return {"mm_token_type_ids": (input_ids == self.image_id).long()}

    def preset(self) -> ModelPreset:
        return Qwen3VLPreset()

    def build(self, dtype: torch.dtype, device: torch.device) -> Any:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        rope = {"rope_type": "default", "rope_theta": 5_000_000.0,
                "mrope_section": list(self.mrope_section), "mrope_interleaved": True}  # fmt: skip
        config = Qwen3VLConfig(
            text_config={
                "vocab_size": self.vocab_size, "hidden_size": self.text_hidden,
                "intermediate_size": self.text_intermediate,
                "num_hidden_layers": self.text_layers, "num_attention_heads": self.text_heads,
                "num_key_value_heads": self.text_kv_heads, "head_dim": self.head_dim,
                "rope_parameters": rope, "pad_token_id": self.pad_id,
                "max_position_embeddings": 8192,
            },
            vision_config={
                "depth": self.vision_layers, "hidden_size": self.vision_hidden,
                "intermediate_size": self.vision_intermediate, "num_heads": self.vision_heads,
                "patch_size": self.patch_size, "spatial_merge_size": self.merge,
                "temporal_patch_size": 2, "out_hidden_size": self.text_hidden,
                "num_position_embeddings": 2304, "deepstack_visual_indexes": list(self.deepstack),
            },
            image_token_id=self.image_id, video_token_id=self.special_id("video"),
            vision_start_token_id=self.special_id("vision_start"),
            vision_end_token_id=self.special_id("vision_end"),
            tie_word_embeddings=True,
        )  # fmt: skip
        return on_device(Qwen3VLForConditionalGeneration, config, dtype, device)


LLAVA_TINY = LlavaSize(
    image_size=28, patch_size=14, vision_hidden=32, vision_intermediate=64, vision_layers=2,
    vision_heads=2, text_hidden=64, text_intermediate=128, text_layers=2, text_heads=2,
    vocab_size=512,
)  # fmt: skip
QWEN_TINY = QwenSize(
    image_size=64, vision_hidden=32, vision_intermediate=64, vision_layers=2, vision_heads=2,
    deepstack=(1,), text_hidden=64, text_intermediate=128, text_layers=2, text_heads=2,
    text_kv_heads=1, head_dim=32, mrope_section=(4, 6, 6), vocab_size=512,
)  # fmt: skip
