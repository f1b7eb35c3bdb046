"""Each preset loads through its real code path from a tiny local checkpoint (no hub).

phi3-vision's modelling code lives on the hub (trust_remote_code) and needs transformers<4.48,
so offline we test what can be tested honestly: the version preflight and its message, the
pinned revision, the LoRA target regex against the checkpoint's real module names, the prompt
format, and the per-sample batch encoding with a stand-in processor. Loading real weights is
not tested here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.conftest import tiny_train_config
from training.collate import IGNORE_INDEX, Sample, VLMCollator
from training.data import SampleView, load_splits, tokenizer_corpus
from training.optim import attach_lora
from training.preset_base import check_version_range, lora_matches
from training.presets import PRESETS, Phi3VisionPreset, get_preset
from training.tiny import train_tokenizer

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def build_tiny_smolvlm(corpus: list[str], target: Path) -> Path:
    """A random Idefics3 (SmolVLM's architecture) saved like a hub snapshot."""
    import transformers
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    specials = ["<fake_token_around_image>", "<end_of_utterance>", "<global-img>", "<|im_start|>"]
    tokenizer = train_tokenizer(corpus, 512, extra_special_tokens=specials)
    vision = Idefics3VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=64, patch_size=16,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = Idefics3Config(
        vision_config=vision, text_config=text, scale_factor=2, image_token_id=image_id
    )
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(config)
    image_cls = getattr(transformers, "Idefics3ImageProcessorPil", None)
    image_processor = (image_cls or transformers.Idefics3ImageProcessor)(
        do_image_splitting=False, size={"longest_edge": 64}, max_image_size={"longest_edge": 64}
    )
    processor = Idefics3Processor(
        image_processor, tokenizer, image_seq_len=4, chat_template=SMOLVLM_TEMPLATE
    )
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def corpus(tiny_dataset_dir: Path) -> list[str]:
    return tokenizer_corpus(load_splits(str(tiny_dataset_dir))["train"])


def test_registry_and_unknown_preset():
    assert {"tiny", "smolvlm", "phi3-vision", "qwen3-vl", "gemma3", "phi4-multimodal"} <= set(
        PRESETS
    )
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("gpt-17")


def test_tiny_builds_once_and_loads_like_a_hub_model(
    tiny_dataset_dir, tiny_cache_dir, tmp_path, corpus
):
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    preset = get_preset("tiny")
    config = tiny_train_config(tiny_dataset_dir, tiny_cache_dir, tmp_path)
    ref = preset.resolve(config, lambda: corpus)
    stamp = (Path(ref.path) / "model.safetensors").stat().st_mtime_ns
    again = preset.resolve(config, lambda: corpus)
    assert again == ref and (Path(ref.path) / "model.safetensors").stat().st_mtime_ns == stamp
    model = preset.load_model(ref, torch.float32)
    assert isinstance(model, LlavaForConditionalGeneration)
    assert isinstance(preset.load_processor(ref), LlavaProcessor)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 2e7
    names = [n for n, _ in model.named_modules()]
    targets = lora_matches(preset, names)
    assert targets and all("language_model" in n for n in targets)
    other = preset.resolve(config, lambda: [*corpus, "a new word: zyzzyva"])
    assert other.path != ref.path  # corpus is part of the cache key


def test_smolvlm_preset_loads_local_idefics3_and_trains(tiny_dataset_dir, tmp_path, corpus):
    from transformers import Idefics3ForConditionalGeneration

    path = build_tiny_smolvlm(corpus, tmp_path / "smol")
    preset = get_preset("smolvlm")
    config = tiny_train_config(tiny_dataset_dir, tmp_path, tmp_path, preset="smolvlm")
    config.base_model = str(path)
    ref = preset.resolve(config, lambda: [])
    assert ref.path == str(path) and ref.is_local()
    processor = preset.load_processor(ref)
    model = preset.load_model(ref, torch.float32)
    assert isinstance(model, Idefics3ForConditionalGeneration)
    view = SampleView(load_splits(str(tiny_dataset_dir))["train"])
    batch = VLMCollator(processor, preset)([view[0], view[1]])
    learned = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    assert processor.tokenizer.decode(learned) == " " + view[0].answer + "<end_of_utterance>"
    peft_model = attach_lora(model, preset, config)
    loss = peft_model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss)
    lora_grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    targets = lora_matches(preset, [n for n, _ in model.named_modules()])
    assert targets and all("text_model" in n for n in targets)


def test_phi3_preflight_names_the_extra_on_unsupported_transformers():
    import transformers

    from training.preset_base import PHI3_TRANSFORMERS_RANGE

    with pytest.raises(RuntimeError, match=re.escape("catalogue-vlm[phi3]")):
        check_version_range(
            "transformers", "5.23.0", PHI3_TRANSFORMERS_RANGE, "pip install 'catalogue-vlm[phi3]'"
        )
    check_version_range("transformers", "4.47.1", PHI3_TRANSFORMERS_RANGE, "x")  # accepted
    if not transformers.__version__.startswith("4.4"):
        with pytest.raises(RuntimeError, match=r"transformers>=4\.40,<4\.48"):
            Phi3VisionPreset().preflight()


def test_phi3_config_revision_and_lora_targets():
    preset = get_preset("phi3-vision")
    assert preset.model_id == "microsoft/Phi-3-vision-128k-instruct"
    assert preset.trust_remote_code
    assert re.fullmatch(r"[0-9a-f]{40}", preset.revision or "")
    # module names of the real checkpoint (modeling_phi3_v.py), language side and vision side
    names = [
        "model.layers.0.self_attn.qkv_proj",
        "model.layers.31.self_attn.o_proj",
        "model.layers.3.mlp.gate_up_proj",
        "model.layers.3.mlp.down_proj",
        "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj",
        "model.vision_embed_tokens.img_projection.0",
        "lm_head",
    ]
    assert lora_matches(preset, names) == names[:4]
    prompt = preset.prompt_text(None, "What is shown in this image?")
    assert prompt == "<|user|>\n<|image_1|>\nWhat is shown in this image?<|end|>\n<|assistant|>\n"


class FakePhi3Processor:
    """Stands in for the remote Phi3VProcessor: one text + one image per call, image positions
    as negative ids, fixed-size crops."""

    class Tok:
        pad_token_id = 0
        padding_side = "right"

        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return [ord(c) % 50 + 1 for c in text]

    tokenizer = Tok()

    def __call__(self, text: str, images: list[Any], return_tensors: str) -> dict[str, Any]:
        ids = self.tokenizer.encode(text.replace("<|image_1|>", ""))
        ids = ids[:3] + [-1] * 5 + ids[3:]
        return {
            "input_ids": torch.tensor([ids]),
            "pixel_values": torch.zeros(1, 5, 3, 8, 8),
            "image_sizes": torch.tensor([[8, 8]]),
        }


def test_phi3_batches_are_encoded_per_sample_and_placeholders_masked():
    preset = get_preset("phi3-vision")
    processor = FakePhi3Processor()
    samples = [
        Sample(None, "Q?", "Product: A, Category: B, Full Price: 1"),
        Sample(None, "Q?", "x"),
    ]
    batch = VLMCollator(processor, preset)(samples)
    assert batch["pixel_values"].shape == (2, 5, 3, 8, 8)
    assert batch["input_ids"].shape[1] == int(batch["attention_mask"].sum(1).max())
    assert (batch["labels"][batch["input_ids"] < 0] == IGNORE_INDEX).all()
    answer_len = len(processor.tokenizer.encode(samples[1].answer + "<|end|>"))
    assert int((batch["labels"][1] != IGNORE_INDEX).sum()) == answer_len
