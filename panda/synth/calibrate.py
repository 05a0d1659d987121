"""`synth.type_guidance: auto` (ours): for each defect type, the guidance scale whose synthetic
defects stand out from their surroundings as much as that type's real `gen_train` defects do.

Guidance (`panda.diffusion.sampler`) restores the contrast a small from-scratch denoiser loses, but
one scale does not fit every type or every denoiser: on Magnetic Tile, scale 2 made one seed's
blowholes 17 gray levels darker than real and another's about right (reports/benchmark/README.md).
Here the synthesizer redraws each type's `gen_train` masks on normal training images at every
candidate scale, measures the contrast exactly as `reports/synth_metrics.json` does (mean gray level
inside the mask minus a 4 px ring, `panda.synth.quality`), and picks the scale where it meets the
real defects' contrast. Only `gen_train` and normal training images are read, never the test split;
the cost is one synthesis pass over at most `per_type` masks per type for each candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from panda.data.preprocess import normal_train_rows
from panda.diffusion.sampler import SamplerConfig
from panda.io import read_image
from panda.synth.panda import PandaSynthesizer
from panda.synth.quality import contrast_by_type, defect_contrast

CANDIDATES = (1.0, 1.5, 2.0, 2.5, 3.0)


@dataclass
class GuidanceCalibration:
    scales: dict[str, float]  # the chosen scale per defect type
    real: dict[str, float]  # mean real gen_train contrast per type (gray levels)
    sampled: dict[str, list[float]]  # per type, the synthetic defects' mean contrast at each candidate
    candidates: tuple[float, ...]
    seconds: float = 0.0

    def metrics(self) -> dict[str, float]:
        """Flat keys for MLflow and synth_metrics.json."""
        return {**{f"guidance_{t}": s for t, s in self.scales.items()}, "calibration_seconds": self.seconds}


def crossing(candidates: tuple[float, ...], contrasts: list[float], target: float) -> float:
    """The scale where contrast (one per candidate) meets `target`, linear between the two candidates
    around it; the nearest candidate when no pair brackets it."""
    gaps = [c - target for c in contrasts]
    for i in range(len(candidates) - 1):
        if gaps[i] == 0:
            return candidates[i]
        if gaps[i] * gaps[i + 1] < 0:
            frac = gaps[i] / (gaps[i] - gaps[i + 1])
            return round(candidates[i] + frac * (candidates[i + 1] - candidates[i]), 2)
    return candidates[int(np.argmin(np.abs(gaps)))]


def _mean_contrast(images: list[np.ndarray], masks: list[np.ndarray]) -> float:
    pairs = zip(images, masks, strict=True)
    values = [c for image, mask in pairs if (c := defect_contrast(image, mask)) is not None]
    return float(np.mean(values)) if values else float("nan")


def calibrate_guidance(
    model_dir: Path,
    rows: pd.DataFrame,
    processed: Path,
    config: SamplerConfig,
    defect_types: list[str],
    seed: int = 0,
    window_mode: str = "auto",
    per_type: int = 32,
    candidates: tuple[float, ...] = CANDIDATES,
    batch_size: int = 16,
) -> GuidanceCalibration:
    """Per-type guidance scales for `config`'s sampler; a type without a measurable contrast keeps
    `config.guidance_scale`."""
    began = time.perf_counter()
    normals = normal_train_rows(rows)
    rng = np.random.default_rng(seed)
    gen = rows[(rows["split"] == "gen_train") & rows["defect_type"].isin(defect_types)]
    gen = gen.sort_values("image_path").groupby("defect_type", sort=True).head(per_type)
    real = contrast_by_type(gen, processed)
    work = {}  # type -> (normal backgrounds, real masks)
    for defect_type, sub in gen.groupby("defect_type", sort=True):
        picks = normals.iloc[rng.integers(len(normals), size=len(sub))]
        work[defect_type] = (
            [read_image(processed / p, "RGB") for p in picks["image_path"]],
            [read_image(processed / m, "L") >= 128 for m in sub["mask_path"]],
        )
    sampled: dict[str, list[float]] = {t: [] for t in work}
    bar = tqdm(total=len(candidates) * len(gen), desc="calibrate guidance", unit="img")
    for scale in candidates:
        synth = PandaSynthesizer(model_dir, replace(config, guidance_scale=scale), seed, window_mode)
        for defect_type, (images, masks) in work.items():
            edited = []
            for i in range(0, len(images), batch_size):
                edited += synth.batch(images[i : i + batch_size], masks[i : i + batch_size], defect_type)
                bar.update(len(images[i : i + batch_size]))
            sampled[defect_type].append(_mean_contrast(edited, masks))
    bar.close()
    measured = [t for t in real if t in sampled and not np.isnan(sampled[t]).any()]
    scales = {
        t: crossing(candidates, sampled[t], real[t]) if t in measured else config.guidance_scale
        for t in defect_types
    }
    seconds = round(time.perf_counter() - began, 1)
    return GuidanceCalibration(scales, real, sampled, tuple(candidates), seconds)
