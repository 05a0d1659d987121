"""Which defect types phase B and the sampler handle at native resolution (`finetune.window_mode`).

A window larger than the denoiser's side is either shrunk to it (`resize`) or cut into full-resolution
tiles (`native`). Shrinking keeps a large defect whole but can make a thin one sub-pixel: on Magnetic
Tile at 128 px a crack's stroke is 1.2 px wide (median) and its window is shrunk by 1.5x, so the
denoiser learns and draws a 0.8 px line. `auto` (*ours*) decides per defect type from the
`gen_train` masks alone: `native` when the type's median stroke width, after the shrink its window
would get, falls under `min_width` px, else `resize`. On Magnetic Tile (window 32, min_width 1) that
picks crack only (median 0.79 px after the shrink; blowhole 4.7, break 2.1, fray 4.2, uneven 9.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from skimage.morphology import skeletonize

from panda.diffusion.phase_b import crop_box


def stroke_width(mask: np.ndarray) -> float:
    """Mean width of a mask's strokes in px: its area over the length of its skeleton."""
    return float(mask.sum()) / max(int(skeletonize(mask).sum()), 1)


def width_in_window(mask: np.ndarray, window: int) -> float:
    """The stroke width the denoiser sees once the mask's window is shrunk to `window` px."""
    side = crop_box(mask, window)[2]
    return stroke_width(mask) * min(1.0, window / side)


def type_window_modes(
    masks: Iterable[tuple[np.ndarray, str]], window: int, mode: str, min_width: float
) -> dict[str, str]:
    """`mode` for every defect type of `masks` ((mask, type) pairs); `auto` resolved per type."""
    kept = [(mask, t) for mask, t in masks if mask.any()]
    if mode != "auto":
        return {t: mode for _, t in kept}
    widths: dict[str, list[float]] = {}
    for mask, defect_type in kept:
        widths.setdefault(defect_type, []).append(width_in_window(mask, window))
    return {t: "native" if np.median(w) < min_width else "resize" for t, w in widths.items()}


def describe(modes: Mapping[str, str]) -> str:
    """One line for logs: which types are native."""
    native = sorted(t for t, m in modes.items() if m == "native")
    return f"native windows: {', '.join(native)}" if native else "native windows: none (all resized)"
