"""Train the segmenter on normal images + synthesized pairs, with checkpoints and exact resume.

The loop, checkpoints, exact resume and EMA are `panda.engine`'s; this module brings the segmenter's
batches (normals + synthetic pairs, crops, flips) and its loss.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from panda.compute import ComputeParams
from panda.engine import LoopSpec, train_loop
from panda.errors import PandaError
from panda.io import job_key
from panda.segment.data import normalize
from panda.segment.models import MODELS, architecture, build_segmenter, rebuild
from panda.segment.pretext import PretextParams, pretrain_restoration
from panda.segment.schedule import warmup_cosine
from panda.segment.unet import SegUNet, count_parameters


@dataclass
class TrainParams:
    steps: int = 150
    batch_size: int = 16
    lr: float = 2e-3
    base_channels: int = 16
    normal_fraction: float = 0.25
    val_fraction: float = 0.15
    checkpoint_every: int = 50
    crop_size: int = 0  # train on crops of this side (0 = whole images); inference stays full-image
    defect_crop_fraction: float = 0.5  # share of defective crops centred on a defect pixel
    pretext_steps: int = 0  # start from a U-Net pretrained this long to restore normals (0 = scratch)
    seed: int = 0
    model: str = "unet"  # unet | segformer (SegFormer-B0, the paper's; the pick for a GPU) | resnet-unet
    pretrained: str | None = None  # segformer / resnet-unet weights (hub id or folder); None = scratch

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise PandaError("train.steps and train.batch_size must be >= 1")
        if self.crop_size and self.crop_size % 16:
            raise PandaError(
                f"train.crop_size = {self.crop_size} must be a multiple of 16 (or 0 for whole images)"
            )
        if not 0 <= self.normal_fraction < 1 or not 0 <= self.val_fraction < 1:
            raise PandaError("train.normal_fraction and train.val_fraction must lie in [0, 1)")
        if self.pretext_steps < 0:
            raise PandaError(f"train.pretext_steps = {self.pretext_steps} must be >= 0 (0 = off)")
        if self.model not in MODELS:
            raise PandaError(f"train.model = '{self.model}': use one of {', '.join(MODELS)}")
        if self.model != "unet" and self.pretext_steps:
            raise PandaError(
                f"train.pretext_steps pretrains the U-Net; with train.model = {self.model} set it to 0 "
                "(or start from pretrained weights, train.pretrained)"
            )
        if self.model == "unet" and self.pretrained is not None:
            raise PandaError("train.pretrained is for segformer / resnet-unet (U-Net: train.pretext_steps)")


@dataclass
class TrainResult:
    model: nn.Module
    steps_done: int
    resumed_from: int
    final_loss: float
    val_loss: float
    val_dice: float
    seconds: float
    n_parameters: int
    pretext_seconds: float = 0.0

    def summary(self) -> dict[str, float | int]:
        """The numbers `reports/train_metrics.json` and MLflow get."""
        trained = max(1, self.steps_done - self.resumed_from)
        return {
            "steps": self.steps_done,
            "resumed_from": self.resumed_from,
            "final_loss": self.final_loss,
            "val_loss": self.val_loss,
            "val_dice": self.val_dice,
            "train_seconds": round(self.seconds, 2),
            "pretext_seconds": round(self.pretext_seconds, 2),
            "seconds_per_step": round(self.seconds / trained, 4),
            "n_parameters": self.n_parameters,
        }

    def report(self) -> str:
        return (
            f"segmenter: {self.n_parameters / 1e6:.2f}M params, {self.steps_done} steps (resumed at "
            f"{self.resumed_from}) in {self.seconds:.1f}s, val dice {self.val_dice:.3f}"
        )


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft dice: BCE trains every pixel, dice keeps tiny defects from drowning in background."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum()
    dice = 1 - (2 * inter + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips of the batch (the views mirror TTA averages)."""
    flips = torch.rand(2, generator=gen)
    if flips[0] < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if flips[1] < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    return x, y


def _crops(
    x: torch.Tensor,
    y: torch.Tensor,
    size: int,
    centred: float,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """size x size crops; with probability `centred` a defective sample's crop is centred on a defect pixel.

    Small defects then fill a useful share of the batch instead of vanishing in whole-image batches.
    """
    h, w = x.shape[-2:]
    if not size or size >= min(h, w):
        return x, y
    xs, ys = [], []
    for i in range(len(x)):
        top = int(torch.randint(0, h - size + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - size + 1, (1,), generator=gen))
        pixels = torch.nonzero(y[i, 0] > 0)
        if len(pixels) and float(torch.rand(1, generator=gen)) < centred:
            cy, cx = pixels[int(torch.randint(0, len(pixels), (1,), generator=gen))].tolist()
            top = min(max(cy - size // 2, 0), h - size)
            left = min(max(cx - size // 2, 0), w - size)
        xs.append(x[i, :, top : top + size, left : left + size])
        ys.append(y[i, :, top : top + size, left : left + size])
    return torch.stack(xs), torch.stack(ys)


def _batch(
    params: TrainParams, n_normal: int, n_synth: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the batch's normal images and synthetic pairs (`normal_fraction` of it normal)."""
    k_normal = int(round(params.batch_size * params.normal_fraction)) if n_normal else 0
    k_synth = params.batch_size - k_normal if n_synth else 0
    if not n_synth:
        k_normal = params.batch_size
    return (
        torch.randint(0, max(n_normal, 1), (k_normal,), generator=gen),
        torch.randint(0, max(n_synth, 1), (k_synth,), generator=gen),
    )


def lr_at(step: int, params: TrainParams) -> float:
    """The segmenter's rate at `step` (warm-up, then cosine; see `warmup_cosine`)."""
    return warmup_cosine(step, params.steps, params.lr)


@torch.no_grad()
def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> tuple[float, float]:
    if not len(x):
        return float("nan"), float("nan")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    losses, inter, total = [], 0.0, 0.0
    for i in range(0, len(x), batch):
        logits = model(normalize(x[i : i + batch]).to(device)).float().cpu()
        target = y[i : i + batch]
        losses.append(seg_loss(logits, target).item() * len(target))
        pred = (logits > 0).float()
        inter += (pred * target).sum().item()
        total += pred.sum().item() + target.sum().item()
    model.train(was_training)
    return sum(losses) / len(x), (2 * inter / total) if total else 1.0


def train_segmenter(
    normal: tuple[torch.Tensor, torch.Tensor],
    synthetic: tuple[torch.Tensor, torch.Tensor],
    params: TrainParams,
    checkpoint_dir: Path | None = None,
    compute: ComputeParams | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    init: SegUNet | None = None,
    pretext_cache: Path | None = None,
) -> TrainResult:
    """Train from scratch, from the restoration pretext (`params.pretext_steps`, cached and resumable
    in `pretext_cache`) or from a copy of `init`; resume from `checkpoint_dir` when it holds this job.

    `stop_after` ends the run early after that many steps (used to test interruption + resume).
    """
    pretext_seconds = 0.0
    if params.pretext_steps:
        if init is not None:
            raise PandaError("pass either an init U-Net or train.pretext_steps > 0, not both")
        began = time.perf_counter()
        pretext = PretextParams(params.pretext_steps, params.batch_size, params.lr, params.seed)
        init = pretrain_restoration(
            normal[0], params.base_channels, pretext, pretext_cache, params.checkpoint_every, compute
        )
        pretext_seconds = time.perf_counter() - began
    torch.manual_seed(params.seed)
    x_norm, y_norm = normal
    x_syn, y_syn = synthetic
    n_val = int(round(len(x_syn) * params.val_fraction))
    perm = torch.randperm(len(x_syn), generator=torch.Generator().manual_seed(params.seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    x_val, y_val = x_syn[val_idx], y_syn[val_idx]
    x_syn, y_syn = x_syn[train_idx], y_syn[train_idx]
    if len(x_norm) + len(x_syn) == 0:
        raise PandaError("no training images: the manifest has no normal train images and no synthetic pairs")

    in_channels = x_norm.shape[1] if len(x_norm) else x_syn.shape[1]
    if init is None:
        model = build_segmenter(params.model, in_channels, params.base_channels, params.pretrained)
    elif (init.head.in_channels, init.downs[0][0].in_channels) != (params.base_channels, in_channels):
        raise PandaError(
            f"init U-Net has base_channels={init.head.in_channels}, {init.downs[0][0].in_channels} input "
            f"channels; this job needs base_channels={params.base_channels}, {in_channels} input channels"
        )
    else:
        model = copy.deepcopy(init).cpu()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=1e-4)
    start = init or (model if params.pretrained else None)  # pretrained weights are part of the job
    key = job_key(asdict(params), x_norm, x_syn, *(start.state_dict().values() if start else ()))

    def loss_fn(module: nn.Module, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        i_norm, i_syn = _batch(params, len(x_norm), len(x_syn), gen)
        xb = torch.cat([x_norm[i_norm], x_syn[i_syn]]) if len(x_syn) else x_norm[i_norm]
        yb = torch.cat([y_norm[i_norm], y_syn[i_syn]]) if len(x_syn) else y_norm[i_norm]
        xb, yb = _crops(xb, yb, params.crop_size, params.defect_crop_fraction, gen)
        xb, yb = _augment(xb, yb, gen)
        return seg_loss(module(normalize(xb).to(device)).float(), yb.to(device))

    def validation(trained: nn.Module) -> dict[str, float]:
        val_loss, val_dice = _validate(trained, x_val, y_val)
        return {"val_loss": val_loss, "val_dice": val_dice}

    spec = LoopSpec("train", params.steps, params.seed, key, checkpoint_dir, False, params.checkpoint_every)
    schedule = lambda step: lr_at(step, params)  # noqa: E731
    loop = train_loop(model, optimizer, loss_fn, spec, compute, schedule, on_step, validation, stop_after)
    val_loss, val_dice = _validate(model, x_val, y_val)
    model.eval()
    return TrainResult(
        model=model,
        steps_done=loop.steps_done,
        resumed_from=loop.resumed_from,
        final_loss=loop.final_loss,
        val_loss=val_loss,
        val_dice=val_dice,
        seconds=loop.seconds,
        n_parameters=count_parameters(model),
        pretext_seconds=pretext_seconds,
    )


def save_model(
    model: nn.Module,
    params: TrainParams,
    path: Path,
    image_size: int,
    normal_stats: dict | None = None,
    geometry: str = "squash",
) -> None:
    """Weights plus what is needed to rebuild and feed the model (architecture, channels, training
    size and geometry, `panda.data.geometry`) and the training normals' statistics (`panda.segment.ood`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(
        {
            "state_dict": model.state_dict(),
            **architecture(model),
            "image_size": image_size,
            "geometry": geometry,
            "normal_stats": normal_stats or {},
        },
        tmp,
    )
    os.replace(tmp, path)


def load_model_file(path: Path) -> tuple[nn.Module, dict]:
    """The segmenter saved by `save_model` and what it was saved with; anything else is a user error."""
    if not Path(path).is_file():
        raise PandaError(f"model not found: {path}; run `panda train` first or pass --model")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = rebuild(state)
        model.load_state_dict(state["state_dict"])
    except Exception as exc:  # random bytes, another framework's file, a truncated save: all unreadable
        raise PandaError(f"{path} is not a panda segmenter checkpoint ({exc.__class__.__name__})") from None
    model.eval()
    info = {k: v for k, v in state.items() if k != "state_dict"}
    return model, info
