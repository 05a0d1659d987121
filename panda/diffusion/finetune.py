"""Fine-tune the denoiser on one category: `finetune_category` is what `panda finetune` runs.

Pixel backend: phase A on normal windows, then phase B on gen_train. Phase A is cached under
`cache_dir` by its own job key (DVC experiments share it); phase B resumes from `checkpoint_dir`.
Latent backend (`finetune.backend: latent`): `latent_finetune.finetune_latent`, resuming from
`checkpoint_dir` too. A notebook calls it the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from panda.compute import ComputeParams
from panda.data.geometry import own_box
from panda.data.preprocess import category_rows, normal_train_rows
from panda.diffusion.denoiser import PixelDenoiser
from panda.diffusion.params import FinetuneParams
from panda.diffusion.phase_b import PhaseBResult, defect_windows, train_phase_b
from panda.diffusion.pixel import PhaseAResult, as_model_channels, train_phase_a
from panda.diffusion.window_modes import describe, type_window_modes
from panda.io import atomic_dir, read_image
from panda.segment.data import load_pairs

if TYPE_CHECKING:
    from panda.diffusion.latent_finetune import LatentFinetuneResult


@dataclass
class FinetuneResult:
    model: PixelDenoiser
    phase_a: PhaseAResult
    phase_b: PhaseBResult
    window_modes: dict[str, str]
    n_defect_windows: int
    model_channels: int

    def save(self, out_dir: Path) -> None:
        """The denoiser in diffusers layout (`unet/`, `scheduler/`) plus adapters, atomically; weights
        only, so the output stays byte-identical across reruns."""
        with atomic_dir(out_dir, "diffusion") as tmp:
            self.model.cpu().save(tmp)
            self.phase_a.scheduler.save_pretrained(tmp / "scheduler")

    def report(self, out_dir: Path) -> str:
        a, b = self.phase_a, self.phase_b
        return (
            f"{describe(self.window_modes)}\n"
            f"denoiser: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M params; phase A "
            f"{a.steps_done} steps (resumed at {a.resumed_from}) in {a.seconds:.1f}s, "
            f"loss {a.final_loss:.4f}; "
            f"phase B {b.steps_done} steps (resumed at {b.resumed_from}) on {self.n_defect_windows} defect "
            f"windows in {b.seconds:.1f}s, loss {b.final_loss:.4f} -> {out_dir}"
        )

    def summary(self) -> dict[str, float | int]:
        """The numbers `reports/finetune_metrics.json` and MLflow get."""
        return {
            "phase_a_steps": self.phase_a.steps_done,
            "phase_a_resumed_from": self.phase_a.resumed_from,
            "phase_a_loss": self.phase_a.final_loss,
            "phase_a_seconds": round(self.phase_a.seconds, 2),
            "phase_b_resumed_from": self.phase_b.resumed_from,
            "phase_b_loss": self.phase_b.final_loss,
            "phase_b_seconds": round(self.phase_b.seconds, 2),
            "n_parameters": sum(p.numel() for p in self.model.parameters()),
            "n_defect_windows": self.n_defect_windows,
            "model_channels": self.model_channels,
            "trained": 1,
        }


def finetune_category(
    manifest: pd.DataFrame,
    processed_dir: Path,
    category: str,
    params: FinetuneParams,
    compute: ComputeParams | None = None,
    cache_dir: Path | None = None,
    checkpoint_dir: Path | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> FinetuneResult | LatentFinetuneResult:
    """Phase A then phase B for `category` (or the latent backend's fine-tuning); returns the
    fine-tuned denoiser (on the compute device)."""
    if params.backend == "latent":
        from panda.diffusion.latent_finetune import finetune_latent  # transformers: this backend only

        return finetune_latent(manifest, processed_dir, category, params, compute, checkpoint_dir, on_step)
    rows = category_rows(manifest, category)
    images, _ = load_pairs(processed_dir, normal_train_rows(rows))
    gen = rows[rows["split"] == "gen_train"].sort_values("image_path")
    defect_types = sorted(gen["defect_type"].unique())
    images = as_model_channels(images * 2 - 1)
    phase_a = train_phase_a(images, params, len(defect_types) + 1, cache_dir, compute, on_step)
    examples = [
        (
            *_own_pixels(
                read_image(processed_dir / r["image_path"], "RGB"),
                read_image(processed_dir / r["mask_path"], "L") >= 128,
                own_box(r, int(images.shape[-1])),
                params.window,
            ),
            defect_types.index(r["defect_type"]) + 1,
        )
        for _, r in gen.iterrows()
    ]
    modes = type_window_modes(
        ((mask, defect_types[i - 1]) for _, mask, i in examples),
        params.window,
        params.window_mode,
        params.min_width,
    )
    model = PixelDenoiser(phase_a.unet, defect_types, params.mga_channels, modes)
    model.to(next(phase_a.unet.parameters()).device)
    windows = defect_windows(examples, params.window, {model.defect_id(t): m for t, m in modes.items()})
    phase_b = train_phase_b(
        model,
        phase_a.scheduler,
        windows,
        params.phase_b_steps,
        params.batch_size,
        params.phase_b_lr,
        params.pma_tau,
        params.seed,
        checkpoint_dir,
        compute,
        on_step,
        params.checkpoint_every,
        ema_decay=params.ema_decay,
    )
    return FinetuneResult(model, phase_a, phase_b, modes, len(windows.images), int(images.shape[1]))


def _own_pixels(
    image: np.ndarray, mask: np.ndarray, box: tuple[int, int], window: int
) -> tuple[np.ndarray, np.ndarray]:
    """A gen_train example's own box (`panda.data.geometry`), so phase B's windows frame the defect,
    not the defect and its mirror image; the whole square where the box is narrower than a window."""
    if min(box) < window:
        return image, mask
    return image[: box[0], : box[1]], mask[: box[0], : box[1]]


def skip_finetune(out_dir: Path, method: str) -> str:
    """Baseline synthesizers need no denoiser: a marker in `out_dir` instead of minutes of training.

    DVC reruns the stage when `synth.method` changes back to panda, or panda joins as
    `synth.mix_method` (the keys `method_counts` reads are among the stage's params)."""
    note = f"synth.method = {method} does not use the diffusion model, so none was trained."
    with atomic_dir(out_dir, "diffusion") as tmp:
        (tmp / "NOT_TRAINED.txt").write_text(note + "\n")
    return note
