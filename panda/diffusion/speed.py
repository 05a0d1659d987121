"""Time PANDA's phased sampler against a plain DDIM inpainting loop on the same model and inputs.

Both samplers get the same denoiser, guidance, scheduler, windows, masks and step count, so the ratio isolates
what the method adds per step (mask bookkeeping, background injection, the second branch's paste).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from panda.diffusion.denoiser import Denoiser
from panda.diffusion.sampler import SamplerConfig, phased_sample, plain_inpaint


class CountingDenoiser:
    """Forwards to a denoiser and counts image-evaluations (a batch of B images counts B)."""

    def __init__(self, inner: Denoiser) -> None:
        self.inner, self.evaluations = inner, 0

    def aware(self, x, t, defect, mask):
        self.evaluations += len(x)
        return self.inner.aware(x, t, defect, mask)

    def only(self, y, t, defect, mask):
        self.evaluations += len(y)
        return self.inner.only(y, t, defect, mask)

    def normal(self, x, t):
        self.evaluations += len(x)
        return self.inner.normal(x, t)

    def encode(self, images):
        return self.inner.encode(images)

    def decode(self, z):
        return self.inner.decode(z)


@dataclass
class SpeedResult:
    sampler: str
    batch_size: int
    window: int
    steps: int
    seconds_per_batch: float  # median over repeats
    images_per_second: float
    denoiser_calls_per_image: float


def time_samplers(
    denoiser: Denoiser,
    scheduler: DDIMScheduler | DDPMScheduler,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: SamplerConfig,
    repeats: int = 3,
) -> list[SpeedResult]:
    """[panda, plain DDIM inpainting] on one (background, mask, defect) batch, as the synthesizer
    prepares it, each run `repeats` times after a warm-up run."""
    background, mask, defect = batch
    runs = {
        "panda": lambda d, g: phased_sample(d, scheduler, background, mask, defect, config, g),
        "plain_inpaint": lambda d, g: plain_inpaint(
            d, scheduler, background, mask, defect, g, config.guidance_scale
        ),
    }
    results = []
    for name, run in runs.items():
        run(denoiser, torch.Generator().manual_seed(0))
        times, counter = [], CountingDenoiser(denoiser)
        for r in range(repeats):
            began = time.perf_counter()
            run(counter, torch.Generator().manual_seed(r))
            times.append(time.perf_counter() - began)
        median = statistics.median(times)
        results.append(
            SpeedResult(
                sampler=name,
                batch_size=len(background),
                window=int(background.shape[-1]),
                steps=len(scheduler.timesteps),
                seconds_per_batch=round(median, 4),
                images_per_second=round(len(background) / median, 2),
                denoiser_calls_per_image=counter.evaluations / (repeats * len(background)),
            )
        )
    return results
