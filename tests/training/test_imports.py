"""`training` must run on a bare GPU box: no dagster, no polars, no pickle."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

TRAINING = Path(__file__).resolve().parents[2] / "training"
MODULES = ("config", "presets", "tiny", "collate", "data", "checkpoint", "tracking", "lineage",
           "train", "evaluate", "pipes", "artefacts", "runtime", "generate", "preset_base",
           "hub_presets", "distributed", "storage", "eval_page", "optim", "run",
           "outputs", "launch")  # fmt: skip


def assert_runs_ok(code: str) -> None:
    """Run `code` in a fresh interpreter at the repository root; it must print just "ok"."""
    root = TRAINING.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok", (result.stdout, result.stderr)


def test_training_imports_without_dagster_or_polars():
    code = (
        "import sys\n"
        "sys.modules['dagster'] = None\n"  # any attempt to import them now raises
        "sys.modules['polars'] = None\n"
        + "".join(f"import training.{m}\n" for m in MODULES)
        + "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'polars', 'assets')"
        " and sys.modules[m] is not None]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    assert_runs_ok(code)


def test_every_module_is_covered_by_the_import_check():
    present = {p.stem for p in TRAINING.glob("*.py")} - {"__init__", "__main__"}
    assert present <= set(MODULES), present - set(MODULES)


def test_no_pickle_and_no_unsafe_torch_load():
    for path in TRAINING.rglob("*.py"):
        source = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle)\b", source, re.M), (
            path
        )
        assert not re.search(r"\b(c?pickle|dill)\.(loads?|dumps?|Unpickler)\b", source), path
        assert "safe_serialization=False" not in source, path
        for call in re.finditer(r"torch\.load\((.*?)\)", source, re.S):
            assert "weights_only=True" in call.group(1), (path, call.group(0))
        assert "torch.save(" not in source, path  # checkpoints are safetensors + JSON


def test_gpu_training_bench_imports_without_dagster_polars_or_datasets():
    """bench.training_gpu is run on a lent GPU box that has only torch/transformers/peft; its
    tables come from schemas.markdown, so it needs nothing of curation."""
    code = (
        "import sys\n"
        "for name in ('dagster', 'polars', 'datasets', 'assets', 'curation'):\n"
        "    sys.modules[name] = None\n"
        "import bench.training_gpu\n"
        "print('ok')\n"
    )
    assert_runs_ok(code)


def test_the_code_location_loads_without_torch_matplotlib_or_datasets():
    """Every submitted run loads the Definitions in its code server and run worker, and the
    multiprocess executor's forkserver preloads its modules before forking each step; torch is
    for the training and evaluation processes the model assets launch, matplotlib for the
    report step, datasets for the export and its readers (together about a second of CPU per
    process)."""
    code = (
        "import importlib, sys\n"
        "import dagster_project.definitions\n"
        "from dagster_project.executors import FORKSERVER_PRELOAD\n"
        "for name in FORKSERVER_PRELOAD:\n"
        "    importlib.import_module(name)\n"
        "heavy = {'torch', 'matplotlib', 'datasets'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    assert_runs_ok(code)
