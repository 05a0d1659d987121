"""The `pixel` backend, phase A: a small diffusers UNet2DModel trained on windows of NORMAL images.

No pretrained model can be fetched on a CPU-only offline machine, so phase A stands in for the
pretrained text-to-image model of the reference (method.md section 2, *ours*). It follows diffusers'
unconditional training recipe (DDPMScheduler noise, epsilon prediction, MSE, AdamW) in the shared
training loop (`panda.engine`: Accelerate, checkpoints, EMA). Windows keep fine texture at its native
resolution and make the cost follow the window size, not the image size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel

from panda.compute import ComputeParams
from panda.diffusion.params import FinetuneParams
from panda.engine import LoopSpec, train_loop
from panda.errors import PandaError
from panda.io import job_key

PHASE_A_FIELDS = (
    "window",
    "block_channels",
    "steps",
    "batch_size",
    "lr",
    "train_timesteps",
    "ema_decay",
    "seed",
)


def build_unet(params: FinetuneParams, in_channels: int = 3, num_classes: int = 1) -> UNet2DModel:
    """Class embedding row 0 = normal (phase A); rows 1..K = defect types (trained in phase B)."""
    n = len(params.block_channels)
    return UNet2DModel(
        num_class_embeds=num_classes,
        sample_size=params.window,
        in_channels=in_channels,
        out_channels=in_channels,
        layers_per_block=1,
        block_out_channels=tuple(params.block_channels),
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        norm_num_groups=min(8, params.block_channels[0]),
    )


def build_scheduler(params: FinetuneParams) -> DDPMScheduler:
    """Linear betas 0.00085..0.012 over T steps, as in method.md."""
    return DDPMScheduler(
        num_train_timesteps=params.train_timesteps, beta_start=0.00085, beta_end=0.012, beta_schedule="linear"
    )


def as_model_channels(images: torch.Tensor) -> torch.Tensor:
    """One channel when every image is gray (R == G == B, e.g. Magnetic Tile): the denoiser then cannot
    invent colour noise and has a third of the output to learn (*ours*); RGB data stays RGB."""
    gray = images.shape[1] == 3 and bool((images[:, :1] == images[:, 1:]).all())
    return images[:, :1] if gray else images


def random_windows(images: torch.Tensor, size: int, count: int, gen: torch.Generator) -> torch.Tensor:
    """`count` random size x size crops (with flips) from images (N, C, H, W) in [-1, 1]."""
    n, _, h, w = images.shape
    if h < size or w < size:
        raise PandaError(f"finetune.window = {size} is larger than the images ({w}x{h}); lower it")
    idx = torch.randint(0, n, (count,), generator=gen)
    ys = torch.randint(0, h - size + 1, (count,), generator=gen)
    xs = torch.randint(0, w - size + 1, (count,), generator=gen)
    crops = torch.stack(
        [images[i, :, y : y + size, x : x + size] for i, y, x in zip(idx, ys, xs, strict=True)]
    )
    flip = torch.rand(count, generator=gen) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


@dataclass
class PhaseAResult:
    unet: UNet2DModel
    scheduler: DDPMScheduler
    steps_done: int
    resumed_from: int
    final_loss: float
    seconds: float
    n_parameters: int


def phase_a_key(params: FinetuneParams, num_classes: int, images: torch.Tensor) -> str:
    """Phase A's identity: its own params and data only, so phase-B changes reuse the cached result."""
    fields = {k: v for k, v in asdict(params).items() if k in PHASE_A_FIELDS}
    return job_key({**fields, "classes": num_classes}, images)


def train_phase_a(
    images: torch.Tensor,
    params: FinetuneParams,
    num_classes: int = 1,
    checkpoint_root: Path | None = None,
    compute: ComputeParams | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> PhaseAResult:
    """Train the denoiser on normal windows (class 0), epsilon prediction and MSE as in diffusers.

    Checkpoints live in `checkpoint_root/<job key>`: an interrupted job resumes, a finished one is
    reused as is (also from DVC experiment copies, which share the main repo's checkpoint root).
    """
    torch.manual_seed(params.seed)
    unet = build_unet(params, images.shape[1], num_classes)
    scheduler = build_scheduler(params)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=params.lr, weight_decay=1e-4)

    def loss_fn(model: torch.nn.Module, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        clean = random_windows(images, params.window, params.batch_size, gen)
        noise = torch.randn(clean.shape, generator=gen)
        t = torch.randint(0, params.train_timesteps, (len(clean),), generator=gen)
        noisy = scheduler.add_noise(clean, noise, t)
        normal = torch.zeros(len(clean), dtype=torch.long)
        pred = model(noisy.to(device), t.to(device), class_labels=normal.to(device)).sample
        return F.mse_loss(pred.float(), noise.to(device))

    key = phase_a_key(params, num_classes, images)
    spec = LoopSpec(
        "phase_a",
        params.steps,
        params.seed,
        key,
        checkpoint_root,
        True,
        params.checkpoint_every,
        2,
        params.ema_decay,
    )
    loop = train_loop(unet, optimizer, loss_fn, spec, compute, on_step=on_step, stop_after=stop_after)
    return PhaseAResult(
        unet=unet,
        scheduler=scheduler,
        steps_done=loop.steps_done,
        resumed_from=loop.resumed_from,
        final_loss=loop.final_loss,
        seconds=loop.seconds,
        n_parameters=sum(p.numel() for p in unet.parameters()),
    )
