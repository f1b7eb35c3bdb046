"""The command that starts a training or evaluation process: what the assets launch through
Pipes. Torch-free, so the code location that builds the command does not import torch."""

from __future__ import annotations

import sys


def launch_command(module: str, config_path: str, processes: int = 1) -> list[str]:
    """`python -m module --config path`, under `accelerate launch` for several processes.
    `--multi_gpu` is accelerate's data-parallel mode; on a machine without GPUs the ranks use
    gloo on the CPU. Precision is the run config's (`bf16`), not accelerate's."""
    target = ["-m", module, "--config", config_path]
    if processes <= 1:
        return [sys.executable, *target]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    options = ["--num_processes", str(processes), "--num_machines", "1"]
    options += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    return [*launcher, *options, *target]
