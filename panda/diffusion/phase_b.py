"""Phase B (method.md section 2): defect-type embedding + the two Mask Guidance Adapters.

Trained only on `gen_train` defects, on windows around each defect: a square of side
max(window, 1.25 x the mask's bounding box) centred on the defect. `window_mode: resize` shrinks it
to `window` px, so large defects (Magnetic Tile Uneven) fit whole and small ones keep their native
resolution; `native` (*ours*; the sampler follows it, `synth.window_mode: auto`) keeps every pixel at the
image's resolution and cuts a larger window into up to `MAX_TILES` window-sized tiles, those holding
the most defect pixels, so thin cracks are learnt at the width they are sampled at; `auto` chooses
per defect type (window_modes.py).
Loss per batch, one t for both branches, independent noises eps, eps':
  x_t = q(z0, t), eps_A = G_A(U(x_t, t, c), M_t);  y_t = q(M z0, t), eps_O = G_O(U(y_t, t, c), M)
  L = 4 mean|M_t (eps - eps_A)| + 1 mean|eps' - eps_O|,  M_t = M + a(t) (1 - M),
  a(t) = clip((t - tau T) / (T - tau T), 0, 1).
The base UNet stays frozen (*ours*: its class-embedding table stands in for the reference's
textual-inversion tokens and is trained).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image
from torch import nn

from panda.compute import ComputeParams
from panda.diffusion.denoiser import PixelDenoiser
from panda.engine import LoopSpec, train_loop
from panda.io import job_key

MAX_TILES = 4  # native window_mode: tiles per large defect, so big types do not swamp the batches


@dataclass
class DefectWindows:
    images: torch.Tensor  # (N, C, w, w) in [-1, 1]
    masks: torch.Tensor  # (N, 1, w, w) in {0, 1}
    defect_ids: torch.Tensor  # (N,) 1..K


def crop_box(mask: np.ndarray, window: int, scale: float = 1.25) -> tuple[int, int, int]:
    """(top, left, side) of the square window around the mask's bounding box, inside the image."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    side = int(min(min(h, w), max(window, np.ceil(scale * max(np.ptp(ys) + 1, np.ptp(xs) + 1)))))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    top = int(np.clip(cy - side // 2, 0, h - side))
    left = int(np.clip(cx - side // 2, 0, w - side))
    return top, left, side


def native_tiles(mask: np.ndarray, window: int, max_tiles: int = MAX_TILES) -> list[tuple[int, int]]:
    """(top, left) of window-sized tiles over crop_box's square, at half-window stride, keeping the
    `max_tiles` that hold the most mask pixels (a defect that fits yields its one crop_box window)."""
    top, left, side = crop_box(mask, window)
    if side <= window:
        return [(top, left)]
    starts = [
        np.unique(np.linspace(o, o + side - window, -(-2 * (side - window) // window) + 1).round())
        for o in (top, left)
    ]
    tiles = [(int(y), int(x)) for y in starts[0] for x in starts[1]]
    counts = [int(mask[y : y + window, x : x + window].sum()) for y, x in tiles]
    order = sorted(range(len(tiles)), key=lambda i: -counts[i])[:max_tiles]
    return [tiles[i] for i in sorted(order) if counts[i] > 0]


def defect_windows(
    examples: list[tuple[np.ndarray, np.ndarray, int]], window: int, mode: str | Mapping[int, str] = "resize"
) -> DefectWindows:
    """Every (image RGB uint8, mask bool, defect id) as window x window pairs; `mode` is `resize` or
    `native` for all, or per defect id (see `window_mode`)."""
    imgs, masks, ids = [], [], []
    for image, mask, defect_id in examples:
        if not mask.any():
            continue
        if (mode if isinstance(mode, str) else mode[defect_id]) == "native":
            for y, x in native_tiles(mask, window):
                imgs.append(image[y : y + window, x : x + window])
                masks.append(mask[y : y + window, x : x + window])
                ids.append(defect_id)
            continue
        top, left, side = crop_box(mask, window)
        crop = Image.fromarray(image[top : top + side, left : left + side]).resize(
            (window, window), Image.BICUBIC
        )
        m = Image.fromarray(mask[top : top + side, left : left + side].astype(np.uint8) * 255)
        m = np.asarray(m.resize((window, window), Image.BILINEAR)) >= 128
        imgs.append(np.asarray(crop))
        masks.append(m)
        ids.append(defect_id)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return DefectWindows(x, torch.from_numpy(np.stack(masks)).unsqueeze(1).float(), torch.tensor(ids))


def pma_mask(mask: torch.Tensor, t: torch.Tensor, num_train_timesteps: int, tau: float) -> torch.Tensor:
    """M_t = M + a(t)(1 - M), a(t) = clip((t - tau T)/(T - tau T), 0, 1), per sample."""
    big_t = num_train_timesteps
    a = ((t.float() - tau * big_t) / (big_t - tau * big_t)).clamp(0, 1).view(-1, 1, 1, 1)
    return mask + a * (1 - mask)


class PhaseBObjective(nn.Module):
    """Phase B's loss as a module, so DDP sees one forward per step (the denoiser's branches are
    methods, not `forward`). Batches come in on the CPU and move to the model's device. Both backends
    train with it: `model` is a `PixelDenoiser` or a `LatentDenoiser` (batches of latents)."""

    def __init__(self, model: nn.Module, scheduler: DDPMScheduler, tau: float) -> None:
        super().__init__()
        self.model, self.scheduler, self.tau = model, scheduler, tau

    def forward(self, batch: DefectWindows, gen: torch.Generator) -> torch.Tensor:
        device = next(self.model.parameters()).device
        z0, mask, c = batch.images, batch.masks, batch.defect_ids
        big_t = self.scheduler.config.num_train_timesteps
        t = torch.randint(0, big_t, (len(z0),), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        eps_only = torch.randn(z0.shape, generator=gen)
        m_t = pma_mask(mask, t, big_t, self.tau)
        x_t = self.scheduler.add_noise(z0, eps, t)
        y_t = self.scheduler.add_noise(mask * z0, eps_only, t)
        z0, mask, c, t, m_t, x_t, y_t, eps, eps_only = (
            v.to(device) for v in (z0, mask, c, t, m_t, x_t, y_t, eps, eps_only)
        )
        eps_a = self.model.aware(x_t, t, c, m_t).float()
        eps_o = self.model.only(y_t, t, c, mask).float()
        return 4 * (m_t * (eps - eps_a)).abs().mean() + (eps_only - eps_o).abs().mean()


@dataclass
class PhaseBResult:
    final_loss: float
    seconds: float
    steps_done: int
    resumed_from: int


def train_phase_b(
    model: PixelDenoiser,
    scheduler: DDPMScheduler,
    windows: DefectWindows,
    steps: int,
    batch_size: int,
    lr: float,
    tau: float,
    seed: int,
    checkpoint_dir: Path | None = None,
    compute: ComputeParams | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint_every: int = 50,
    stop_after: int | None = None,
    ema_decay: float = 0.0,
) -> PhaseBResult:
    """Fine-tune in place, resuming from `checkpoint_dir` when it holds this same job.

    The job is identified by the settings, the starting weights (phase A) and the defect windows.
    `stop_after` ends early (used to test interruption + resume).
    """
    for p in model.unet.parameters():
        p.requires_grad_(False)
    model.unet.class_embedding.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    with torch.no_grad():
        encoded = model.encode(windows.images)
    windows = DefectWindows(encoded.cpu(), windows.masks, windows.defect_ids)
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "tau": tau,
        "seed": seed,
        "ema": ema_decay,
    }
    key = job_key(
        settings,
        *[v.detach() for v in model.state_dict().values()],
        windows.images,
        windows.masks,
        windows.defect_ids,
    )
    objective = PhaseBObjective(model, scheduler, tau)
    objective.train()
    model.unet.eval()

    def loss_fn(module: nn.Module, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        idx = torch.randint(0, len(windows.images), (batch_size,), generator=gen)
        batch = DefectWindows(windows.images[idx], windows.masks[idx], windows.defect_ids[idx])
        if torch.rand(1, generator=gen).item() < 0.5:
            batch = DefectWindows(batch.images.flip(-1), batch.masks.flip(-1), batch.defect_ids)
        return module(batch, gen)

    spec = LoopSpec("phase_b", steps, seed, key, checkpoint_dir, False, checkpoint_every, 2, ema_decay)
    loop = train_loop(objective, optimizer, loss_fn, spec, compute, on_step=on_step, stop_after=stop_after)
    model.eval()
    return PhaseBResult(loop.final_loss, loop.seconds, loop.steps_done, loop.resumed_from)
