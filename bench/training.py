"""Training benchmark (6): ours vs the seed's configuration, tiny preset, on CPU.

Both configurations train the same locally built tiny base on the demo export for the same
time spent in optimizer steps (`--budget-s` each: data, forward, backward, update), each in its
own subprocess so its peak RSS is its own; each then answers the first `--eval-samples` test
rows greedily, scored by training.evaluate (held-out category accuracy, parse rate).

- seed: the reference tutorial's setup: every row padded to 512 tokens, labels =
  input_ids (loss on prompt, image tokens and padding), full fine-tune, batch 1 x grad-accum 64,
  AdamW lr 5e-5, no warmup or weight decay.
- ours: the TrainConfig defaults: dynamic padding, answer-only labels, batch 16, LoRA (+ the
  tiny preset's projector/embeddings/head), lr 2e-3.

The GPU counterpart (a random Phi-3-vision-sized model) is `python -m bench.training_gpu`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.common import Report, base_parser, publish
from bench.seed import SEED_LAYOUT, SeedLayout

BENCH_ROOT = Path(tempfile.gettempdir(), "catalogue-vlm-bench-training")
DATA_GROUPS = ("ingest", "images", "curation", "dataset")

# name -> (description, TrainConfig overrides, layout); "seed" is what the ratios divide by.
CONFIGS: dict[str, tuple[str, dict[str, Any], SeedLayout]] = {
    "seed": (
        "seed: pad 512, labels = input_ids, full FT, batch 1 x accum 64, lr 5e-5",
        {
            "per_device_batch_size": 1,
            "grad_accum_steps": 64,
            "learning_rate": 5e-5,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
        },
        SEED_LAYOUT,
    ),
    "ours": (
        "ours: dynamic padding, answer-only labels, LoRA, batch 16, lr 2e-3",
        {},
        SeedLayout(),
    ),
}
BASELINE = "seed"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = base_parser("training", __doc__)
    parser.add_argument(
        "--budget-s", type=float, default=90.0, help="optimizer-step seconds per configuration"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=270, help="test rows answered (0 = whole split)"
    )
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (OMP_NUM_THREADS; 0 = torch's default, one per core)",
    )
    parser.add_argument(
        "--dataset-dir",
        type=Path,
        default=None,
        help="an exported training_dataset; default: the demo export, built once under --root",
    )
    parser.add_argument(
        "--root", type=Path, default=BENCH_ROOT, help="cache: demo export, tiny base, runs"
    )
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def demo_dataset(root: Path) -> Path:
    """The demo catalogue through the pipeline's data groups (what `make demo` trains on),
    built once per demo version: ~1-2 min of Dagster, reused by later runs."""
    from bench.e2e import run_demo
    from curation.snapshots import latest_snapshot
    from demo import DEMO_VERSION

    build = root / DEMO_VERSION  # new demo pictures must not be benchmarked on old ones
    out = build / "data" / "hf_dataset"
    if latest_snapshot(str(out)) is None:
        _, code, tail = run_demo(build / "dagster_home", build / "data", "demo", 1800, DATA_GROUPS)
        if code != 0:
            raise RuntimeError(f"building the demo dataset failed (exit {code}):\n{tail}")
    return Path(str(latest_snapshot(str(out))))


def base_config(dataset_dir: Path, root: Path, name: str, budget_s: float) -> dict[str, Any]:
    return {
        "dataset_dir": str(dataset_dir),
        "output_dir": str(root / "runs" / name),
        "cache_dir": str(root / "tiny_cache"),
        "max_wall_s": budget_s,
        "eval_every_steps": 0,  # one validation pass at the end, outside the budget; its
        "max_eval_batches": 1,  # loss is not comparable across label sets: one batch will do
        "save_every_steps": 0,
        "wandb_mode": "disabled",
    }


def prepare_base(config: dict[str, Any]) -> str:
    """Build (or find) the tiny base before any timing, so neither run pays for it."""
    from training.config import TrainConfig
    from training.data import load_splits
    from training.run import load_base

    train_config = TrainConfig.from_dict(config)
    return load_base(train_config, load_splits(train_config.dataset_dir))[1].path


def run_config(
    name: str, config: dict[str, Any], args: argparse.Namespace, root: Path
) -> dict[str, Any]:
    """One configuration in a fresh interpreter; its progress lines go to runs/{name}.log."""
    import os
    import shutil

    shutil.rmtree(config["output_dir"], ignore_errors=True)  # a full FT cannot resume
    job = root / "runs" / f"{name}.json"
    job.parent.mkdir(parents=True, exist_ok=True)
    layout = asdict(CONFIGS[name][2])
    job.write_text(
        json.dumps({"config": config, "layout": layout, "eval_samples": args.eval_samples})
    )
    log = root / "runs" / f"{name}.log"
    # With other jobs on the cores, a 2-thread OpenMP region waits for whichever thread got
    # descheduled: steps then take 10x longer at random. One thread each is steady and fair.
    threads = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    with log.open("w") as out:
        command = [sys.executable, "-m", "bench.training", "--worker", str(job)]
        code = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **threads}
        ).returncode
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}); see {log}")
    return json.loads(job.with_suffix(".result.json").read_text())


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries the parent's peak over fork +
    exec into it, so every worker would report the parent's (which built the tiny base)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):  # per address space: exec starts a fresh one
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def batch_shape(run: Any, n_rows: int = 64) -> dict[str, float]:
    """Tokens a row occupies in a batch, and tokens that carry loss, over the first rows."""
    from training.collate import IGNORE_INDEX
    from training.data import SampleView

    view, size = SampleView(run.dataset["train"]), run.config.per_device_batch_size
    lengths, learned = [], []
    for start in range(0, n_rows, size):
        batch = run.collator([view[i] for i in range(start, start + size)])
        lengths.append(batch["input_ids"].shape[1])
        learned.append(float((batch["labels"] != IGNORE_INDEX).sum(dim=1).float().mean()))
    return {"row_tokens": statistics.mean(lengths), "loss_tokens": statistics.mean(learned)}


def held_out(run: Any, eval_samples: int) -> dict[str, Any]:
    from schemas.prompt import parse_answer
    from training.evaluate import (
        baselines,
        original_train_truths,
        score,
        truth_of,
    )
    from training.generate import generate_answers

    test = run.dataset["test"]
    rows = [test[i] for i in range(min(eval_samples or len(test), len(test)))]
    run.model.eval()
    answers = generate_answers(run.model, run.processor, run.preset, rows)
    truths = [truth_of(row) for row in rows]
    floors = baselines(original_train_truths(run.dataset["train"]), truths)
    return {
        **score(truths, [parse_answer(a) for a in answers]),
        "n_test": len(rows),
        "majority_category": floors["majority_category"]["category_accuracy"],
    }


def worker(job_path: Path) -> None:
    """Inside the child: set up, train until the budget is spent, measure, answer the test."""
    from bench.seed import seed_setup
    from training.config import TrainConfig
    from training.train import train_loop

    job = json.loads(job_path.read_text())
    start = time.perf_counter()
    run = seed_setup(TrainConfig.from_dict(job["config"]), SeedLayout(**job["layout"]))
    setup_s = time.perf_counter() - start
    train_loop(run)
    result = {
        "setup_s": setup_s,
        "peak_rss_mib": peak_rss_mib(),  # training peak: read before evaluation runs
        "steps": run.state.step,
        "samples": run.state.samples_seen,
        "train_s": run.state.train_seconds,
        "trainable": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        **batch_shape(run),
    }
    start = time.perf_counter()
    result["eval"] = held_out(run, job["eval_samples"])
    result["eval_s"] = time.perf_counter() - start
    job_path.with_suffix(".result.json").write_text(json.dumps(result))


def table_row(name: str, result: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    speed = result["samples"] / result["train_s"]
    base_speed = base["samples"] / base["train_s"]
    return {
        "configuration": CONFIGS[name][0],
        "trainable params": result["trainable"],
        "tokens/row": result["row_tokens"],
        "loss tokens/row": result["loss_tokens"],
        "optimizer steps": result["steps"],
        "samples": result["samples"],
        "samples/s": speed,
        "peak RSS MiB": result["peak_rss_mib"],
        "test category acc.": result["eval"]["category_accuracy"],
        "parse rate": result["eval"]["parse_rate"],
        "samples/s vs seed": speed / base_speed,
        "peak RSS vs seed": result["peak_rss_mib"] / base["peak_rss_mib"],
    }


def notes_for(args: argparse.Namespace, results: dict[str, dict], base_path: str) -> list[str]:
    first = next(iter(results.values()))
    evals = first["eval"]
    return [
        f"Same budget for each: {args.budget_s:g} s spent in optimizer steps (data loading and "
        "collation included; the final validation pass, checkpoint and test answers excluded). "
        "Each configuration runs in its own interpreter with "
        f"{args.threads or 'the default number of'} torch thread(s) (2 threads on this shared "
        "box made random steps 10x slower); peak RSS is its VmHWM after training "
        "(interpreter, libraries, dataset and model included).",
        f"Data: the demo export ({args.dataset_dir or 'built under ' + str(args.root)}); "
        f"tiny base {Path(base_path).name} (pretrained vision tower) shared by both. Test: "
        f"first {evals['n_test']} rows, greedy; majority-category floor "
        f"{evals['majority_category']:.3f}.",
        "tokens/row: columns per row in a batch (the seed pads to 512, ours to the batch's "
        "longest); loss tokens/row: positions whose label is not ignored.",
        "Both runs keep the lr schedule of 1.5 epochs (TrainConfig.num_epochs), which the budget "
        "cuts short. Differences from the tutorial: AdamW betas (0.9, 0.95) and a cosine instead "
        "of a linear decay; fp32 on CPU for both.",
        "Run times: "
        + "; ".join(
            f"{name} setup {r['setup_s']:.0f} s, test answers {r['eval_s']:.0f} s"
            for name, r in results.items()
        )
        + ". Other agents share the 2 cores: see the load average above.",
        "GPU (a random Phi-3-vision-sized model, seed vs ours in tokens/s and peak GPU memory): "
        "`python -m bench.training_gpu`, section `training_gpu`; pending a lent GPU until that "
        "section shows numbers.",
    ]


def run(args: argparse.Namespace) -> Report:
    dataset_dir = args.dataset_dir or demo_dataset(args.root)
    configs = {
        name: {**base_config(dataset_dir, args.root, name, args.budget_s), **CONFIGS[name][1]}
        for name in args.configs
    }
    base_path = prepare_base(next(iter(configs.values())))
    results = {}
    for name, config in configs.items():
        print(f"[bench.training] {name}: {args.budget_s:g} s budget", flush=True)
        results[name] = run_config(name, {**config, "base_model": base_path}, args, args.root)
    baseline = results.get(BASELINE) or next(iter(results.values()))
    rows = [table_row(name, result, baseline) for name, result in results.items()]
    return Report(
        "training",
        "Training (6: tiny preset on CPU, ours vs the seed's configuration)",
        rows,
        notes_for(args, results, base_path),
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        worker(args.worker)
        return
    publish(run(args), args, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
