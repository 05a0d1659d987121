"""The one training loop: phase A, phase B, the restoration pretext and the segmenter all run here.

A caller brings its model, optimizer and loss (`loss_fn(model, generator, device)`, which draws its
own batch from the generator); the loop owns everything else:
- an `accelerate.Accelerator` (from `compute`): device placement, mixed precision, gradient
  accumulation, DDP when started under `accelerate launch`;
- one RNG scheme: each micro-batch's generator is seeded by (seed, loop name, step, micro-batch, rank),
  so a resumed run draws exactly the batches an uninterrupted one draws, and ranks draw different ones;
- one EMA (diffusers' `EMAModel`) of the trainable parameters, swapped in for checkpoint callbacks
  and copied into the model at the end;
- checkpoints: `accelerator.save_state` into a fresh hidden folder, then renamed to `step-NNNNNNNN`
  with `panda_state.json` (job key, step, loss) inside, so a folder of that name is always complete;
  resume takes the newest one of the same job; the last `keep_checkpoints` are kept;
- progress bar and step metrics from the main process only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from panda.compute import ComputeParams, make_accelerator
from panda.io import remove_dead_leftovers

STATE_FILE = "panda_state.json"
EMA_FILE = "ema.pt"
PREFIX = "step-"

LossFn = Callable[[nn.Module, torch.Generator, torch.device], torch.Tensor]


@dataclass
class LoopSpec:
    """One training job: what it is called, how long it runs, and where it checkpoints."""

    name: str  # names the progress bar, the loss metric and the RNG stream
    steps: int  # optimizer steps in all
    seed: int
    key: str = "job"  # the job's identity (settings + data, `panda.io.job_key`): resume only the same job
    checkpoint_dir: Path | None = None  # checkpoints in checkpoint_dir/<key>/; None = none
    shared_cache: bool = False  # keep other jobs' folders there (a cache DVC experiments share)
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    ema_decay: float = 0.0  # 0 = no EMA
    log_every: int = 10


@dataclass
class LoopResult:
    steps_done: int
    resumed_from: int
    final_loss: float
    seconds: float


def quiet(main: bool) -> dict[str, bool]:
    """tqdm arguments: silent off the main process, else as TQDM_* settings say."""
    return {} if main else {"disable": True}


def step_generator(seed: int, name: str, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for one micro-batch, independent of every other (seed, name, step, micro, rank)."""
    digest = hashlib.sha256(f"{seed}/{name}/{step}/{micro}/{rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def complete_checkpoints(job_dir: Path, key: str) -> list[tuple[int, Path]]:
    """(step, folder) of every finished checkpoint of job `key` in `job_dir`, oldest first."""
    found = []
    if not job_dir.is_dir():
        return found
    for folder in job_dir.glob(f"{PREFIX}*"):
        try:
            state = json.loads((folder / STATE_FILE).read_text())
        except (OSError, ValueError):
            continue
        if state.get("key") == key and folder.name == f"{PREFIX}{int(state['step']):08d}":
            found.append((int(state["step"]), folder))
    return sorted(found)


def _shared_token(accelerator) -> str:
    """A name part every rank agrees on (the main process's pid plus a random part)."""
    token = [f"{os.getpid()}-{uuid.uuid4().hex[:8]}"]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token, from_process=0)
    return token[0]


def save_checkpoint(
    accelerator, job_dir: Path, key: str, step: int, loss: float, ema: EMAModel | None, keep: int
) -> Path:
    """Write step `step` to a hidden folder, then rename it into place; prune to the last `keep`."""
    final = job_dir / f"{PREFIX}{step:08d}"
    tmp = job_dir / f".tmp-{final.name}-{_shared_token(accelerator)}"
    if accelerator.is_main_process:
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if ema is not None:
            torch.save(ema.state_dict(), tmp / EMA_FILE)
        (tmp / STATE_FILE).write_text(json.dumps({"key": key, "step": step, "loss": loss}))
        if final.exists():  # the same step of the same job, written before: replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in complete_checkpoints(job_dir, key)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _run_key(key: str, accelerator) -> str:
    """The job key plus what changes the optimisation itself: process count (each process draws its
    own batch), accumulation and precision. A 1-process fp32 run keeps the bare key."""
    world, accumulation = accelerator.num_processes, accelerator.gradient_accumulation_steps
    precision = str(accelerator.mixed_precision)
    if (world, accumulation, precision) == (1, 1, "no"):
        return key
    return f"{key}-p{world}-a{accumulation}-{precision}"


def _drop_other_jobs(checkpoint_dir: Path, key: str) -> None:
    for folder in checkpoint_dir.iterdir() if checkpoint_dir.is_dir() else ():
        if folder.is_dir() and folder.name != key and not folder.name.startswith("."):
            shutil.rmtree(folder, ignore_errors=True)


def train_loop(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    spec: LoopSpec,
    compute: ComputeParams | None = None,
    lr_at: Callable[[int], float] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[nn.Module], dict[str, float]] | None = None,
    stop_after: int | None = None,
) -> LoopResult:
    """Train `model` in place for `spec.steps` optimizer steps, resuming job `spec.key` from
    `spec.checkpoint_dir/<key>/`. With `spec.shared_cache` other jobs' folders there stay (phase A's
    cache, shared by DVC experiments); otherwise the loop keeps only its own job.
    `on_checkpoint(model)` adds metrics (e.g. validation) at each checkpoint, with the EMA weights in
    place; `stop_after` ends early after that many steps (to test interruption and resume).
    """
    accelerator = make_accelerator(compute)
    key, checkpoint_dir = _run_key(spec.key, accelerator), spec.checkpoint_dir
    trainable = [p for p in model.parameters() if p.requires_grad]
    prepared, optimizer = accelerator.prepare(model, optimizer)
    ema = EMAModel(trainable, decay=spec.ema_decay, use_ema_warmup=True) if spec.ema_decay else None
    job_dir = checkpoint_dir / key if checkpoint_dir is not None else None
    start, loss_value = 0, float("nan")
    if job_dir is not None:
        if accelerator.is_main_process:
            if not spec.shared_cache:
                _drop_other_jobs(checkpoint_dir, key)
            remove_dead_leftovers(job_dir.glob(".tmp-*"))  # a kill during save_state
        accelerator.wait_for_everyone()
        if found := complete_checkpoints(job_dir, key):
            start, folder = found[-1]
            accelerator.load_state(str(folder))
            loss_value = float(json.loads((folder / STATE_FILE).read_text()).get("loss", loss_value))
            if ema is not None:
                ema.load_state_dict(torch.load(folder / EMA_FILE, map_location="cpu", weights_only=True))
                ema.to(accelerator.device)
    end = spec.steps if stop_after is None else min(spec.steps, start + stop_after)
    main = accelerator.is_main_process
    bar = tqdm(range(start, end), desc=spec.name, unit="step", initial=start, total=spec.steps, **quiet(main))
    accumulation = accelerator.gradient_accumulation_steps
    began = time.perf_counter()
    prepared.train()
    for step in bar:
        lr = lr_at(step) if lr_at is not None else optimizer.param_groups[0]["lr"]
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=accelerator.device)
        for micro in range(accumulation):
            gen = step_generator(spec.seed, spec.name, step, micro, accelerator.process_index)
            with accelerator.accumulate(prepared):
                with accelerator.autocast():
                    loss = loss_fn(prepared, gen, accelerator.device)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach().float() / accumulation
        if ema is not None:
            ema.step(trainable)
        loss_value = float(accelerator.reduce(total, "mean"))
        done = step + 1
        metrics = {f"{spec.name}_loss": loss_value, f"{spec.name}_lr": lr}
        if job_dir is not None and (done % spec.checkpoint_every == 0 or done == end):
            save_checkpoint(accelerator, job_dir, key, done, loss_value, ema, spec.keep_checkpoints)
            if on_checkpoint is not None and main:
                metrics |= _with_ema(
                    ema, trainable, lambda: on_checkpoint(accelerator.unwrap_model(prepared))
                )
        if main:
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if on_step is not None and (done % spec.log_every == 0 or done == end or len(metrics) > 2):
                on_step(done, metrics)
    accelerator.wait_for_everyone()
    if ema is not None:
        ema.copy_to(trainable)
    accelerator.unwrap_model(prepared).eval()
    accelerator.free_memory()
    return LoopResult(end, start, loss_value, time.perf_counter() - began)


def _with_ema(ema: EMAModel | None, params: list[nn.Parameter], fn: Callable[[], dict]) -> dict:
    """fn() with the EMA weights in the model, the trained ones restored afterwards."""
    if ema is None:
        return fn()
    ema.store(params)
    ema.copy_to(params)
    try:
        return fn()
    finally:
        ema.restore(params)
