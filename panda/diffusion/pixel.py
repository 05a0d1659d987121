"""The `pixel` backend, phase A: a small diffusers UNet2DModel trained on windows of NORMAL images.

No pretrained model can be fetched on a CPU-only offline machine, so phase A stands in for the
pretrained text-to-image model of the reference (method.md section 2, *ours*). It follows diffusers'
unconditional training recipe (DDPMScheduler noise, epsilon prediction, MSE, AdamW, Accelerate with
save_state/load_state checkpoints). Windows keep fine texture at its native resolution and make the
cost follow the window size, not the image size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from panda.errors import PandaError
from panda.io import job_key

# how phase B cuts windows larger than `window` (phase_b.py); auto: per defect type (window_modes.py)
WINDOW_MODES = ("resize", "native", "auto")


@dataclass
class FinetuneParams:
    steps: int
    backend: str = "pixel"
    window: int = 32
    block_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    batch_size: int = 16
    lr: float = 1e-3
    train_timesteps: int = 1000
    checkpoint_every: int = 50
    ema_decay: float = 0.999  # weights used for sampling are an EMA (diffusers' EMAModel); 0 = off
    seed: int = 0
    # phase B (method.md section 2): defect embedding + two Mask Guidance Adapters on gen_train defects
    phase_b_steps: int = 100
    phase_b_lr: float = 2e-3
    mga_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 32, 16])
    unfreeze_base: bool = False
    pma_tau: float = 0.2
    window_mode: str = "auto"  # phase B windows: resize to `window`, native-resolution tiles, or per type
    min_width: float = 1.0  # auto: native for types whose strokes a resize would make thinner (px)

    def validate(self) -> None:
        if self.phase_b_steps < 0 or not 0 <= self.pma_tau < 1:
            raise PandaError("finetune.phase_b_steps must be >= 0 and finetune.pma_tau in [0, 1)")
        if self.backend != "pixel":
            raise PandaError(f"finetune.backend = '{self.backend}' is not available; use 'pixel'")
        if self.window % 2 ** (len(self.block_channels) - 1):
            raise PandaError(
                f"finetune.window = {self.window} must be divisible by {2 ** (len(self.block_channels) - 1)}"
            )
        if self.steps < 1:
            raise PandaError("finetune.steps must be >= 1")
        if self.window_mode not in WINDOW_MODES:
            raise PandaError(
                f"finetune.window_mode = '{self.window_mode}': use one of {', '.join(WINDOW_MODES)}"
            )
        if self.min_width < 0:
            raise PandaError(f"finetune.min_width = {self.min_width} must be >= 0 (px)")
        if not 0 <= self.ema_decay < 1:
            raise PandaError("finetune.ema_decay must lie in [0, 1) (0 = no EMA)")


PHASE_A_FIELDS = (
    "backend",
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


def make_ema(parameters, decay: float) -> EMAModel | None:
    """EMA of the trained weights, as diffusers' training scripts keep it (warm-up so short runs work)."""
    return EMAModel(parameters, decay=decay, use_ema_warmup=True) if decay else None


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


def train_phase_a(
    images: torch.Tensor,
    params: FinetuneParams,
    num_classes: int = 1,
    checkpoint_root: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
) -> PhaseAResult:
    """Train the denoiser on normal windows (class 0).

    Checkpoints live in `checkpoint_root/<job key>`: an interrupted job resumes, a finished one is
    reused as is (also from DVC experiment copies, which share the main repo's checkpoint root).
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(params.seed)
    unet = build_unet(params, images.shape[1], num_classes)
    scheduler = build_scheduler(params)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=params.lr, weight_decay=1e-4)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema = make_ema(unet.parameters(), params.ema_decay)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    # phase-A identity: its own params and data only, so phase-B changes reuse the cached result
    fields = {k: v for k, v in asdict(params).items() if k in PHASE_A_FIELDS}
    key = job_key({**fields, "classes": num_classes}, images)
    checkpoint_dir = checkpoint_root / key if checkpoint_root is not None else None
    start = 0
    loss_value = float("nan")  # the last step's loss, kept in the checkpoint for resumed runs
    state_file = checkpoint_dir / "panda_state.json" if checkpoint_dir else None
    if state_file is not None and state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("key") == key:
            accelerator.load_state(str(checkpoint_dir / "accelerate"))
            start = int(state["step"])
            loss_value = float(state.get("loss", loss_value))
    resumed_from = start
    began = time.perf_counter()
    end = params.steps if stop_after is None else min(params.steps, start + stop_after)
    unet.train()
    bar = tqdm(range(start, end), desc="finetune (phase A)", unit="step", initial=start, total=params.steps)
    for step in bar:
        gen = torch.Generator().manual_seed(params.seed * 1_000_003 + step)
        clean = random_windows(images, params.window, params.batch_size, gen).to(accelerator.device)
        noise = torch.randn(clean.shape, generator=gen).to(accelerator.device)
        t = torch.randint(0, params.train_timesteps, (len(clean),), generator=gen).to(accelerator.device)
        noisy = scheduler.add_noise(clean, noise, t)
        normal = torch.zeros(len(clean), dtype=torch.long, device=accelerator.device)
        loss = F.mse_loss(unet(noisy, t, class_labels=normal).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        if ema is not None:
            ema.step(unet.parameters())
        loss_value = loss.item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if checkpoint_dir is not None and (done % params.checkpoint_every == 0 or done == end):
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            accelerator.save_state(str(checkpoint_dir / "accelerate"))
            state_file.write_text(json.dumps({"key": key, "step": done, "loss": loss_value}))
        if on_step is not None:
            on_step(done, {"phase_a_loss": loss_value})
    unet = accelerator.unwrap_model(unet).eval()
    if ema is not None:
        ema.copy_to(unet.parameters())
    return PhaseAResult(
        unet=unet,
        scheduler=scheduler,
        steps_done=end,
        resumed_from=resumed_from,
        final_loss=loss_value,
        seconds=time.perf_counter() - began,
        n_parameters=sum(p.numel() for p in unet.parameters()),
    )
