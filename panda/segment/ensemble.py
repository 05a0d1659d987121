"""Several trained segmenters scored as one: the mean of their defect probabilities.

Why: on Magnetic Tile, segmenters that differ only in their seed differ by up to 0.15 in macro pixel
AUROC. The mean map of a method's seed models (a deep ensemble) is a less noisy reading of what its
training data taught than any single seed, at the inference cost of all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from panda.errors import PandaError

# Probabilities are clamped this far from 0 and 1 before the logit, so that sigmoid(logit) round-trips.
EPS = 1e-6


class SegEnsemble(nn.Module):
    """Drop-in for a SegUNet wherever logits are expected (`predict_maps`, `evaluate`)."""

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise PandaError("an ensemble needs at least one segmenter")
        self.models = nn.ModuleList(models)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prob = torch.stack([torch.sigmoid(m(x)) for m in self.models]).mean(0)
        return torch.logit(prob, eps=EPS)
