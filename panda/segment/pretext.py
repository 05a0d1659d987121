"""Self-supervised start for the segmenter: restore normal images from local corruptions.

Why: with a handful of physical defects per type, a segmenter trained from scratch learns little
about what the product's normal surface looks like. This pretext teaches the whole U-Net that
texture from the normal training images alone (no masks, no defects, nothing from the test split),
in the spirit of Models Genesis: a few rectangles per image are corrupted (a patch copied from
elsewhere in the same image, additive noise, or a brightness change) and the network restores the
original. It predicts the correction to add to its input (residual learning, as image-restoration
networks do), so it starts at the identity and its features must say where the image is wrong and
by how much: the signal a defect segmenter needs. It stands in for the pretrained encoder that
cannot be downloaded here.

With a `cache_dir` the run saves its state every `checkpoint_every` steps under a name keyed by the
job (params, width and exact images) and resumes from it; a finished job is a cache: run again, it
trains nothing. DVC experiments that change only later params (e.g. `synth.method`) share it.
"""

from __future__ import annotations

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
from panda.segment.schedule import warmup_cosine
from panda.segment.unet import SegUNet

# The segmentation head starts at this logit after the pretext (sigmoid ~0.05, about the share of
# defect pixels): the restoration head says nothing about defects, so it is reset, not kept.
HEAD_PRIOR_LOGIT = -3.0
# Part of the cache key: a checkpoint of an earlier objective (whole-image prediction at a constant
# rate, which left one seed in two with a near-flat last block) or of the loop before panda.engine
# (another batch RNG) is never resumed as this one.
OBJECTIVE = "residual-warmup-cosine-engine"


@dataclass
class PretextParams:
    steps: int = 600
    batch_size: int = 16
    lr: float = 0.002
    seed: int = 0

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise PandaError(
                f"pretext: steps ({self.steps}) and batch_size ({self.batch_size}) must be >= 1, "
                f"lr ({self.lr}) > 0"
            )


def _randint(low: int, high: int, gen: torch.Generator) -> int:
    return int(torch.randint(low, high, (1,), generator=gen))


def corrupt(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """2-5 rectangles (6-39 px a side) per image: copied from elsewhere, noised, or re-lit."""
    out = images.clone()
    n, _, h, w = images.shape
    for i in range(n):
        for _ in range(_randint(2, 6, gen)):
            ph, pw = min(_randint(6, 40, gen), h - 1), min(_randint(6, 40, gen), w - 1)
            y0, x0 = _randint(0, h - ph, gen), _randint(0, w - pw, gen)
            kind = _randint(0, 3, gen)
            if kind == 0:
                y1, x1 = _randint(0, h - ph, gen), _randint(0, w - pw, gen)
                out[i, :, y0 : y0 + ph, x0 : x0 + pw] = images[i, :, y1 : y1 + ph, x1 : x1 + pw]
            elif kind == 1:
                out[i, :, y0 : y0 + ph, x0 : x0 + pw] += 0.15 * torch.randn((1, ph, pw), generator=gen)
            else:
                out[i, :, y0 : y0 + ph, x0 : x0 + pw] *= float(0.6 + 0.8 * torch.rand(1, generator=gen))
    return out.clamp(0, 1)


def restore(model: SegUNet, corrupted: torch.Tensor) -> torch.Tensor:
    """The pretext's output: the corrupted image (normalized, first channel) plus the predicted fix."""
    x = normalize(corrupted)
    return x[:, :1] + model(x)


def pretrain_restoration(
    images: torch.Tensor,
    base_channels: int,
    params: PretextParams,
    cache_dir: Path | None = None,
    checkpoint_every: int = 50,
    compute: ComputeParams | None = None,
    stop_after: int | None = None,
) -> SegUNet:
    """A SegUNet trained to restore corrupted `images` ([0, 1], N x C x H x W); head reset to segment.

    `stop_after` ends the run after that many steps (to test interruption and resume).
    """
    params.validate()
    if len(images) == 0:
        raise PandaError("pretext: no normal training images to pretrain on")
    torch.manual_seed(params.seed)
    model = SegUNet(in_channels=images.shape[1], base_channels=base_channels)
    with torch.no_grad():  # a zero correction: training starts exactly at copying the input
        model.head.weight.zero_()
        model.head.bias.zero_()
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=1e-4)
    key = job_key({**asdict(params), "base_channels": base_channels, "objective": OBJECTIVE}, images)

    def loss_fn(module: nn.Module, gen: torch.Generator, device: torch.device) -> torch.Tensor:
        batch = images[torch.randint(0, len(images), (params.batch_size,), generator=gen)]
        if torch.rand(1, generator=gen) < 0.5:
            batch = batch.flip(-1)
        if torch.rand(1, generator=gen) < 0.5:
            batch = batch.flip(-2)
        corrupted = corrupt(batch, gen).to(device)
        return F.l1_loss(restore(module, corrupted).float(), normalize(batch[:, :1]).to(device))

    spec = LoopSpec("pretext", params.steps, params.seed, key, cache_dir, True, checkpoint_every)
    schedule = lambda step: warmup_cosine(step, params.steps, params.lr)  # noqa: E731
    train_loop(model, optimizer, loss_fn, spec, compute, schedule, stop_after=stop_after)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(HEAD_PRIOR_LOGIT)
    return model
