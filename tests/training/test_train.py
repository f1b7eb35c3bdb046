"""Training behaviour on the tiny preset: learning, resuming, reloading, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_train_config
from training import train as train_mod
from training.artefacts import load_model_for_eval
from training.collate import VLMCollator
from training.data import SampleView
from training.run import setup
from training.train import save_adapter, train, train_loop, validation_loss


def test_a_few_steps_lower_the_validation_loss(tiny_dataset_dir, tiny_cache_dir, tmp_path):
    config = tiny_train_config(tiny_dataset_dir, tiny_cache_dir, tmp_path, max_steps=8)
    run = setup(config)
    before = validation_loss(run)
    train_loop(run)
    after = validation_loss(run)
    assert after < before - 0.5, (before, after)


def test_saved_adapter_reloads_with_identical_logits(tiny_dataset_dir, tiny_cache_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    run = setup(tiny_train_config(tiny_dataset_dir, tiny_cache_dir, tmp_path, max_steps=3))
    train_loop(run)
    save_adapter(run, tmp_path / "saved")
    view = SampleView(run.dataset["test"])
    batch = VLMCollator(run.processor, run.preset)([view[0], view[1]])
    batch.pop("labels")
    run.model.eval()
    with torch.no_grad():
        expected = run.model(**batch).logits
        base = AutoModelForImageTextToText.from_pretrained(run.ref.path)
        reloaded = PeftModel.from_pretrained(base, str(tmp_path / "saved")).eval()
        got = reloaded(**batch).logits
        with reloaded.disable_adapter():
            untuned = reloaded(**batch).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(untuned, expected, atol=1e-3)  # the adapter does something


def test_resume_after_crash_matches_an_uninterrupted_run(
    tiny_dataset_dir, tiny_cache_dir, tmp_path, monkeypatch
):
    settings = {"max_steps": 6, "save_every_steps": 2, "lora_dropout": 0.1}
    straight = train(
        tiny_train_config(tiny_dataset_dir, tiny_cache_dir, tmp_path / "a", **settings)
    )
    assert straight.resumed_from_step is None

    real_save = train_mod.save_checkpoint

    def save_then_crash(root, model, optimizer, scheduler, state, *extra):
        path = real_save(root, model, optimizer, scheduler, state, *extra)
        if state.step == 4:
            raise KeyboardInterrupt("simulated crash after step 4")
        return path

    config = tiny_train_config(tiny_dataset_dir, tiny_cache_dir, tmp_path / "b", **settings)
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
    resumed = train(config)
    assert resumed.resumed_from_step == 4
    assert resumed.steps == 6

    def final_weights(root: Path) -> dict[str, torch.Tensor]:
        return load_file(str(root / "checkpoints/step-00000006/adapter/adapter_model.safetensors"))

    a, b = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_outputs_and_lineage(trained_run, tiny_dataset_dir):
    out = Path(trained_run.output_dir)
    assert (out / "adapter/adapter_model.safetensors").exists()
    assert (out / "adapter/adapter_config.json").exists()
    assert (out / "processor/tokenizer.json").exists()
    assert (out / "base_model/model.safetensors").exists()
    lineage = json.loads((out / "lineage.json").read_text())
    for key in (
        "catalogue_uri", "catalogue_data_version", "dataset_fingerprint", "split_row_ids_sha256",
        "config", "packages", "git_sha", "dagster_run_id", "wandb_run", "base_model", "metrics",
    ):  # fmt: skip
        assert key in lineage
    import datasets

    train_ids = datasets.load_from_disk(str(tiny_dataset_dir))["train"]["row_id"]
    from training.data import sorted_ids_sha256

    assert lineage["split_row_ids_sha256"]["train"] == sorted_ids_sha256(list(reversed(train_ids)))
    assert lineage["base_model"]["id"] == "tiny" and lineage["base_model"]["path"] == "base_model"
    assert lineage["packages"]["torch"] and lineage["packages"]["transformers"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["best_val_loss"] is not None
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))  # safetensors only


def test_secrets_never_reach_lineage(tiny_dataset_dir, tiny_cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "sk-should-not-leak")
    lineage_in = {"catalogue_uri": "demo", "WANDB_API_KEY": "sk-should-not-leak", "hf_token": "x"}
    config = tiny_train_config(
        tiny_dataset_dir, tiny_cache_dir, tmp_path, max_steps=1, lineage=lineage_in
    )
    train(config)
    text = (tmp_path / "lineage.json").read_text()
    assert "sk-should-not-leak" not in text and "hf_token" not in text
    assert json.loads(text)["catalogue_uri"] == "demo"


def test_reload_for_eval_uses_saved_base_and_adapter(trained_run):
    model, processor, preset = load_model_for_eval(Path(trained_run.output_dir))
    assert preset.name == "tiny"
    assert type(model).__name__ == "PeftModel" or hasattr(model, "disable_adapter")
    assert processor.tokenizer.pad_token == "<pad>"


def test_evaluate_writes_the_design_shape(trained_run, tiny_dataset_dir, tmp_path):
    from training.config import EvalConfig
    from training.evaluate import METRIC_KEYS, evaluate

    config = EvalConfig(
        dataset_dir=str(tiny_dataset_dir),
        model_dir=trained_run.output_dir,
        output_dir=str(tmp_path),
        max_samples=6,
        max_new_tokens=8,
    )
    evaluate(config)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["n_test"] == 6
    blocks = [result["tuned"], result["base"], *result["baselines"].values()]
    assert set(result["baselines"]) == {"majority_category", "median_price"}
    for block in blocks:
        assert set(METRIC_KEYS) <= set(block)
    assert result["baselines"]["majority_category"]["price_mae"] is None
    assert result["baselines"]["median_price"]["category_accuracy"] is None
    assert 0.0 <= result["tuned"]["parse_rate"] <= 1.0
    page = (tmp_path / "eval.html").read_text()
    rows = page[page.index('<table id="rows">') :]
    assert rows.count("data:image/png;base64,") == 6
    assert page.index('id="metrics"') < page.index('id="confusion"') < page.index('id="rows"')


def test_max_wall_s_stops_training_early(tiny_dataset_dir, tiny_cache_dir, tmp_path):
    config = tiny_train_config(
        tiny_dataset_dir, tiny_cache_dir, tmp_path, max_steps=50, max_wall_s=1e-6,
        grad_accum_steps=4, per_device_batch_size=2,
    )  # fmt: skip
    result = train(config)
    assert result.steps == 1  # the first step already spent the budget
    assert result.metrics["samples_seen"] == 2  # ... after one micro-batch, not all four
    assert result.final_val_loss is not None  # the run still ends with an evaluation
    assert (tmp_path / "checkpoints/step-00000001/state.json").exists()
