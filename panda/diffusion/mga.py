"""Mask Guidance Adapter (method.md section 2): refines the denoiser's noise prediction given a mask.

Input: the noise prediction concatenated with the mask repeated to the same channel count. 3x3 convs
with BatchNorm + ReLU (reference widths 64-256-512-256-64; ours default narrower for CPU, set by
`finetune.mga_channels`) and a final 1x1 conv back to the noise channels. The output REPLACES the
noise prediction. The last conv starts at zero weights plus an identity skip (*ours*), so a fresh
adapter passes the base prediction through unchanged and fine-tuning starts from the phase-A model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MaskGuidanceAdapter(nn.Module):
    def __init__(self, channels: int = 3, widths: Sequence[int] = (64, 256, 512, 256, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 2 * channels
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(cin, channels, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, eps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.expand(-1, eps.shape[1], -1, -1)
        return eps + self.head(self.body(torch.cat([eps, m], dim=1)))
