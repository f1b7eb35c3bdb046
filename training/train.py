"""LoRA fine-tuning: `python -m training.train --config cfg.json` or `train(TrainConfig(...))`.

One readable loop (nanoGPT style): AdamW, linear warmup + cosine decay, gradient accumulation,
bf16 autocast on CUDA / fp32 on CPU, periodic validation loss keeping the best adapter, and a
resumable checkpoint (safetensors + JSON, no pickle) that a crashed run picks up automatically.
Progress lines on stdout are JSON objects with an "event" key.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from schemas.atomic import replace_directory, write_text_atomic
from schemas.lineage import LINEAGE_FILE, TRAINING_ROWS_FILE
from training.artefacts import (
    ADAPTER_DIR,
    BASE_MODEL_DIR,
    CHECKPOINT_DIR,
    PROCESSOR_DIR,
    load_model_for_eval,
)
from training.checkpoint import TrainState, list_checkpoints, load_checkpoint, save_checkpoint
from training.collate import IGNORE_INDEX, VLMCollator
from training.config import TrainConfig
from training.data import (
    SampleView,
    combined_fingerprint,
    dataset_fingerprints,
    load_splits,
    split_row_ids_sha256,
    tokenizer_corpus,
)
from training.distributed import (
    Ranks,
    all_gather_objects,
    all_reduce,
    barrier,
    init_ranks,
    launched_ranks,
    main_first,
    no_sync,
    shard,
    shutdown,
    wrap,
)
from training.generate import generate_answers
from training.lineage import build_lineage, copy_manifest, folder_sha256, snapshot_info
from training.optim import (
    attach_lora,
    batch_stream,
    build_optimizer,
    count_total_steps,
    enable_gradient_checkpointing,
    warmup_cosine,
)
from training.pipes import dagster_pipes_session, report_materialization
from training.pipes import forward as forward_to_dagster
from training.preset_base import BaseRef, ModelPreset
from training.presets import get_preset
from training.runtime import best_device, four_bit_quantization, resolve_precision, weight_dtype
from training.storage import join, local_dir, publish
from training.tiny import vision_pretrain_data
from training.tracking import Tracker, start_tracker


@dataclass
class TrainResult:
    output_dir: str
    adapter_dir: str
    steps: int
    best_val_loss: float | None
    final_val_loss: float | None
    resumed_from_step: int | None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """Everything the loop needs, built once by `setup`."""

    config: TrainConfig
    preset: ModelPreset
    ref: BaseRef
    dataset: Any
    processor: Any
    model: Any
    device: torch.device
    use_bf16: bool
    collator: VLMCollator
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    state: TrainState
    resumed_from: int | None
    tracker: Tracker
    out: Path
    ranks: Ranks = field(default_factory=Ranks)
    # What forward runs through while training: the model, or DDP around it.
    train_model: Any = None


def emit(event: str, **values: Any) -> None:
    """One JSON object per line: trivially parsed by the Dagster asset or a shell pipeline.

    Rank 0 speaks for a data-parallel run (the values it emits are already all-reduced).
    Under Dagster Pipes the line goes to the run log only (which the terminal shows too);
    printing it as well would show every line twice."""
    if not launched_ranks().is_main:
        return
    if not forward_to_dagster(event, values):
        print(json.dumps({"event": event, **values}), flush=True)


class ProgressGate:
    """Lets a progress line through about every 10 % of the steps or every 10 s, whichever
    comes first, so a long run reports at a rate a person can read."""

    def __init__(self, total: int, every_fraction: float = 0.1, every_s: float = 10.0):
        self.every_steps = max(1, int(total * every_fraction))
        self.every_s = every_s
        self.last_t = time.monotonic()

    def due(self, step: int, last: bool = False) -> bool:
        now = time.monotonic()
        if last or step % self.every_steps == 0 or now - self.last_t >= self.every_s:
            self.last_t = now
            return True
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_loader(view: Any, collator: VLMCollator, batches: Any, workers: int) -> Any:
    from torch.utils.data import DataLoader

    # Own generator: creating a loader iterator draws a seed, which must not come from the
    # global RNG (that would shift dropout masks between a resumed and an uninterrupted run).
    return DataLoader(
        view,
        batch_sampler=batches,
        collate_fn=collator,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def load_base(config: TrainConfig, dataset: Any) -> tuple[ModelPreset, BaseRef, Any, Any]:
    preset = get_preset(config.preset)
    preset.preflight()
    vision = vision_pretrain_data(dataset["train"]) if preset.name == "tiny" else None
    device = best_device()
    quantization = four_bit_quantization(device) if config.load_in_4bit else None
    ref = preset.resolve(config, lambda: tokenizer_corpus(dataset["train"]), vision)
    processor = preset.load_processor(ref)
    model = preset.load_model(ref, weight_dtype(config.bf16, device), quantization)
    if quantization is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return preset, ref, processor, model


# How the loaded base becomes the trained model (LoRA here; bench/seed.py trains it in full).
Adapt = Callable[[Any, ModelPreset, TrainConfig], Any]


def setup(
    config: TrainConfig,
    adapt: Adapt = attach_lora,
    collator_type: Callable[[Any, ModelPreset, int], VLMCollator] = VLMCollator,
) -> Run:
    out = local_dir(config.output_dir)  # published to output_dir when that is a URL
    out.mkdir(parents=True, exist_ok=True)
    ranks = init_ranks(best_device())
    device = ranks.device(best_device())
    seed_everything(config.seed)
    dataset = load_splits(config.dataset_dir)
    with main_first(ranks):  # one rank builds (or downloads) the base; the others reuse it
        preset, ref, processor, model = load_base(config, dataset)
    # Re-seed: whether the base was just built or came from cache must not shift the LoRA init
    # (identical on every rank; DDP also broadcasts rank 0's weights).
    seed_everything(config.seed)
    model = adapt(model, preset, config)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if not config.load_in_4bit:  # quantized weights were placed on the GPU as they loaded
        model.to(device)
    if ranks.rank:  # dropout masks differ per rank; rank 0 keeps a 1-process run's stream
        seed_everything(config.seed + ranks.rank)
    total = count_total_steps(config, len(dataset["train"]), ranks.world_size)
    optimizer = build_optimizer(model, config)
    warmup = int(config.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup))
    state, resumed = TrainState(), None
    checkpoints = list_checkpoints(out / CHECKPOINT_DIR)
    if checkpoints:
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler, ranks.rank)
        resumed = state.step
        emit("resume", step=state.step, checkpoint=str(checkpoints[-1]))
    tracker = Tracker()
    if ranks.is_main:
        tracker = start_tracker(
            config.wandb_project,
            config.resolved_wandb_mode(),
            config.to_dict(),
            out / "wandb",
            config.wandb_dataset_artifact,
            name=config.output_dir.rstrip("/").rsplit("/", 1)[-1],
        )
    collator = collator_type(processor, preset, config.max_length)
    use_bf16 = resolve_precision(config.bf16, device)
    return Run(
        config, preset, ref, dataset, processor, model, device, use_bf16, collator,
        optimizer, scheduler, total, state, resumed, tracker, out, ranks,
        wrap(model, ranks, device),
    )  # fmt: skip


def forward_loss(run: Run, batch: dict[str, Any], model: Any = None) -> torch.Tensor:
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.use_bf16):
        return (model or run.train_model or run.model)(**to_device(batch, run.device)).loss


@torch.no_grad()
def validation_loss(run: Run) -> float:
    """Token-weighted mean over the validation split (batch means would overweight short rows);
    ranks score alternate batches and the sums are all-reduced, so every rank gets the same."""
    run.model.eval()
    view = SampleView(run.dataset["validation"])
    bs = run.config.per_device_batch_size
    batches = [list(range(i, min(i + bs, len(view)))) for i in range(0, len(view), bs)]
    batches = batches[: run.config.max_eval_batches or None]
    mine = batches[run.ranks.rank :: run.ranks.world_size]
    total, tokens = 0.0, 0
    for batch in make_loader(view, run.collator, mine, run.config.num_workers) if mine else []:
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(forward_loss(run, batch, run.model)) * n
        tokens += n
    total, tokens = all_reduce(run.ranks, [total, float(tokens)])
    run.model.train()
    return total / max(1.0, tokens)


def save_adapter(run: Run, target: Path) -> None:
    """Swap in the new adapter folder whole, so readers never see a mix of two adapters."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(str(tmp))
    replace_directory(tmp, target)


def evaluate_and_keep_best(run: Run) -> float:
    val = validation_loss(run)
    state = run.state
    if state.best_val_loss is None or val < state.best_val_loss:
        state.best_val_loss, state.best_step = val, state.step
        if run.ranks.is_main:
            save_adapter(run, run.out / ADAPTER_DIR)
        barrier(run.ranks)
    state.history.append({"step": state.step, "val_loss": val})
    emit("eval", step=state.step, val_loss=round(val, 5), best_val_loss=state.best_val_loss)
    run.tracker.log({"val/loss": val, "val/best_loss": state.best_val_loss}, step=state.step)
    return val


def optimizer_step(
    run: Run, batches: Iterator[dict[str, Any]], deadline: float | None = None
) -> tuple[float, int]:
    """One optimizer step over grad_accum_steps micro-batches; returns (mean loss, samples).
    Past `deadline` (perf_counter; the max_wall_s budget) it steps on the micro-batches it has:
    one step of a large accumulation can outlast a whole budget at batch size 1.
    Across ranks, the loss is averaged and the samples summed; with a deadline every
    micro-batch syncs gradients, since any of them may turn out to be the last."""
    accum, loss_sum, samples = run.config.grad_accum_steps, 0.0, 0
    for index in range(accum):
        batch = next(batches)
        last = index == accum - 1 or deadline is not None
        with no_sync(run.train_model, sync=last):
            loss = forward_loss(run, batch) / accum
            loss.backward()
        loss_sum += float(loss.detach())
        samples += int(batch["input_ids"].shape[0])
        if deadline is not None:
            (passed,) = all_reduce(run.ranks, [float(time.perf_counter() >= deadline)], "max")
            if passed:
                break
    loss_sum, samples = all_reduce(run.ranks, [loss_sum, float(samples)])
    loss_sum, samples = loss_sum / run.ranks.world_size, int(samples)
    params = [p for p in run.model.parameters() if p.requires_grad]
    torch.nn.utils.clip_grad_norm_(params, run.config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_sum, samples


def progress_bar(total: int, initial: int) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, desc="train", file=sys.stderr, disable=None)


def out_of_time(config: TrainConfig, state: TrainState) -> bool:
    return config.max_wall_s is not None and state.train_seconds >= config.max_wall_s


def train_loop(run: Run) -> float | None:
    cfg, state = run.config, run.state
    start_micro = state.step * cfg.grad_accum_steps
    global_batch = cfg.per_device_batch_size * run.ranks.world_size
    stream = (
        shard(batch, run.ranks)
        for batch in batch_stream(len(run.dataset["train"]), global_batch, cfg.seed, start_micro)
    )
    loader = make_loader(SampleView(run.dataset["train"]), run.collator, stream, cfg.num_workers)
    batches, bar, last_val = iter(loader), progress_bar(run.total_steps, state.step), None
    gate = ProgressGate(run.total_steps)
    run.model.train()
    while state.step < run.total_steps and not out_of_time(cfg, state):
        started = time.perf_counter()
        deadline = (
            None if cfg.max_wall_s is None else started + cfg.max_wall_s - state.train_seconds
        )
        loss, samples = optimizer_step(run, batches, deadline)
        (elapsed,) = all_reduce(run.ranks, [time.perf_counter() - started], "max")
        state.step += 1
        state.samples_seen += samples
        state.train_seconds += elapsed
        lr = run.scheduler.get_last_lr()[0]
        if gate.due(state.step, last=state.step == run.total_steps):
            emit(
                "train",
                step=state.step,
                loss=round(loss, 5),
                lr=lr,
                samples_per_s=samples / elapsed,
            )
        run.tracker.log({"train/loss": loss, "train/lr": lr}, step=state.step)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
        done = state.step == run.total_steps or out_of_time(cfg, state)
        if done or (cfg.eval_every_steps and state.step % cfg.eval_every_steps == 0):
            last_val = evaluate_and_keep_best(run)
        if done or (cfg.save_every_steps and state.step % cfg.save_every_steps == 0):
            checkpoint(run)
    if bar is not None:
        bar.close()
    return last_val


def checkpoint(run: Run) -> None:
    """Rank 0 writes; every rank's RNG state goes in, so each resumes its own dropout stream."""
    rngs = all_gather_objects(run.ranks, torch.get_rng_state())
    if run.ranks.is_main:
        extra = {f"rng.rank{rank}.torch": rng for rank, rng in enumerate(rngs) if rank}
        save_checkpoint(
            run.out / CHECKPOINT_DIR, run.model, run.optimizer, run.scheduler, run.state, extra
        )
    barrier(run.ranks)


def finish_outputs(run: Run, final_val: float | None) -> dict[str, Any]:
    """Processor, base (tiny), metrics.json and lineage.json next to the best adapter."""
    out, state = run.out, run.state
    run.processor.save_pretrained(str(out / PROCESSOR_DIR))
    base_path = run.ref.path
    if run.preset.name == "tiny":
        shutil.copytree(run.ref.path, out / BASE_MODEL_DIR, dirs_exist_ok=True)
        base_path = BASE_MODEL_DIR
    metrics = {
        "final_val_loss": final_val,
        "best_val_loss": state.best_val_loss,
        "best_step": state.best_step,
        "steps": state.step,
        "samples_seen": state.samples_seen,
        "train_seconds": round(state.train_seconds, 3),
        "samples_per_s": state.samples_seen / state.train_seconds if state.train_seconds else None,
        "resumed_from_step": run.resumed_from,
        "history": state.history,
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    commit = getattr(getattr(run.model, "config", None), "_commit_hash", None)
    base = {"id": run.ref.model_id, "revision": run.ref.revision, "path": base_path}
    base["commit"] = commit
    base["preset"] = run.preset.name
    write_lineage(run, base, metrics)
    return metrics


def dataset_facts(run: Run) -> dict[str, Any]:
    """What lineage.json says about the data: a snapshot's own fingerprint (the folder name and
    W&B alias) when trained on one, with its manifest copied beside the checkpoint."""
    fingerprints = dataset_fingerprints(run.dataset)
    snapshot = snapshot_info(run.config.dataset_dir)
    if snapshot:
        copy_manifest(run.config.dataset_dir, run.out)
    return {
        "fingerprint": snapshot["fingerprint"] if snapshot else combined_fingerprint(fingerprints),
        "split_fingerprints": fingerprints,
        "split_row_ids": split_row_ids_sha256(run.dataset),
        "split_sizes": {name: len(split) for name, split in run.dataset.items()},
        "training_rows": join(run.config.output_dir, TRAINING_ROWS_FILE) if snapshot else None,
    }


def write_lineage(run: Run, base: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    lineage = build_lineage(
        run.config,
        base,
        dataset_facts(run),
        run.tracker.reference(),
        {k: v for k, v in metrics.items() if k != "history"},
    )
    write_text_atomic(run.out / LINEAGE_FILE, json.dumps(lineage, indent=2, default=str))
    return lineage


def report_to_dagster(run: Run, metrics: dict[str, Any]) -> None:
    """The asset's materialization, sent through Pipes (no-op standalone): the adapter's content
    hash is its data version; the lineage essentials and scalar metrics are its metadata."""
    lineage = json.loads((run.out / LINEAGE_FILE).read_text())
    summary = {k: v for k, v in metrics.items() if k != "history" and v is not None}
    report_materialization(
        {
            **summary,
            "lineage": join(run.config.output_dir, LINEAGE_FILE),
            "adapter_path": join(run.config.output_dir, ADAPTER_DIR),
            "base_model": str(lineage["base_model"].get("id")),
            "dataset_fingerprint": lineage["dataset_fingerprint"],
            "wandb_run": str(lineage["wandb_run"]),
        },
        data_version=folder_sha256(run.out / ADAPTER_DIR),
    )


def log_sample_predictions(run: Run, n: int = 8) -> None:
    """A W&B table of what the best adapter answers on validation images (skipped untracked)."""
    if type(run.tracker) is Tracker or not hasattr(run.model, "peft_config"):  # no adapter
        return
    model, processor, preset = load_model_for_eval(run.out, with_adapter=True)
    rows = [run.dataset["validation"][i] for i in range(min(n, len(run.dataset["validation"])))]
    predictions = generate_answers(model, processor, preset, rows, batch_size=n)
    table = [
        {"image": r["image"], "truth": r["answer"], "prediction": p}
        for r, p in zip(rows, predictions, strict=True)
    ]
    run.tracker.log_predictions(table, step=run.state.step)


def train(config: TrainConfig) -> TrainResult:
    run = setup(config)
    try:
        emit(
            "start",
            total_steps=run.total_steps,
            base_model=run.ref.model_id,
            device=str(run.device),
        )
        final_val = train_loop(run)
        if final_val is None:  # resumed a finished run: nothing trained, just re-measure
            final_val = evaluate_and_keep_best(run)
        metrics: dict[str, Any] = {}
        if run.ranks.is_main:  # the other ranks' outputs are rank 0's
            metrics = finish_outputs(run, final_val)
            log_sample_predictions(run)
            run.tracker.set_summary({k: v for k, v in metrics.items() if k != "history"})
            run_name = run.config.output_dir.rstrip("/").rsplit("/", 1)[-1]
            run.tracker.log_adapter(run.out / ADAPTER_DIR, f"adapter-{run_name}", metrics)
            publish(run.out, run.config.output_dir)
            report_to_dagster(run, metrics)
        barrier(run.ranks)
    finally:
        run.tracker.finish()
        shutdown(run.ranks)
    emit("done", **{k: v for k, v in metrics.items() if k != "history"})
    return TrainResult(
        output_dir=run.config.output_dir,
        adapter_dir=join(run.config.output_dir, ADAPTER_DIR),
        steps=run.state.step,
        best_val_loss=run.state.best_val_loss,
        final_val_loss=final_val,
        resumed_from_step=run.resumed_from,
        metrics=metrics,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="TrainConfig JSON file")
    args = parser.parse_args(argv)
    # One Pipes session per run: rank 0 reports, the other ranks only train.
    with dagster_pipes_session() if launched_ranks().is_main else nullcontext():
        result = train(TrainConfig.load(args.config))
    if launched_ranks().is_main:
        print(json.dumps(asdict(result), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
