"""The segmenters `train.model` names, built for a job and rebuilt from a saved `model.pt`.

- `unet` (default): panda's plain U-Net (`unet.py`), sized for a CPU by `train.base_channels`.
- `segformer`: SegFormer-B0 (`segformer.py`), the paper's segmenter; `train.pretrained` loads
  ImageNet-pretrained MiT weights (hub id or folder) where they can be had. The pick for a GPU.
- `resnet-unet`: a U-Net decoder on a ResNet-18 encoder (`encoder_unet.py`); `train.pretrained`
  loads ImageNet ResNet weights.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from panda.errors import PandaError
from panda.segment.unet import SegUNet

MODELS = ("unet", "segformer", "resnet-unet")


def build_segmenter(
    model: str, in_channels: int, base_channels: int, pretrained: str | None = None
) -> nn.Module:
    if model == "unet":
        return SegUNet(in_channels=in_channels, base_channels=base_channels)
    if model == "segformer":
        from panda.segment.segformer import SegFormer  # transformers: only for this model

        return SegFormer(in_channels, pretrained=pretrained)
    if model == "resnet-unet":
        from panda.segment.encoder_unet import EncoderUNet

        return EncoderUNet(in_channels, pretrained=pretrained)
    raise PandaError(f"train.model = '{model}': use one of {', '.join(MODELS)}")


def architecture(model: nn.Module) -> dict[str, Any]:
    """What `rebuild` needs besides the weights (no hub access at load time)."""
    if isinstance(model, SegUNet):
        channels = model.downs[0][0].in_channels
        return {"model": "unet", "in_channels": channels, "base_channels": model.head.in_channels}
    return {"model": model.name, "in_channels": model.in_channels, "config": model.config}


def rebuild(info: dict[str, Any]) -> nn.Module:
    """An untrained segmenter of the architecture `architecture` described (older files: a U-Net)."""
    if info.get("model", "unet") == "unet":
        return SegUNet(in_channels=info["in_channels"], base_channels=info["base_channels"])
    if info["model"] == "resnet-unet":
        from panda.segment.encoder_unet import EncoderUNet

        return EncoderUNet(info["in_channels"], config=info["config"])
    from panda.segment.segformer import SegFormer

    return SegFormer(info["in_channels"], config=info["config"])
