"""Load the frozen parts of a pretrained text-to-image latent diffusion checkpoint (`finetune.pretrained`).

A hub id or a local folder in diffusers format goes through `DiffusionPipeline.from_pretrained`, so
diffusers resolves the pipeline's classes and the hub's own cache (HF_HOME, HF_HUB_OFFLINE) applies.
Both families the latent backend takes keep the same four parts under different names:
- CompVis LDM (`CompVis/ldm-text2im-large-256`, the paper's): `vqvae` (KL or VQ, f8), `bert` (LDMBert);
- Stable Diffusion 1.x / 2.x base: `vae`, `text_encoder` (CLIP); its safety checker is not loaded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from panda.errors import PandaError
from panda.hub import locate

ROLES = {"vae": ("vae", "vqvae"), "text_encoder": ("text_encoder", "bert")}
NOT_NEEDED = ("safety_checker", "feature_extractor", "image_encoder")


@dataclass
class PretrainedParts:
    """The frozen model: never trained, never saved with panda's outputs (it stays where it came from)."""

    unet: nn.Module  # UNet2DConditionModel
    vae: nn.Module  # AutoencoderKL or VQModel
    text_encoder: nn.Module
    tokenizer: Any
    scheduler: Any  # the checkpoint's noise schedule (its config is saved beside the adapters)
    source: str

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def modules(self) -> list[nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    def to(self, device: torch.device) -> PretrainedParts:
        for module in self.modules():
            module.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Transformers' notices about image processors of parts panda does not load (safety checker)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_pretrained(pretrained: str) -> PretrainedParts:
    """The checkpoint's UNet, autoencoder, text encoder, tokenizer and scheduler, frozen, in eval mode.

    A hub id is taken from the cache when it is there (no network), else downloaded into it."""
    from diffusers import DiffusionPipeline
    from huggingface_hub.errors import HfHubHTTPError

    # diffusers' own call into the hub client, not the user's to fix
    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
    failures = (OSError, ValueError, HfHubHTTPError)
    source, cached = locate("finetune.pretrained", pretrained, "model_index.json")
    try:
        index = DiffusionPipeline.load_config(source, local_files_only=cached)
    except failures as exc:
        if cached:
            raise PandaError(
                f"finetune.pretrained = '{pretrained}' is not a diffusers pipeline ({_reason(exc)}); "
                "give a folder written by `pipeline.save_pretrained(folder)` or a pipeline's hub id"
            ) from None
        raise PandaError(f"finetune.pretrained = '{pretrained}': not fetched ({_reason(exc)})") from None
    try:
        with _quiet_transformers():
            pipeline = DiffusionPipeline.from_pretrained(
                source, local_files_only=cached, **{name: None for name in NOT_NEEDED if name in index}
            )
    except failures as exc:
        raise PandaError(
            f"finetune.pretrained = '{pretrained}' could not be loaded: {_reason(exc)}"
        ) from None
    except ImportError as exc:
        raise PandaError(f"finetune.pretrained = '{pretrained}' needs a package: {exc}") from None
    parts: dict[str, Any] = {}
    for role, names in {
        **ROLES,
        "unet": ("unet",),
        "tokenizer": ("tokenizer",),
        "scheduler": ("scheduler",),
    }.items():
        found = [getattr(pipeline, n) for n in names if getattr(pipeline, n, None) is not None]
        if not found:
            raise PandaError(
                f"finetune.pretrained = '{pretrained}' ({index.get('_class_name')}) has no "
                f"{' or '.join(names)}: "
                "the latent backend needs a text-to-image latent diffusion pipeline (LDM or Stable Diffusion)"
            )
        parts[role] = found[0]
    if not parts["unet"].config.get("cross_attention_dim"):
        raise PandaError(f"finetune.pretrained = '{pretrained}': its UNet takes no text conditioning")
    prediction = parts["scheduler"].config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise PandaError(
            f"finetune.pretrained = '{pretrained}' predicts '{prediction}'; the PANDA losses and sampler "
            "need an epsilon-prediction model (e.g. a 512 px Stable Diffusion 2 base, not the 768 px v-model)"
        )
    result = PretrainedParts(**parts, source=pretrained)
    for module in result.modules():
        module.requires_grad_(False)
        module.eval()
    return result


def fingerprint(parts: PretrainedParts) -> torch.Tensor:
    """A few numbers that change with any frozen weight: part of the fine-tuning job's identity."""
    return torch.stack(
        [p.detach().double().sum() for module in parts.modules() for p in module.parameters()]
    ).cpu()
