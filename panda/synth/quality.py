"""How a defect looks next to the real ones of its type, measured without training anything.

A segmenter can only learn what its training pairs show. Two measures per defect type, compared
between the synthetic pairs and the real `gen_train` defects:
- contrast: mean gray level inside the mask minus that of a thin ring around it; catches faint or
  inverted defects (on Magnetic Tile, real blowholes are about 43 gray levels darker than their
  surroundings);
- detail: mean absolute Laplacian of the gray image inside the mask (gray levels per pixel); catches
  defects drawn blurred or flat where the real ones keep the product's texture (a window sampled
  shrunk and enlarged back comes out smoother than the background it replaced), and over-textured ones;
- chroma (colour images only): mean per-pixel colourfulness inside the mask, max(R, G, B) - min(R, G, B);
  catches defects drawn in colours the real ones do not have (a freely generated RGB window can come
  out as coloured speckle where the real defects are grey). Gray datasets report no chroma.
It reads only `gen_train` and synthetic images, never the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from panda.io import read_image


def _gray(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(axis=-1) if image.ndim == 3 else image.astype(np.float32)


def defect_contrast(image: np.ndarray, mask: np.ndarray, ring: int = 4) -> float | None:
    """Mean gray level (0-255) inside `mask` minus the mean in a `ring` px band around it.

    None when the mask or its ring is empty (e.g. a mask covering the whole image).
    """
    gray = _gray(image)
    inside = mask.astype(bool)
    around = ndimage.binary_dilation(inside, iterations=ring) & ~inside
    if not inside.any() or not around.any():
        return None
    return float(gray[inside].mean() - gray[around].mean())


def defect_detail(image: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean absolute Laplacian of the gray image inside `mask`; None for an empty mask."""
    inside = mask.astype(bool)
    if not inside.any():
        return None
    return float(np.abs(ndimage.laplace(_gray(image)))[inside].mean())


def defect_chroma(image: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean of max(R, G, B) - min(R, G, B) inside `mask` (0 = gray); None for an empty mask or a
    gray image, where colour says nothing."""
    inside = mask.astype(bool)
    if image.ndim != 3 or not inside.any():
        return None
    rgb = image.astype(np.int16)
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    if not chroma.any():
        return None
    return float(chroma[inside].mean())


MEASURES = {"contrast": defect_contrast, "detail": defect_detail, "chroma": defect_chroma}


def match_contrast(
    image: np.ndarray, mask: np.ndarray, target: float, ring: int = 4, rounds: int = 8
) -> np.ndarray:
    """`image` with the pixels under `mask` shifted so that `defect_contrast` becomes `target`.

    Only labelled pixels change, so the pair stays pixel-aligned and the ring's mean stays fixed.
    Values clip at 0 and 255, so the shift is refined for `rounds` steps (the clipped mean grows
    monotonically with the shift); a target past white or black is approached as far as it goes.
    """
    inside = mask.astype(bool)
    current = defect_contrast(image, inside, ring)
    if current is None:
        return image
    base = image.astype(np.float32)
    ring_mean = float(_gray(image)[inside].mean()) - current
    shift, out = 0.0, image
    for _ in range(rounds):
        shifted = base.copy()
        shifted[inside] += shift
        out = shifted.round().clip(0, 255).astype(np.uint8)
        error = target - (float(_gray(out)[inside].mean()) - ring_mean)
        if abs(error) < 0.25:
            break
        shift += error
    return out


def match_chroma(image: np.ndarray, mask: np.ndarray, target: float) -> np.ndarray:
    """`image` with each pixel under `mask` moved towards or away from its own gray level, so that
    `defect_chroma` becomes `target`: colour is scaled, brightness (the pixel's gray) kept.

    Why: a window generated freely on a colour product can come out as coloured speckle where the
    real defects are nearly gray; scaling the saturation keeps its shape and brightness and takes its
    colourfulness from the real example. A gray image, or a target for which there is none, is left
    as it is; values clip at 0 and 255.
    """
    current = defect_chroma(image, mask)
    if current is None or current == 0:
        return image
    inside = mask.astype(bool)
    rgb = image.astype(np.float32)
    gray = rgb.mean(axis=-1, keepdims=True)
    scaled = gray + (rgb - gray) * (target / current)
    out = image.copy()
    out[inside] = scaled[inside].round().clip(0, 255).astype(np.uint8)
    return out


def measures_by_type(frame: pd.DataFrame, root: Path) -> dict[str, dict[str, float]]:
    """Each measure's mean per defect type of manifest rows (image and mask paths relative to `root`)."""
    values: dict[str, dict[str, list[float]]] = {name: {} for name in MEASURES}
    for _, r in frame.iterrows():
        image, mask = read_image(root / r["image_path"], "RGB"), read_image(root / r["mask_path"], "L") >= 128
        for name, measure in MEASURES.items():
            if (v := measure(image, mask)) is not None:
                values[name].setdefault(r["defect_type"], []).append(v)
    return {name: {t: float(np.mean(v)) for t, v in sorted(by.items())} for name, by in values.items()}


def gap_report(name: str, real: dict[str, float], synthetic: dict[str, float]) -> dict[str, float]:
    """Flat metrics of one measure: per-type synthetic and real value, and the mean absolute gap."""
    out: dict[str, float] = {}
    gaps = []
    for defect_type, value in synthetic.items():
        out[f"{name}_{defect_type}"] = round(value, 2)
        if defect_type in real:
            out[f"real_{name}_{defect_type}"] = round(real[defect_type], 2)
            gaps.append(abs(value - real[defect_type]))
    if gaps:
        out[f"{name}_gap"] = round(float(np.mean(gaps)), 2)
    return out


def compare_to_real(
    real: pd.DataFrame, real_root: Path, synthetic: pd.DataFrame, synthetic_root: Path
) -> dict[str, float]:
    """`gap_report` of every measure, the synthetic pairs against the real defects (manifest rows)."""
    real_values = measures_by_type(real, real_root)
    synthetic_values = measures_by_type(synthetic, synthetic_root)
    out: dict[str, float] = {}
    for name in MEASURES:
        out |= gap_report(name, real_values[name], synthetic_values[name])
    return out
