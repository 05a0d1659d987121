"""`finetune` in params.yaml: which backend, and its settings (the dataclass owns the defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

from panda.errors import PandaError

BACKENDS = ("pixel", "latent")
# how phase B cuts windows larger than `window` (phase_b.py); auto: per defect type (window_modes.py)
WINDOW_MODES = ("resize", "native", "auto")
REFERENCE_BATCH = 8  # the batch the reference's learning rate is quoted at (method.md section 2)


@dataclass
class FinetuneParams:
    backend: str = "pixel"  # pixel: a small denoiser trained here (CPU) | latent: a pretrained LDM (GPU)
    # pixel backend, phase A: the denoiser on normal windows
    steps: int = 400
    window: int = 32
    block_channels: list[int] = field(default_factory=lambda: [16, 32, 64])
    batch_size: int = 16
    lr: float = 1e-3
    train_timesteps: int = 1000
    checkpoint_every: int = 50  # both backends
    ema_decay: float = 0.999  # weights used for sampling are an EMA (diffusers' EMAModel); 0 = off
    seed: int = 0  # both backends
    # pixel backend, phase B (method.md section 2): defect embedding + two Mask Guidance Adapters
    phase_b_steps: int = 300
    phase_b_lr: float = 2e-3
    mga_channels: list[int] = field(default_factory=lambda: [16, 32, 64, 32, 16])
    pma_tau: float = 0.2  # both backends
    window_mode: str = "auto"  # phase B windows: resize to `window`, native-resolution tiles, or per type
    min_width: float = 1.0  # auto: native for types whose strokes a resize would make thinner (px)
    # latent backend (method.md section 2 as the reference does it): frozen checkpoint, tokens + adapters
    pretrained: str = "CompVis/ldm-text2im-large-256"  # hub id or local diffusers folder
    resolution: int = 256  # images resized to this (latents resolution / 8)
    init_word: str | None = None  # token initialisation; None: the defect type's name when it is one token
    latent_steps: int = 3000  # optimizer steps per defect type
    latent_batch_size: int = 8  # per process
    latent_lr: float = 1.6e-2  # AdamW rate at an effective batch of 8, scaled linearly (the reference)
    latent_mga_channels: list[int] = field(default_factory=lambda: [64, 256, 512, 256, 64])
    gradient_checkpointing: bool = False  # recompute UNet activations in the backward pass (less memory)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise PandaError(f"finetune.backend = '{self.backend}': use one of {', '.join(BACKENDS)}")
        if self.phase_b_steps < 0 or not 0 <= self.pma_tau < 1:
            raise PandaError("finetune.phase_b_steps must be >= 0 and finetune.pma_tau in [0, 1)")
        if self.window % 2 ** (len(self.block_channels) - 1):
            raise PandaError(
                f"finetune.window = {self.window} must be divisible by {2 ** (len(self.block_channels) - 1)}"
            )
        if self.steps < 1:
            raise PandaError("finetune.steps must be >= 1")
        if self.window_mode not in WINDOW_MODES:
            raise PandaError(
                f"finetune.window_mode = '{self.window_mode}': use one of {', '.join(WINDOW_MODES)}"
            )
        if self.min_width < 0:
            raise PandaError(f"finetune.min_width = {self.min_width} must be >= 0 (px)")
        if not 0 <= self.ema_decay < 1:
            raise PandaError("finetune.ema_decay must lie in [0, 1) (0 = no EMA)")
        if self.resolution < 8 or self.resolution % 8:
            raise PandaError(f"finetune.resolution = {self.resolution} must be a positive multiple of 8")
        if self.latent_steps < 0 or self.latent_batch_size < 1 or self.latent_lr <= 0:
            raise PandaError("finetune.latent_steps must be >= 0, latent_batch_size >= 1 and latent_lr > 0")
        if not self.pretrained.strip():
            raise PandaError("finetune.pretrained is empty: give a hub id or a local diffusers folder")

    def latent_rate(self, effective_batch: int) -> float:
        """`latent_lr` scaled to the effective batch (batch x processes x accumulation), as the reference."""
        return self.latent_lr * effective_batch / REFERENCE_BATCH
