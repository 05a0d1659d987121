"""Where and how a stage computes: device, mixed precision, processes, threads (`compute` in params.yaml).

One `accelerate.Accelerator` per process owns the device, mixed precision, gradient accumulation and,
under a launcher, the process group (NCCL on GPUs, gloo on CPUs). With `processes > 1` a stage
restarts itself under `accelerate launch` (see `launch_command`), so `dvc.yaml` never changes.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from panda.errors import PandaError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("no", "fp16", "bf16")


@dataclass
class ComputeParams:
    device: str = "auto"  # auto = cuda when present, else cpu
    # no | fp16 (cuda only) | bf16; YAML 1.1 reads an unquoted `no` (as DVC writes it back) as false
    mixed_precision: str | bool = "no"
    processes: int = 1  # 1 = this process; > 1 = the stage restarts itself under `accelerate launch`
    # torch CPU threads in all, shared out between this machine's processes; fixed, so a seed gives the
    # same numbers on any machine (results differ between thread counts)
    threads: int = 2
    gradient_accumulation: int = 1  # micro-batches per optimizer step (effective batch x this)
    accelerate_config: str | None = None  # an `accelerate config` file (multi-node); null = none

    def validate(self) -> None:
        if self.mixed_precision is False:
            self.mixed_precision = "no"
        if self.device not in DEVICES:
            raise PandaError(f"compute.device = '{self.device}': use one of {', '.join(DEVICES)}")
        if self.mixed_precision not in PRECISIONS:
            raise PandaError(
                f"compute.mixed_precision = '{self.mixed_precision}': use one of {', '.join(PRECISIONS)}"
            )
        if self.processes < 1:
            raise PandaError(f"compute.processes = {self.processes} must be >= 1 (1 = no launcher)")
        if self.threads < 1:
            raise PandaError(f"compute.threads = {self.threads} must be >= 1")
        if self.gradient_accumulation < 1:
            raise PandaError(f"compute.gradient_accumulation = {self.gradient_accumulation} must be >= 1")
        if self.accelerate_config is not None and not Path(self.accelerate_config).is_file():
            raise PandaError(
                f"compute.accelerate_config = {self.accelerate_config}: no such file; "
                "write one with `accelerate config --config_file PATH` or set it to null"
            )

    def uses_cuda(self) -> bool:
        """True for `cuda`, and for `auto` where a GPU is visible; `cuda` without one is a user error."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise PandaError(
                "compute.device = cuda but no CUDA GPU is visible to torch; "
                "set compute.device to auto or cpu (or install a CUDA build of torch)"
            )
        if self.device == "cpu":
            return False
        return torch.cuda.is_available()

    def torch_device(self) -> torch.device:
        """The device a single-process stage (evaluate, predict) runs on."""
        return torch.device("cuda" if self.uses_cuda() else "cpu")

    def wants_launcher(self) -> bool:
        return self.processes > 1 or self.accelerate_config is not None


def in_launched_process() -> bool:
    """True inside a process started by `accelerate launch` / torchrun (they set LOCAL_RANK)."""
    return "LOCAL_RANK" in os.environ


def is_main_process() -> bool:
    """Rank 0 (or no launcher): the process that writes outputs and logs."""
    return int(os.environ.get("RANK", "0")) == 0


def threads_per_process(compute: ComputeParams) -> int:
    """`compute.threads` shared out between the processes on this machine (at least one each): more
    threads than cores make OpenMP's spinning threads crawl."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", compute.processes if compute.wants_launcher() else 1))
    return max(1, compute.threads // max(local, 1))


def set_threads(compute: ComputeParams) -> int:
    """Fix torch's intra-op threads: results differ between thread counts, so the count is a setting."""
    torch.set_num_threads(threads_per_process(compute))
    return torch.get_num_threads()


def make_accelerator(compute: ComputeParams | None = None):
    """The process's Accelerator for `compute` (defaults: this machine's best device, fp32).

    Outside a launcher the shared Accelerate state is reset first, so a notebook or a test can run
    stages with different settings one after another in one process.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    compute = compute or ComputeParams()
    compute.validate()
    cuda = compute.uses_cuda()
    if compute.mixed_precision == "fp16" and not cuda:
        raise PandaError(
            "compute.mixed_precision = fp16 needs a CUDA GPU; use bf16 or no on a CPU (compute.device)"
        )
    if not in_launched_process():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    set_threads(compute)
    return Accelerator(
        cpu=not cuda,
        mixed_precision=compute.mixed_precision,
        gradient_accumulation_steps=compute.gradient_accumulation,
    )


def launch_command(compute: ComputeParams, module_args: list[str]) -> list[str]:
    """`accelerate launch` for `python -m <module_args>` with `compute.processes` processes.

    A config file (`compute.accelerate_config`, e.g. written by `accelerate config` on each node of a
    multi-node job) supplies machines, ranks and addresses; its process count wins over ours. On CPUs
    Accelerate's torchrun path (`--multi_gpu`) still applies: each process then joins a gloo group.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if compute.accelerate_config is not None:
        cmd += ["--config_file", str(compute.accelerate_config)]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(compute.processes), "--num_machines", "1"]
        cmd += ["--mixed_precision", compute.mixed_precision, "--main_process_port", "0"]
        cmd += ["--dynamo_backend", "no"]
    cmd += ["--num_cpu_threads_per_process", str(threads_per_process(compute))]
    return [*cmd, "-m", *module_args]
