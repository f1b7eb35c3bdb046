"""Data-parallel training across processes (`accelerate launch` or `torchrun`).

Both launchers export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; this module
joins the process group from them (NCCL on GPUs, gloo on CPU) and holds the few collectives the
loop needs. With one process (the default, and every test but the 2-process ones) every call
here is a no-op and nothing is initialised.

The contract: every rank reads a disjoint slice of each global micro-batch, DDP all-reduces
(averages) the gradients, every rank steps an identical optimizer, and only rank 0 writes files
(checkpoints, adapter, processor, metrics, lineage) or talks to W&B and Dagster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank (LOCAL_RANK); CPU ranks share the CPU."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device


def launched_ranks() -> Ranks:
    """The ranks the launcher set in the environment (one process when none is set)."""
    return Ranks(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_ranks(device: torch.device) -> Ranks:
    ranks = launched_ranks()
    if ranks.distributed and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(ranks.local_rank)
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return ranks


def shutdown(ranks: Ranks) -> None:
    if ranks.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        torch.distributed.barrier()


@contextmanager
def main_first(ranks: Ranks) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds a cached base), then the others reuse it."""
    if not ranks.is_main:
        barrier(ranks)
    yield
    if ranks.is_main:
        barrier(ranks)


def all_reduce(ranks: Ranks, values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum or max over ranks (float64 on CPU: gloo, and exact enough for counts)."""
    if not ranks.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.get_backend() == "nccl":
        tensor = tensor.cuda()
    reduce_op = torch.distributed.ReduceOp.MAX if op == "max" else torch.distributed.ReduceOp.SUM
    torch.distributed.all_reduce(tensor, op=reduce_op)
    return tensor.cpu().tolist()


def all_gather_objects(ranks: Ranks, value: Any) -> list[Any]:
    if not ranks.distributed:
        return [value]
    gathered: list[Any] = [None] * ranks.world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def shard(batch: list[int], ranks: Ranks) -> list[int]:
    """This rank's slice of a global micro-batch (contiguous, so a 1-process run of the same
    global batch sees exactly the union of the ranks' rows). An epoch's last, short batch may
    leave a rank nothing: it then repeats the batch's last row, as DistributedSampler pads."""
    per_rank = -(-len(batch) // ranks.world_size)
    return batch[ranks.rank * per_rank : (ranks.rank + 1) * per_rank] or batch[-1:]


def wrap(model: Any, ranks: Ranks, device: torch.device) -> Any:
    """The module the loop calls forward on: DDP over the model when there are ranks."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def no_sync(train_model: Any, sync: bool) -> Any:
    """Skip DDP's all-reduce on accumulation micro-batches; the last one syncs the sum."""
    if sync or not hasattr(train_model, "no_sync"):
        return nullcontext()
    return train_model.no_sync()
