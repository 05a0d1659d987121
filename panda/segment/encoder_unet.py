"""A U-Net decoder on a ResNet-18 encoder (`train.model: resnet-unet`), pretrained where reachable.

The encoder is transformers' `ResNetBackbone` (ResNet-18 from its config, or `train.pretrained`: a
hub id such as `microsoft/resnet-18`, ImageNet weights, or a local folder). torchvision's and timm's
encoders are the usual source, but their wheels for this project's CPU torch build do not load here.
The decoder merges the stage features from 1/32 back to 1/4 of the input, then refines at full
resolution with the input image itself, so thin defects keep their pixels. Gray images are repeated
to 3 channels so ImageNet weights apply.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from panda.hub import load_transformers_model
from panda.segment.unet import _block

RESNET18 = {
    "embedding_size": 64,
    "hidden_sizes": [64, 128, 256, 512],
    "depths": [2, 2, 2, 2],
    "layer_type": "basic",
}
FEATURES = ["stage1", "stage2", "stage3", "stage4"]
REFINE = 16  # channels of the full-resolution refinement


class EncoderUNet(nn.Module):
    name = "resnet-unet"  # its `train.model`

    def __init__(
        self, in_channels: int = 3, config: dict[str, Any] | None = None, pretrained: str | None = None
    ) -> None:
        super().__init__()
        from transformers import ResNetBackbone, ResNetConfig

        self.in_channels = in_channels
        if pretrained is None:
            self.encoder = ResNetBackbone(
                ResNetConfig(**{**RESNET18, **(config or {}), "out_features": FEATURES})
            )
        else:
            self.encoder = load_transformers_model(
                "train.pretrained", pretrained, ResNetBackbone, "microsoft/resnet-18", out_features=FEATURES
            )
        widths = list(self.encoder.channels)
        self.merges = nn.ModuleList(_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(3)))
        self.refine = _block(widths[0] + 3, REFINE)
        self.head = nn.Conv2d(REFINE, 1, 1)

    @property
    def config(self) -> dict[str, Any]:
        return self.encoder.config.to_diff_dict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        features = list(self.encoder(x).feature_maps)
        y = features.pop()
        for merge in self.merges:
            skip = features.pop()
            y = merge(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear"), skip], dim=1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear")
        return self.head(self.refine(torch.cat([y, x], dim=1)))
