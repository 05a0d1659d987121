"""The denoiser behind PANDA's sampler: base noise predictor + defect embedding + the two adapters.

The sampler only calls `Denoiser.aware(...)`, `Denoiser.only(...)` and, with guidance,
`Denoiser.normal(...)`, so the latent backend (`latent.py`: a pretrained LDM / Stable Diffusion)
plugs in by implementing the same three methods plus `encode`/`decode` (pixel space: identity, or
RGB <-> gray when the dataset is grayscale). `load_denoiser` reads either from a finetune output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch
from diffusers import UNet2DModel
from torch import nn

from panda.diffusion.mga import MaskGuidanceAdapter


class Denoiser(Protocol):
    """What the phased sampler needs from a model (pixel or latent space)."""

    def aware(
        self, x: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor: ...

    def only(
        self, y: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor: ...

    def normal(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The prediction for a normal (defect-free) image: the reference for `synth.guidance_scale`."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


class PixelDenoiser(nn.Module):
    """UNet2DModel whose class embedding carries the defect type (row 0 = normal, used in phase A)."""

    paste_margin = 0  # the sampled pixels are pasted under the mask exactly

    def __init__(
        self,
        unet: UNet2DModel,
        defect_types: Sequence[str],
        mga_widths: Sequence[int],
        window_mode: str | Mapping[str, str] = "resize",
    ) -> None:
        super().__init__()
        self.unet = unet
        self.defect_types = list(defect_types)
        self.mga_widths = list(mga_widths)
        # how phase B cut each type's windows (resize / native); the sampler follows it by default
        self.window_modes = (
            {t: window_mode for t in self.defect_types}
            if isinstance(window_mode, str)
            else {t: window_mode.get(t, "resize") for t in self.defect_types}
        )
        channels = unet.config.out_channels
        self.adapter_aware = MaskGuidanceAdapter(channels, mga_widths)
        self.adapter_only = MaskGuidanceAdapter(channels, mga_widths)

    @property
    def window(self) -> int:
        """The side of the windows it was trained on."""
        return int(self.unet.config.sample_size)

    @property
    def native_step(self) -> int:
        """Window sides must divide by this: a UNet with n levels halves the side n - 1 times."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    def model_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The sampler works at the window's own resolution: the mask as it is."""
        return mask

    def base(self, x: torch.Tensor, t: torch.Tensor, defect: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=defect).sample

    def aware(
        self, x: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.adapter_aware(self.base(x, t, defect), mask)

    def only(
        self, y: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.adapter_only(self.base(y, t, defect), mask)

    def normal(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Phase A's model: class 0 (normal), no adapter."""
        return self.base(x, t, torch.zeros(len(x), dtype=torch.long, device=x.device))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """RGB in [-1, 1] -> the model's space: the same pixels, or their gray level for a 1-channel model."""
        channels = self.unet.config.in_channels
        return images.mean(dim=1, keepdim=True) if channels == 1 and images.shape[1] != 1 else images

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.expand(-1, 3, -1, -1) if z.shape[1] == 1 else z

    def defect_id(self, defect_type: str) -> int:
        return self.defect_types.index(defect_type) + 1

    def save(self, out_dir: Path) -> None:
        """diffusers layout for the UNet (`unet/`), adapters and defect names beside it."""
        self.unet.save_pretrained(out_dir / "unet")
        torch.save(
            {"aware": self.adapter_aware.state_dict(), "only": self.adapter_only.state_dict()},
            out_dir / "adapters.pt",
        )
        (out_dir / "panda.json").write_text(
            json.dumps(
                {
                    "defect_types": self.defect_types,
                    "mga_widths": self.mga_widths,
                    "window_modes": self.window_modes,
                },
                indent=2,
            )
        )

    @classmethod
    def load(cls, out_dir: Path) -> PixelDenoiser:
        meta = json.loads((out_dir / "panda.json").read_text())
        model = cls(
            UNet2DModel.from_pretrained(out_dir / "unet"),
            meta["defect_types"],
            meta["mga_widths"],
            # before per-type modes: one mode for all; before window modes: resize
            meta.get("window_modes", meta.get("window_mode", "resize")),
        )
        state = torch.load(out_dir / "adapters.pt", map_location="cpu", weights_only=True)
        model.adapter_aware.load_state_dict(state["aware"])
        model.adapter_only.load_state_dict(state["only"])
        return model.eval()


def load_denoiser(model_dir: Path) -> nn.Module:
    """The denoiser `panda finetune` wrote to `model_dir`, of whichever backend (panda.json says)."""
    meta = json.loads((Path(model_dir) / "panda.json").read_text())
    if meta.get("backend", "pixel") == "latent":
        from panda.diffusion.latent import LatentDenoiser  # needs transformers: only for this backend

        return LatentDenoiser.load(Path(model_dir))
    return PixelDenoiser.load(Path(model_dir))
