"""Data-parallel training on CPU: 2 processes (gloo) under `accelerate launch` against 1 process
at the same global batch, and a 2-process run resuming from its own checkpoint.

Tolerance: each step's training loss and the final validation loss within 1% relative, and
test category accuracy within 0.1 absolute. The two runs see the same rows in the same global
batches; what differs is the order of floating-point sums (DDP averages two shard means where
one process takes one mean over the batch) and rank 1's dropout stream.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import tiny_train_config
from training.config import EvalConfig

ROOT = Path(__file__).resolve().parents[2]


def launch(config_path: Path, processes: int) -> list[dict[str, Any]]:
    """`python -m training.train` (1) or `accelerate launch` over N processes, as the
    lora_adapter asset launches it; the events rank 0 printed."""
    from training.launch import launch_command

    command = launch_command("training.train", str(config_path), processes)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"event"')]
    return [json.loads(line) for line in lines]


def write_config(tmp: Path, dataset: Path, cache: Path, name: str, **values: Any) -> Path:
    config = tiny_train_config(dataset, cache, tmp / name, max_eval_batches=None, **values)
    config.save(tmp / f"{name}.json")
    return tmp / f"{name}.json"


def test_two_processes_match_one_at_the_same_global_batch(
    tiny_dataset_dir, tiny_cache_dir, tmp_path
):
    from training.evaluate import evaluate

    common = {"max_steps": 4, "eval_every_steps": 2, "save_every_steps": 0}
    one = launch(write_config(tmp_path, tiny_dataset_dir, tiny_cache_dir, "one",
                              per_device_batch_size=8, **common), 1)  # fmt: skip
    two = launch(write_config(tmp_path, tiny_dataset_dir, tiny_cache_dir, "two",
                              per_device_batch_size=4, **common), 2)  # fmt: skip
    steps = [[e for e in run if e["event"] == "train"] for run in (one, two)]
    assert [e["step"] for e in steps[1]] == [1, 2, 3, 4]  # rank 0 alone reports
    for a, b in zip(*steps, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.01), (a, b)
    (final_one,), (final_two,) = ([e for e in run if e["event"] == "done"] for run in (one, two))
    assert final_two["samples_seen"] == final_one["samples_seen"] == 32
    assert final_two["final_val_loss"] == pytest.approx(final_one["final_val_loss"], rel=0.01)
    scores = [
        evaluate(EvalConfig(dataset_dir=str(tiny_dataset_dir), model_dir=str(tmp_path / name),
                            output_dir=str(tmp_path / f"eval-{name}"), max_samples=8,
                            max_new_tokens=16, include_base=False))["tuned"]
        for name in ("one", "two")
    ]  # fmt: skip
    assert abs(scores[0]["category_accuracy"] - scores[1]["category_accuracy"]) <= 0.1
    assert json.loads((tmp_path / "two/lineage.json").read_text())["metrics"]["steps"] == 4


@pytest.mark.slow
def test_two_process_run_resumes_from_its_checkpoint_exactly(
    tiny_dataset_dir, tiny_cache_dir, tmp_path
):
    settings = {"max_steps": 4, "save_every_steps": 2, "per_device_batch_size": 4}
    straight = tmp_path / "straight"
    launch(write_config(tmp_path, tiny_dataset_dir, tiny_cache_dir, "straight", **settings), 2)
    state = load_file(str(straight / "checkpoints/step-00000004/state.safetensors"))
    assert "rng.rank1.torch" in state  # rank 1's dropout stream is checkpointed by rank 0
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)  # as if both ranks died right after step 2's checkpoint
    shutil.rmtree(crashed / "checkpoints/step-00000004")
    shutil.rmtree(crashed / "adapter")
    config = write_config(tmp_path, tiny_dataset_dir, tiny_cache_dir, "crashed", **settings)
    events = launch(config, 2)
    assert [e["step"] for e in events if e["event"] == "resume"] == [2]
    adapter = "checkpoints/step-00000004/adapter/adapter_model.safetensors"
    a, b = load_file(str(straight / adapter)), load_file(str(crashed / adapter))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_launch_command_uses_accelerate_only_for_several_processes():
    from training.launch import launch_command

    assert launch_command("training.train", "c.json") == [
        sys.executable, "-m", "training.train", "--config", "c.json",
    ]  # fmt: skip
    command = launch_command("training.train", "c.json", 2)
    assert command[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    assert command[command.index("--num_processes") + 1] == "2"
    assert command[-4:] == ["-m", "training.train", "--config", "c.json"]
