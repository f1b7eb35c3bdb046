"""What every model preset is: the interface train/evaluate call, and its shared helpers.

A preset knows its hub id + pinned revision, how to load model and processor (always through
`from_pretrained`), how to turn a question (and answer) into the model's chat format, which
token ids never carry loss, and which modules LoRA adapts. The presets themselves live in
training.presets (local and remote-code ones) and training.hub_presets (native transformers).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from training.config import TrainConfig

if TYPE_CHECKING:
    from training.tiny import VisionPretrainData

# The text a locally built base's tokenizer is trained on, read only when a build is due.
Corpus = Callable[[], list[str]]


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
    # A regex (peft full-matches it against module names) or a list of name suffixes: the
    # language model's attention + MLP projections.
    lora_target_modules: ClassVar[str | list[str]]
    # The vision tower's, adapted only with TrainConfig.adapt_vision (a regex; "" = none).
    vision_lora_target_modules: ClassVar[str] = ""
    # Modules trained in full and saved inside the adapter.
    modules_to_save: ClassVar[tuple[str, ...]] = ()
    # Text between the generation prompt and the answer, and the turn terminator after it;
    # the terminator is in the loss so the model learns to stop.
    answer_prefix: ClassVar[str] = ""
    end_text: ClassVar[str]
    # Idefics3-style processors want one list of images per text.
    nested_images: ClassVar[bool] = False

    # TrainConfig values a GPU run of this preset starts from (train_config_for applies them).
    gpu_defaults: ClassVar[dict[str, Any]] = {}

    def preflight(self) -> None:
        """Fail fast, with the fix in the message, before anything is downloaded."""

    def lora_targets(self, adapt_vision: bool = False) -> str | list[str]:
        if not adapt_vision:
            return self.lora_target_modules
        if not self.vision_lora_target_modules or not isinstance(self.lora_target_modules, str):
            raise ValueError(f"preset {self.name!r} has no vision LoRA targets")
        return f"(?:{self.lora_target_modules})|(?:{self.vision_lora_target_modules})"

    def resolve(
        self, config: TrainConfig, corpus: Corpus, vision_data: VisionPretrainData | None = None
    ) -> BaseRef:
        """The base to load: `config.base_model` when set (an existing build, a local copy),
        else what the preset builds (`build_base`) or its hub id at its pinned revision."""
        if not config.base_model:
            built = self.build_base(config, corpus, vision_data)
            if built is not None:
                return built
        path = config.base_model or self.model_id
        return BaseRef(path=path, model_id=self.model_id, revision=config.revision or self.revision)

    def build_base(
        self, config: TrainConfig, corpus: Corpus, vision_data: VisionPretrainData | None
    ) -> BaseRef | None:
        """A base built here rather than downloaded (tiny); None for hub presets. `corpus` is
        called only when a build is due."""
        return None

    def _hub_kwargs(self, ref: BaseRef) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if not ref.is_local() and ref.revision:
            kwargs["revision"] = ref.revision
        return kwargs

    def load_processor(self, ref: BaseRef) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(ref.path, **self._hub_kwargs(ref))

    def load_model(self, ref: BaseRef, dtype: Any, quantization: Any = None) -> Any:
        """`quantization`: a transformers BitsAndBytesConfig for QLoRA (training.quantize)."""
        from transformers import AutoModelForImageTextToText

        kwargs = {**self._hub_kwargs(ref), **dtype_kwargs(dtype), **quant_kwargs(quantization)}
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


def quant_kwargs(quantization: Any) -> dict[str, Any]:
    # device_map pins the quantized weights to this process's GPU (one per rank under DDP).
    if quantization is None:
        return {}
    import torch

    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """transformers renamed `torch_dtype` to `dtype` (4.56); the phi3 extra pins an older one."""
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) >= Version("4.56"):
        return {"dtype": dtype}
    return {"torch_dtype": dtype}


# Phi-3-vision's remote code (modeling_phi3_v.py) calls DynamicCache.get_max_length and
# seen_tokens, removed in transformers 4.48/4.49; it needs >= 4.40 for its Phi-3 tokenizer.
PHI3_TRANSFORMERS_RANGE = (">=4.40", "<4.48")
PHI3_EXTRA_HINT = (
    "pip install 'catalogue-vlm[phi3]' (transformers>=4.40,<4.48) in a separate environment: "
    "the pipeline's own transformers cannot run Phi-3-vision's remote code. In this "
    "environment the Phi family is preset 'phi4-multimodal'"
)


def check_version_range(package: str, installed: str, spec: tuple[str, str], hint: str) -> None:
    from packaging.specifiers import SpecifierSet

    if installed not in SpecifierSet(",".join(spec)):
        raise RuntimeError(
            f"{package} {installed} is installed, but this preset needs {package}"
            f"{','.join(spec)}. Install the matching extra: {hint}"
        )


def lora_matches(
    preset: ModelPreset, module_names: Sequence[str], adapt_vision: bool = False
) -> list[str]:
    """Module names the preset's LoRA targets hit (same full-match rule as peft's regex)."""
    target = preset.lora_targets(adapt_vision)
    if isinstance(target, str):
        return [name for name in module_names if re.fullmatch(target, name)]
    return [name for name in module_names if any(name.endswith(t) for t in target)]


def check_torchvision(preset: str, hint: str) -> None:
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        raise RuntimeError(
            f"preset {preset!r} needs torchvision (its image processor is torchvision-only in "
            f"transformers). Install it: {hint}"
        )
