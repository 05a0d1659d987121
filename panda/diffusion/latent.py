"""The `latent` backend's denoiser: a frozen pretrained LDM / Stable Diffusion + what PANDA trains.

What is trained, per defect type (method.md section 2): a placeholder token of 4 vectors in the
prompt "Anomaly *" (`tokens.py`) and two Mask Guidance Adapters on the UNet's noise prediction. The
frozen checkpoint (`pretrained.py`) is held outside the module tree, so `state_dict()`, checkpoints
and DDP see only the trained parts, and the output folder stays small: it names the checkpoint,
which is loaded again from the hub cache or its folder.
Implements the sampler's `Denoiser`: the UNet works on VAE latents (scaled by the VAE's
`scaling_factor`), `encode`/`decode` map [-1, 1] RGB images to and from them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from panda.diffusion import tokens
from panda.diffusion.mga import MaskGuidanceAdapter
from panda.diffusion.pretrained import PretrainedParts, load_pretrained

BACKEND = "latent"
PASTE_MARGIN = 2  # image px: the decoded patch is pasted over the mask dilated by this


def latent_mask(mask: torch.Tensor, size: int, keep_thin: bool = False) -> torch.Tensor:
    """A (B, 1, H, W) {0, 1} mask at latent size: area-resized and thresholded at 0.5 (the reference).
    `keep_thin` (*ours*, sampling only): a mask that would vanish keeps every latent cell it touches,
    so a crack thinner than a latent cell is still generated."""
    area = F.interpolate(mask.float(), size=(size, size), mode="area")
    hard = (area >= 0.5).float()
    if keep_thin:
        empty = hard.flatten(1).sum(1) == 0
        hard[empty] = (area[empty] > 0).float()
    return hard


class DefectTypeParts(nn.Module):
    """What is trained for one defect type: its token vectors and its two adapters."""

    def __init__(self, vectors: torch.Tensor, channels: int, mga_widths: Sequence[int]) -> None:
        super().__init__()
        self.vectors = nn.Parameter(vectors.detach().clone().float())
        self.aware = MaskGuidanceAdapter(channels, mga_widths)
        self.only = MaskGuidanceAdapter(channels, mga_widths)


class OneTypeView(nn.Module):
    """The denoiser seen through one defect type: its module tree is that type's parts only, so a
    training loop prepares, checkpoints and restores nothing of the other types."""

    def __init__(self, model: LatentDenoiser, defect_type: str) -> None:
        super().__init__()
        self.trained = model.types[model.slugs[defect_type]]
        object.__setattr__(self, "model", model)

    def aware(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model.aware(*args)

    def only(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model.only(*args)


class LatentDenoiser(nn.Module):
    """Per defect type: 4 token vectors + the anomaly-aware and anomaly-only adapters."""

    paste_margin = PASTE_MARGIN

    def __init__(
        self,
        parts: PretrainedParts,
        defect_types: Sequence[str],
        mga_widths: Sequence[int],
        resolution: int,
        token_init: dict[str, torch.Tensor],
        init_words: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        object.__setattr__(self, "parts", parts)  # not a submodule: frozen, not saved, not wrapped by DDP
        self.defect_types = list(defect_types)
        self.mga_widths = list(mga_widths)
        self.resolution = resolution
        self.init_words = dict(init_words or {})
        self.window_modes = {t: "resize" for t in self.defect_types}
        self.slugs = {t: tokens.slug(t) for t in self.defect_types}
        channels = parts.unet.config.out_channels
        self.types = nn.ModuleDict(
            {self.slugs[t]: DefectTypeParts(token_init[t], channels, mga_widths) for t in self.defect_types}
        )
        first = tokens.add_placeholders(parts.tokenizer, self.defect_types)
        tokens.install(parts.text_encoder, [p.vectors for p in self.types.values()], first)
        self._prompt_ids = {t: tokens.token_ids(parts.tokenizer, tokens.prompt(t)) for t in self.defect_types}
        self._empty_ids = tokens.token_ids(parts.tokenizer, "")
        self._cache: dict[str, torch.Tensor] = {}

    @property
    def window(self) -> int:
        return self.resolution

    @property
    def latent_size(self) -> int:
        return self.resolution // 2 ** (len(self.parts.vae.config.block_out_channels) - 1)

    @property
    def native_step(self) -> int:
        """Window sides must divide by this: the VAE's factor times the UNet's."""
        unet_levels = len(self.parts.unet.config.block_out_channels) - 1
        return self.resolution // self.latent_size * 2**unet_levels

    def defect_id(self, defect_type: str) -> int:
        return self.defect_types.index(defect_type) + 1

    def vectors(self, defect_type: str) -> nn.Parameter:
        return self.types[self.slugs[defect_type]].vectors

    def _place(self) -> torch.device:
        """The frozen parts follow the trained ones (Accelerate moves only the module tree)."""
        device = self.vectors(self.defect_types[0]).device
        if self.parts.device != device:
            self.parts.to(device)
            self._cache.clear()
        return device

    def _text(self, key: str, ids: torch.Tensor) -> torch.Tensor:
        """Text-encoder states of a prompt; cached while sampling (no gradient), fresh while training."""
        if torch.is_grad_enabled():
            return self.parts.text_encoder(ids.to(self._place()))[0]
        if key not in self._cache:
            self._cache[key] = self.parts.text_encoder(ids.to(self._place()))[0]
        return self._cache[key]

    def _unet(self, x: torch.Tensor, t: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.parts.unet(x, t, encoder_hidden_states=states.expand(len(x), -1, -1)).sample

    def _branch(
        self, branch: str, x: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        self._place()
        out = None
        for d in defect.unique().tolist():
            defect_type = self.defect_types[d - 1]
            idx = (defect == d).nonzero().flatten()
            states = self._text(defect_type, self._prompt_ids[defect_type])
            adapter = getattr(self.types[self.slugs[defect_type]], branch)
            eps = adapter(self._unet(x[idx], t[idx], states), mask[idx])
            out = eps.new_zeros(x.shape) if out is None else out
            out = out.index_put((idx,), eps)
        return out

    def aware(
        self, x: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self._branch("aware", x, t, defect, mask)

    def only(
        self, y: torch.Tensor, t: torch.Tensor, defect: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        return self._branch("only", y, t, defect, mask)

    def normal(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The empty prompt through the plain UNet: classifier-free guidance's unconditional term."""
        self._place()
        return self._unet(x, t, self._text("", self._empty_ids))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] RGB -> scaled latents (the posterior mean: a background is encoded, not sampled)."""
        return self.posterior(images)[0] * self.parts.scaling_factor

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unscaled latent mean and std (std 0 for a VQ autoencoder)."""
        self._place()
        vae = self.parts.vae
        images = images.to(next(vae.parameters()).device, next(vae.parameters()).dtype)
        encoded = vae.encode(images)
        if hasattr(encoded, "latent_dist"):
            return encoded.latent_dist.mean, encoded.latent_dist.std
        return encoded.latents, torch.zeros_like(encoded.latents)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self._place()
        vae = self.parts.vae
        return vae.decode(z.to(next(vae.parameters()).dtype) / self.parts.scaling_factor).sample

    def model_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A window-sized target mask as the sampler needs it: at latent size."""
        return latent_mask(mask, self.latent_size, keep_thin=True)

    def save(self, out_dir: Path) -> None:
        """Tokens in diffusers' textual-inversion format, adapters, and what names the frozen checkpoint."""
        (out_dir / "textual_inversion").mkdir(parents=True, exist_ok=True)
        for t in self.defect_types:
            path = out_dir / "textual_inversion" / f"{self.slugs[t]}.safetensors"
            tokens.save_embedding(path, t, self.vectors(t))
        adapters = {
            s: {"aware": p.aware.state_dict(), "only": p.only.state_dict()} for s, p in self.types.items()
        }
        torch.save(adapters, out_dir / "adapters.pt")
        self.parts.scheduler.save_pretrained(out_dir / "scheduler")
        meta = {
            "backend": BACKEND,
            "pretrained": self.parts.source,
            "resolution": self.resolution,
            "defect_types": self.defect_types,
            "mga_widths": self.mga_widths,
            "window_modes": self.window_modes,
            "tokens": {t: tokens.placeholder(t) for t in self.defect_types},
            "prompts": {t: tokens.prompt(t) for t in self.defect_types},
            "init_words": self.init_words,
        }
        (out_dir / "panda.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, out_dir: Path, parts: PretrainedParts | None = None) -> LatentDenoiser:
        meta = json.loads((out_dir / "panda.json").read_text())
        parts = parts or load_pretrained(meta["pretrained"])
        init = {
            t: tokens.load_embedding(out_dir / "textual_inversion" / f"{tokens.slug(t)}.safetensors", t)
            for t in meta["defect_types"]
        }
        model = cls(
            parts, meta["defect_types"], meta["mga_widths"], meta["resolution"], init, meta["init_words"]
        )
        state = torch.load(out_dir / "adapters.pt", map_location="cpu", weights_only=True)
        for s, p in model.types.items():
            p.aware.load_state_dict(state[s]["aware"])
            p.only.load_state_dict(state[s]["only"])
        return model.eval()
