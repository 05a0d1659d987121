"""The honest few-shot baseline: real `gen_train` defects cut out and pasted onto normal images.

Each sample takes one real defect, applies one of the context's flips/rotations to image and mask
together (so a defect on an edge stays on an edge, and a horizontal one stays horizontal under the
placement prior), cuts it under its mask dilated by `dilate` px and feathered, matches its brightness
to the new background, and pastes it at the transformed position.
The label is the transformed real mask.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from panda.synth.context import DefectContext, Sample, random_symmetry


def dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square: k in 0..7."""
    a = np.rot90(a, k % 4)
    return np.ascontiguousarray(a[:, ::-1] if k >= 4 else a)


def real_paste(
    image: np.ndarray, ctx: DefectContext, rng: np.random.Generator, dilate: int = 1, feather: float = 1.0
) -> Sample:
    src, mask = ctx.examples[int(rng.integers(len(ctx.examples)))]
    k = random_symmetry(ctx.symmetries, src.shape[:2], rng)
    src, mask = dihedral(src, k), dihedral(mask, k)
    h, w = image.shape[:2]
    if src.shape[:2] != (h, w):
        src = np.asarray(Image.fromarray(src).resize((w, h), Image.BICUBIC))
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.NEAREST)) > 0
    grown = ndimage.binary_dilation(mask, iterations=dilate) if dilate else mask
    alpha = (
        ndimage.gaussian_filter(grown.astype(np.float32), feather) if feather else grown.astype(np.float32)
    )
    alpha = np.maximum(alpha, mask)[..., None]
    ring = ndimage.binary_dilation(mask, iterations=dilate + 3) & ~mask
    src_f, img_f = src.astype(np.float32), image.astype(np.float32)
    if ring.any():
        gain = (img_f[ring].mean() + 1) / (src_f[ring].mean() + 1)
        src_f = src_f * np.clip(gain, 0.5, 2.0)
    out = alpha * src_f + (1 - alpha) * img_f
    return out.round().clip(0, 255).astype(np.uint8), mask.astype(np.uint8) * 255
