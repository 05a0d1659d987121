"""A plain U-Net for binary defect segmentation, sized for CPU training (base 16 -> ~1.9M params)."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SegUNet(nn.Module):
    """Four down/up levels; outputs one logit per pixel. Input sides must be multiples of 16."""

    def __init__(self, in_channels: int = 3, base_channels: int = 16, depth: int = 4) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.downs = nn.ModuleList([_block(in_channels, widths[0])])
        self.downs.extend(_block(widths[i], widths[i + 1]) for i in range(depth))
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merges = nn.ModuleList(_block(widths[i] * 2, widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.ups, self.merges, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
