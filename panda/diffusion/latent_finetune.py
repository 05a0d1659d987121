"""Fine-tune the latent backend on one category (method.md section 2, as the reference does it).

The pretrained UNet, autoencoder and text encoder stay frozen. For each defect type in turn, its 4
token vectors (initialised from `finetune.init_word` or the type's name) and its two Mask Guidance
Adapters train on that type's gen_train images, resized to `finetune.resolution`, with phase B's loss
(`PhaseBObjective`: L1, aware term weighted 4 under the PMA mask, only term 1) on VAE latents drawn
from the encoder's posterior each step, masks area-resized to the latents and thresholded at 0.5.
AdamW at `latent_lr` for an effective batch of 8, scaled linearly; one `train_loop` per type, so each
checkpoints and resumes on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from panda.compute import ComputeParams, make_accelerator
from panda.data.preprocess import category_rows
from panda.diffusion import tokens
from panda.diffusion.latent import LatentDenoiser, OneTypeView, latent_mask
from panda.diffusion.params import FinetuneParams
from panda.diffusion.phase_b import DefectWindows, PhaseBObjective
from panda.diffusion.pretrained import PretrainedParts, fingerprint, load_pretrained
from panda.engine import LoopResult, LoopSpec, train_loop
from panda.errors import PandaError
from panda.io import atomic_dir, job_key, read_image

ENCODE_BATCH = 8


@dataclass
class TypeLatents:
    """One defect type's training set in latent space, both unflipped and mirrored (index 0 / 1)."""

    mean: torch.Tensor  # (2, N, 4, h, w) unscaled posterior mean
    std: torch.Tensor  # (2, N, 4, h, w)
    masks: torch.Tensor  # (2, N, 1, h, w) in {0, 1}


def load_examples(
    processed_dir: Path, rows: pd.DataFrame, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """gen_train images (N, 3, R, R) in [-1, 1], bicubic-resized, and their masks (N, 1, H, W) in {0, 1}."""
    images, masks = [], []
    for _, r in rows.iterrows():
        image = Image.fromarray(read_image(processed_dir / r["image_path"], "RGB"))
        images.append(np.asarray(image.resize((resolution, resolution), Image.BICUBIC)))
        masks.append(read_image(processed_dir / r["mask_path"], "L") >= 128)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(np.stack(masks)).unsqueeze(1).float()


@torch.no_grad()
def encode_type(model: LatentDenoiser, images: torch.Tensor, masks: torch.Tensor) -> TypeLatents:
    means, stds = [], []
    for view in (images, images.flip(-1)):
        parts = [model.posterior(view[i : i + ENCODE_BATCH]) for i in range(0, len(view), ENCODE_BATCH)]
        means.append(torch.cat([m for m, _ in parts]).float().cpu())
        stds.append(torch.cat([s for _, s in parts]).float().cpu())
    small = latent_mask(masks, model.latent_size)
    return TypeLatents(torch.stack(means), torch.stack(stds), torch.stack([small, small.flip(-1)]))


def _batch_fn(data: TypeLatents, defect_id: int, batch_size: int, scale: float):
    def draw(gen: torch.Generator) -> DefectWindows:
        n = data.mean.shape[1]
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        flip = (torch.rand(batch_size, generator=gen) < 0.5).long()
        mean, std = data.mean[flip, idx], data.std[flip, idx]
        z0 = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
        return DefectWindows(z0, data.masks[flip, idx], torch.full((batch_size,), defect_id))

    return draw


@dataclass
class LatentFinetuneResult:
    model: LatentDenoiser
    loops: dict[str, LoopResult]
    n_examples: dict[str, int]

    @property
    def window_modes(self) -> dict[str, str]:
        return self.model.window_modes

    def save(self, out_dir: Path) -> None:
        """Tokens (diffusers textual-inversion files), adapters, scheduler and the checkpoint's name."""
        with atomic_dir(out_dir, "diffusion") as tmp:
            self.model.cpu().save(tmp)

    def trained_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def frozen_parameters(self) -> int:
        return sum(p.numel() for m in self.model.parts.modules() for p in m.parameters())

    def report(self, out_dir: Path) -> str:
        lines = [
            f"latent backend on {self.model.parts.source}: {self.trained_parameters() / 1e6:.2f}M trained "
            f"parameters, {self.frozen_parameters() / 1e6:.1f}M frozen"
        ]
        for t, loop in self.loops.items():
            lines.append(
                f"  {t} ('{tokens.prompt(t)}', from '{self.model.init_words[t]}'): {loop.steps_done} steps "
                f"(resumed at {loop.resumed_from}) on {self.n_examples[t]} images in {loop.seconds:.1f}s, "
                f"loss {loop.final_loss:.4f}"
            )
        return "\n".join(lines) + f"\n-> {out_dir}"

    def summary(self) -> dict[str, float | int]:
        """The numbers `reports/finetune_metrics.json` and MLflow get."""
        out: dict[str, float | int] = {
            "latent_seconds": round(sum(loop.seconds for loop in self.loops.values()), 2),
            "latent_resumed_from": min((loop.resumed_from for loop in self.loops.values()), default=0),
            "n_parameters": self.trained_parameters(),
            "n_defect_images": sum(self.n_examples.values()),
            "trained": 1,
        }
        for t, loop in self.loops.items():
            out[f"latent_loss_{tokens.slug(t)}"] = loop.final_loss
        return out


def initial_vectors(parts: PretrainedParts, defect_types: list[str], chosen: str | None) -> tuple[dict, dict]:
    """(vectors, words): each type's 4 vectors start as copies of its initialisation word's row."""
    table = parts.text_encoder.get_input_embeddings().weight.detach()
    words = {t: tokens.init_word(parts.tokenizer, t, chosen) for t in defect_types}
    rows = {t: table[tokens.word_id(parts.tokenizer, w)].float().cpu() for t, w in words.items()}
    return {t: rows[t].repeat(tokens.VECTORS, 1) for t in defect_types}, words


def finetune_latent(
    manifest: pd.DataFrame,
    processed_dir: Path,
    category: str,
    params: FinetuneParams,
    compute: ComputeParams | None = None,
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    stop_after: int | None = None,
    parts: PretrainedParts | None = None,
) -> LatentFinetuneResult:
    """Tokens and adapters for every defect type of `category` on the frozen `finetune.pretrained`."""
    rows = category_rows(manifest, category)
    gen = rows[rows["split"] == "gen_train"].sort_values("image_path")
    defect_types = sorted(gen["defect_type"].unique())
    if not defect_types:
        raise PandaError(f"category '{category}' has no gen_train defects to fine-tune on")
    parts = parts or load_pretrained(params.pretrained)
    frozen = fingerprint(parts)
    if params.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    vectors, words = initial_vectors(parts, defect_types, params.init_word)
    torch.manual_seed(params.seed)
    model = LatentDenoiser(parts, defect_types, params.latent_mga_channels, params.resolution, vectors, words)
    accelerator = make_accelerator(compute)
    model.to(accelerator.device)
    effective = params.latent_batch_size * accelerator.num_processes * accelerator.gradient_accumulation_steps
    lr = params.latent_rate(effective)
    scheduler = parts.scheduler
    loops: dict[str, LoopResult] = {}
    counts: dict[str, int] = {}
    for p in model.parameters():
        p.requires_grad_(False)
    for defect_type in defect_types:
        images, masks = load_examples(
            processed_dir, gen[gen["defect_type"] == defect_type], params.resolution
        )
        data = encode_type(model, images, masks)
        counts[defect_type] = len(images)
        view = OneTypeView(model, defect_type)
        trainable = list(view.parameters())
        for p in trainable:
            p.requires_grad_(True)
        settings = {
            "backend": "latent",
            "pretrained": params.pretrained,
            "resolution": params.resolution,
            "steps": params.latent_steps,
            "batch_size": params.latent_batch_size,
            "lr": lr,
            "tau": params.pma_tau,
            "seed": params.seed,
            "type": defect_type,
            "init_word": words[defect_type],
            "mga": params.latent_mga_channels,
            "gradient_checkpointing": params.gradient_checkpointing,
        }
        key = job_key(settings, frozen, *[p.detach() for p in trainable], data.mean, data.std, data.masks)
        objective = PhaseBObjective(view, scheduler, params.pma_tau)
        objective.train()
        draw = _batch_fn(data, model.defect_id(defect_type), params.latent_batch_size, parts.scaling_factor)
        optimizer = torch.optim.AdamW(trainable, lr=lr)
        spec = LoopSpec(
            f"latent_{tokens.slug(defect_type)}",
            params.latent_steps,
            params.seed,
            key,
            checkpoint_dir / tokens.slug(defect_type) if checkpoint_dir is not None else None,
            False,
            params.checkpoint_every,
            2,
            0.0,  # the reference keeps no EMA of the tokens and adapters
        )
        loops[defect_type] = train_loop(
            objective,
            optimizer,
            lambda module, g, device, draw=draw: module(draw(g), g),
            spec,
            compute,
            on_step=on_step,
            stop_after=stop_after,
        )
        for p in trainable:
            p.requires_grad_(False)
    model.eval()
    return LatentFinetuneResult(model, loops, counts)
