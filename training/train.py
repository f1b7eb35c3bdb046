"""LoRA fine-tuning: `python -m training.train --config cfg.json` or `train(TrainConfig(...))`.

One readable loop (nanoGPT style): AdamW, linear warmup + cosine decay, gradient accumulation,
bf16 autocast on CUDA / fp32 on CPU, periodic validation loss keeping the best adapter, and a
resumable checkpoint (safetensors + JSON, no pickle) that a crashed run picks up automatically.
`training.run` builds what the loop works on; `training.outputs` writes what it leaves behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from schemas.atomic import replace_directory
from schemas.progress import ProgressGate
from training.artefacts import ADAPTER_DIR, CHECKPOINT_DIR
from training.checkpoint import TrainState, save_checkpoint
from training.collate import IGNORE_INDEX, VLMCollator
from training.config import TrainConfig
from training.data import SampleView
from training.distributed import (
    all_gather_objects,
    all_reduce,
    barrier,
    launched_ranks,
    no_sync,
    shard,
    shutdown,
)
from training.optim import batch_stream
from training.outputs import finish_outputs, log_sample_predictions, report_to_dagster
from training.pipes import dagster_pipes_session
from training.run import Run, emit, setup
from training.storage import join, publish


@dataclass
class TrainResult:
    output_dir: str
    adapter_dir: str
    steps: int
    best_val_loss: float | None
    final_val_loss: float | None
    resumed_from_step: int | None
    metrics: dict[str, Any] = field(default_factory=dict)


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
