"""Every native hub preset, end to end on a tiny random instance of its real architecture.

The folder a family builder saves stands in for the hub snapshot: the preset loads it through
the same from_pretrained code a hub id takes (only the download is skipped), trains a few LoRA
steps, answers, is scored by training.evaluate, and its adapter reloads through
PeftModel.from_pretrained.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_train_config
from tests.training.families import BUILDERS, phi4_multimodal_module_names
from training.collate import IGNORE_INDEX, VLMCollator
from training.data import SampleView, load_splits, tokenizer_corpus
from training.preset_base import BaseRef, lora_matches
from training.presets import get_preset, train_config_for

VISION_PARTS = ("visual", "vision_tower", "img_processor")


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def family(request, tiny_dataset_dir, tmp_path_factory) -> tuple[str, Path]:
    corpus = tokenizer_corpus(load_splits(str(tiny_dataset_dir))["train"])
    name = request.param
    return name, BUILDERS[name](corpus, tmp_path_factory.mktemp(name))


def test_labels_are_the_answer_and_terminator_only(family, tiny_dataset_dir):
    name, path = family
    preset = get_preset(name)
    processor = preset.load_processor(BaseRef(str(path), preset.model_id, None))
    view = SampleView(load_splits(str(tiny_dataset_dir))["train"])
    samples = [view[0], view[1], view[2]]
    batch = VLMCollator(processor, preset)(samples)
    image_ids = set(preset.non_text_token_ids(processor))
    assert image_ids and processor.image_token_id in batch["input_ids"]
    for row, sample in enumerate(samples):
        labels = batch["labels"][row]
        learned = labels[labels != IGNORE_INDEX]
        assert processor.tokenizer.decode(learned) == sample.answer + preset.end_text
        first = int((labels != IGNORE_INDEX).nonzero()[0])
        prompt = batch["input_ids"][row, :first].tolist()
        assert image_ids & set(prompt)  # the image placeholders sit in the masked prompt
        assert not image_ids & set(learned.tolist())
        padding = batch["attention_mask"][row] == 0
        assert (labels[padding] == IGNORE_INDEX).all()


def test_lora_targets_hit_the_language_model_and_optionally_the_tower(family):
    name, path = family
    preset = get_preset(name)
    model = preset.load_model(BaseRef(str(path), preset.model_id, None), torch.float32)
    names = [n for n, _ in model.named_modules()]
    text = lora_matches(preset, names)
    # 2 layers x (4 attention + 3 MLP projections)
    assert len(text) == 14 and all("language_model" in n for n in text)
    both = lora_matches(preset, names, adapt_vision=True)
    tower = sorted(set(both) - set(text))
    assert tower and all(any(part in n for part in VISION_PARTS) for n in tower)
    assert set(text) < set(both)


def test_trains_evaluates_and_reloads_end_to_end(family, tiny_dataset_dir, tmp_path):
    from peft import PeftModel

    from training.artefacts import load_model_for_eval
    from training.config import EvalConfig
    from training.evaluate import evaluate
    from training.train import train

    name, path = family
    preset = get_preset(name)
    config = tiny_train_config(
        tiny_dataset_dir, tmp_path / "cache", tmp_path / "run", preset=name,
        base_model=str(path), max_steps=3, per_device_batch_size=4, adapt_vision=True,
    )  # fmt: skip
    result = train(config)
    out = Path(result.output_dir)
    adapter = load_file(str(out / "adapter/adapter_model.safetensors"))
    lora_b = [t for k, t in adapter.items() if "lora_B" in k]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # the optimizer steps moved B
    assert any(any(part in k for part in VISION_PARTS) for k in adapter)  # adapt_vision
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["base_model"]["preset"] == name
    assert lineage["base_model"]["id"] == preset.model_id
    assert lineage["base_model"]["path"] == str(path)
    model, processor, reloaded = load_model_for_eval(out)
    assert isinstance(model, PeftModel) and reloaded is preset
    metrics = evaluate(
        EvalConfig(
            dataset_dir=str(tiny_dataset_dir), model_dir=str(out), output_dir=str(tmp_path),
            max_samples=4, max_new_tokens=6, batch_size=4,
        )
    )  # fmt: skip
    assert metrics["n_test"] == 4
    assert 0.0 <= metrics["tuned"]["parse_rate"] <= 1.0
    assert len(metrics["samples"]) == 4 and all(
        "tuned" in s and "base" in s for s in metrics["samples"]
    )


def test_phi4_multimodal_targets_match_its_real_module_names():
    preset = get_preset("phi4-multimodal")
    names = phi4_multimodal_module_names()
    text = lora_matches(preset, names)
    assert len(text) == 8 and all(n.startswith("model.layers.") for n in text)
    tower = set(lora_matches(preset, names, adapt_vision=True)) - set(text)
    assert len(tower) == 12 and all("img_processor.encoder" in n for n in tower)


def test_phi4_multimodal_names_its_torchvision_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "torchvision" else real(n, *a)
    )
    with pytest.raises(RuntimeError, match=re.escape("catalogue-vlm[phi4]")):
        get_preset("phi4-multimodal").preflight()


@pytest.mark.parametrize("name", ["qwen3-vl", "gemma3", "phi4-multimodal"])
def test_gpu_defaults_apply_under_explicit_values(name):
    config = train_config_for(name, learning_rate=3e-5)
    assert config.preset == name and config.learning_rate == 3e-5
    assert config.gradient_checkpointing and config.bf16 == "auto"
    assert get_preset(name).model_id.count("/") == 1


def test_qlora_is_refused_on_cpu_with_the_reason():
    from training.runtime import four_bit_quantization

    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        four_bit_quantization(torch.device("cpu"))
