"""Is a new image like the ones the segmenter was trained on? Simple statistics of the training normals.

A segmenter trained on one product says nothing reliable about another (the demo's brick model marks
a normal Magnetic Tile photo 99% defective). The training normals' brightness and contrast (mean and
spread over images of each image's mean and standard deviation) and whether they were gray travel
with the model; `panda predict` flags an image that falls far outside them.
"""

from __future__ import annotations

import numpy as np
import torch

Z_LIMIT = 4.0  # standard deviations from the training normals before an image is flagged
MIN_SPREAD = 0.02  # floor for the spread, so near-identical normals do not flag every new image


def normal_statistics(images: torch.Tensor) -> dict[str, float | bool | int]:
    """Statistics of normal images in [0, 1], (N, C, H, W)."""
    means, stds = images.mean(dim=(1, 2, 3)), images.std(dim=(1, 2, 3))
    gray = images.shape[1] == 1 or bool((images[:, :1] == images[:, 1:]).all())
    return {
        "n_images": len(images),
        "mean_of_means": float(means.mean()),
        "std_of_means": float(means.std()) if len(images) > 1 else 0.0,
        "mean_of_stds": float(stds.mean()),
        "std_of_stds": float(stds.std()) if len(images) > 1 else 0.0,
        "gray": gray,
    }


def ood_reason(image: np.ndarray, stats: dict | None) -> str:
    """Why `image` (uint8, H x W x 3) looks unlike the training normals; "" when it does not."""
    if not stats:
        return ""
    x = image.astype(np.float64) / 255.0
    reasons = []
    for name, value, centre, spread in (
        ("brightness", x.mean(), stats["mean_of_means"], stats["std_of_means"]),
        ("contrast", x.std(), stats["mean_of_stds"], stats["std_of_stds"]),
    ):
        z = abs(value - centre) / max(spread, MIN_SPREAD)
        if z > Z_LIMIT:
            reasons.append(f"{name} {value:.2f} against {centre:.2f} ± {spread:.2f} in training ({z:.0f} sd)")
    if stats.get("gray") and image.ndim == 3 and not (image[..., :1] == image[..., 1:]).all():
        reasons.append("a colour image; the model was trained on gray images")
    return "; ".join(reasons)
