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
The base UNet stays frozen unless `unfreeze_base` (*ours*: the class-embedding table stands in for the
reference's textual-inversion tokens and is always trained).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image
from tqdm.auto import tqdm

from panda.diffusion.denoiser import PixelDenoiser
from panda.diffusion.pixel import make_ema
from panda.io import job_key, load_checkpoint, save_checkpoint

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


def phase_b_loss(
    model: PixelDenoiser, scheduler: DDPMScheduler, batch: DefectWindows, tau: float, gen: torch.Generator
) -> torch.Tensor:
    z0, mask, c = batch.images, batch.masks, batch.defect_ids
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z0),), generator=gen)
    eps = torch.randn(z0.shape, generator=gen)
    eps_only = torch.randn(z0.shape, generator=gen)
    m_t = pma_mask(mask, t, scheduler.config.num_train_timesteps, tau)
    eps_a = model.aware(scheduler.add_noise(z0, eps, t), t, c, m_t)
    eps_o = model.only(scheduler.add_noise(mask * z0, eps_only, t), t, c, mask)
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
    unfreeze_base: bool,
    seed: int,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 50,
    stop_after: int | None = None,
    ema_decay: float = 0.0,
) -> PhaseBResult:
    """Fine-tune in place, resuming from `checkpoint` when it belongs to this same job.

    The job is identified by the settings, the starting weights (phase A) and the defect windows; each
    step draws its batch from a generator seeded by (seed, step), so a resumed run ends with the same
    weights as an uninterrupted one. `stop_after` ends early (used to test interruption + resume).
    """
    for p in model.unet.parameters():
        p.requires_grad_(unfreeze_base)
    model.unet.class_embedding.weight.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = make_ema(params, ema_decay)
    windows = DefectWindows(model.encode(windows.images), windows.masks, windows.defect_ids)
    settings = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "tau": tau,
        "seed": seed,
        "ema": ema_decay,
    }
    key = job_key(
        {**settings, "unfreeze_base": unfreeze_base},
        *[v.detach() for v in model.state_dict().values()],
        windows.images,
        windows.masks,
        windows.defect_ids,
    )
    start, loss_value = 0, float("nan")  # the last step's loss, kept in the checkpoint for resumed runs
    if (state := load_checkpoint(checkpoint, key)) is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
        loss_value = float(state.get("loss", loss_value))
    model.train()
    model.unet.train(unfreeze_base)
    began = time.perf_counter()
    end = steps if stop_after is None else min(steps, start + stop_after)
    bar = tqdm(range(start, end), desc="finetune (phase B)", unit="step", initial=start, total=steps)
    for step in bar:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 500_000 + step)
        idx = torch.randint(0, len(windows.images), (batch_size,), generator=gen)
        flip = torch.rand(1, generator=gen).item() < 0.5
        batch = DefectWindows(windows.images[idx], windows.masks[idx], windows.defect_ids[idx])
        if flip:
            batch = DefectWindows(batch.images.flip(-1), batch.masks.flip(-1), batch.defect_ids)
        loss = phase_b_loss(model, scheduler, batch, tau, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.step(params)
        loss_value = loss.item()
        bar.set_postfix(loss=f"{loss_value:.4f}")
        done = step + 1
        if checkpoint is not None and (done % checkpoint_every == 0 or done == end):
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": done,
                "loss": loss_value,
            }
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(checkpoint, {**state, "key": key})
        if on_step is not None:
            on_step(done, {"phase_b_loss": loss_value})
    if ema is not None:
        ema.copy_to(params)
    model.eval()
    return PhaseBResult(loss_value, time.perf_counter() - began, end, start)
