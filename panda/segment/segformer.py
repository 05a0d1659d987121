"""SegFormer-B0 (transformers' `SegformerForSemanticSegmentation`), the paper's segmenter, as panda's.

One logit per pixel, bilinearly upsampled from SegFormer's quarter-resolution output to the input's
size, so it drops in wherever the U-Net's logits are used (loss, validation, evaluate, predict, TTA).
Built from its config (transformers' defaults are B0: 3.7M parameters), or from pretrained weights
(`train.pretrained`: a hub id such as `nvidia/mit-b0`, ImageNet-pretrained MiT, or a local folder);
the decode head is new either way. Gray images are repeated to 3 channels so ImageNet weights apply.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from panda.hub import load_transformers_model


class SegFormer(nn.Module):
    name = "segformer"  # its `train.model`

    def __init__(
        self, in_channels: int = 3, config: dict[str, Any] | None = None, pretrained: str | None = None
    ) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        self.in_channels = in_channels  # the data's (1: gray, repeated to RGB in `forward`)
        if pretrained is None:
            config = SegformerConfig(**{**(config or {}), "num_labels": 1})
            self.net = SegformerForSemanticSegmentation(config)
            return
        self.net = load_transformers_model(
            "train.pretrained", pretrained, SegformerForSemanticSegmentation, "nvidia/mit-b0",
            num_labels=1, ignore_mismatched_sizes=True,
        )  # fmt: skip

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this architecture without the hub (saved with the weights)."""
        return self.net.config.to_diff_dict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        logits = self.net(pixel_values=x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
