"""Model presets: everything model-specific lives here, so train/evaluate stay model-agnostic.

A preset knows its hub id + pinned revision, how to load model and processor (always through
`from_pretrained`, also for the locally built `tiny` base), how to turn a question (and answer)
into the model's chat format, and which modules LoRA adapts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from training.config import TrainConfig

if TYPE_CHECKING:
    from training.tiny import VisionPretrainData


@dataclass(frozen=True)
class BaseRef:
    """A resolved base model: what to pass to from_pretrained, and what lineage records."""

    path: str  # local folder or hub id
    model_id: str  # canonical name (hub id, or "tiny")
    revision: str | None  # hub revision; for tiny, the cache key of the local build

    def is_local(self) -> bool:
        return os.path.isdir(self.path)


class ModelPreset:
    name: ClassVar[str]
    model_id: ClassVar[str]
    revision: ClassVar[str | None] = None
    trust_remote_code: ClassVar[bool] = False
    # A regex (peft full-matches it against module names) or a list of name suffixes.
    lora_target_modules: ClassVar[str | list[str]]
    # Modules trained in full and saved inside the adapter.
    modules_to_save: ClassVar[tuple[str, ...]] = ()
    # Text between the generation prompt and the answer, and the turn terminator after it;
    # the terminator is in the loss so the model learns to stop.
    answer_prefix: ClassVar[str] = ""
    end_text: ClassVar[str]
    # Idefics3-style processors want one list of images per text.
    nested_images: ClassVar[bool] = False

    def preflight(self) -> None:
        """Fail fast, with the fix in the message, before anything is downloaded."""

    def resolve(
        self,
        config: TrainConfig,
        corpus: Callable[[], list[str]],
        vision_data: VisionPretrainData | None = None,
    ) -> BaseRef:
        """`corpus` and `vision_data` only matter to presets built locally (tiny)."""
        path = config.base_model or self.model_id
        return BaseRef(path=path, model_id=self.model_id, revision=config.revision or self.revision)

    def _hub_kwargs(self, ref: BaseRef) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if not ref.is_local() and ref.revision:
            kwargs["revision"] = ref.revision
        return kwargs

    def load_processor(self, ref: BaseRef) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(ref.path, **self._hub_kwargs(ref))

    def load_model(self, ref: BaseRef, dtype: Any) -> Any:
        from transformers import AutoModelForImageTextToText

        kwargs = {**self._hub_kwargs(ref), **dtype_kwargs(dtype)}
        return AutoModelForImageTextToText.from_pretrained(ref.path, **kwargs)

    def prompt_text(self, processor: Any, question: str) -> str:
        """The generation prompt for one image + question (also the unlabelled prefix)."""
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def answer_text(self, answer: str) -> str:
        return f"{self.answer_prefix}{answer}{self.end_text}"

    def encode(
        self, processor: Any, texts: Sequence[str], images: Sequence[Any], padding_side: str
    ) -> dict[str, Any]:
        """Tokenise a batch (image tokens expanded by the processor), padded to its longest."""
        processor.tokenizer.padding_side = padding_side
        batch_images = [[image] for image in images] if self.nested_images else list(images)
        encoded = processor(
            text=list(texts), images=batch_images, padding="longest", return_tensors="pt"
        )
        return dict(encoded)

    def stop_token_ids(self, processor: Any) -> list[int]:
        ids = processor.tokenizer.encode(self.end_text, add_special_tokens=False)
        return [ids[-1]]

    def non_text_token_ids(self, processor: Any) -> list[int]:
        """Token ids never trained on even inside the answer span (image placeholders)."""
        token_id = getattr(processor, "image_token_id", None)
        return [token_id] if isinstance(token_id, int) else []


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """transformers renamed `torch_dtype` to `dtype` (4.56); the phi3 extra pins an older one."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.56"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


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

    def resolve(
        self,
        config: TrainConfig,
        corpus: Callable[[], list[str]],
        vision_data: VisionPretrainData | None = None,
    ) -> BaseRef:
        from training.tiny import TinyArchitecture, default_cache_root, ensure_tiny_base

        if config.base_model:  # an existing build (evaluation, or a shared cache)
            return BaseRef(path=config.base_model, model_id="tiny", revision=config.revision)
        arch = TinyArchitecture(image_size=config.image_size)
        root = Path(config.cache_dir) if config.cache_dir else default_cache_root()
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


# Phi-3-vision's remote code (modeling_phi3_v.py) calls DynamicCache.get_max_length and
# seen_tokens, removed in transformers 4.48/4.49; it needs >= 4.40 for its Phi-3 tokenizer.
PHI3_TRANSFORMERS_RANGE = (">=4.40", "<4.48")
PHI3_EXTRA_HINT = "pip install 'catalogue-vlm[phi3]'  (transformers>=4.40,<4.48)"


def check_version_range(package: str, installed: str, spec: tuple[str, str], hint: str) -> None:
    from packaging.specifiers import SpecifierSet

    if installed not in SpecifierSet(",".join(spec)):
        raise RuntimeError(
            f"{package} {installed} is installed, but this preset needs {package}"
            f"{','.join(spec)}. Install the matching extra: {hint}"
        )


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

    def load_model(self, ref: BaseRef, dtype: Any) -> Any:
        from transformers import AutoModelForCausalLM

        # eager attention: the checkpoint's config asks for flash-attn, which is optional here.
        kwargs = {**self._hub_kwargs(ref), **dtype_kwargs(dtype), "_attn_implementation": "eager"}
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
    preset.name: preset for preset in (TinyPreset(), SmolVLMPreset(), Phi3VisionPreset())
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


def lora_matches(preset: ModelPreset, module_names: Sequence[str]) -> list[str]:
    """Module names the preset's LoRA targets hit (same full-match rule as peft's regex)."""
    target = preset.lora_target_modules
    if isinstance(target, str):
        return [name for name in module_names if re.fullmatch(target, name)]
    return [name for name in module_names if any(name.endswith(t) for t in target)]
