"""Target masks for PANDA: real gen_train masks of the defect type, augmented, or a user's folder.

Augmentation: one of the allowed flips/rotations of the whole image plane (a defect on an edge stays
on an edge, a central one stays central; under the placement prior a horizontal band stays
horizontal), a scale of 0.8-1.25 about the mask's centre, and a smooth elastic warp. The result
stays where that defect type occurs in the real data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from panda.io import IMAGE_SUFFIXES, read_image
from panda.synth.context import ORIENTATION_KEEPING, random_symmetry
from panda.synth.real import dihedral


def augment_mask(
    mask: np.ndarray,
    rng: np.random.Generator,
    elastic: float = 2.0,
    symmetries: tuple[int, ...] = ORIENTATION_KEEPING,
) -> np.ndarray:
    h, w = mask.shape
    k = random_symmetry(symmetries, mask.shape, rng)
    m = dihedral(mask.astype(np.float32), k)
    ys, xs = np.nonzero(m > 0.5)
    cy, cx = ys.mean(), xs.mean()
    s = rng.uniform(0.8, 1.25)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    dy = ndimage.gaussian_filter(rng.normal(size=(h, w)), 4) * elastic * 4
    dx = ndimage.gaussian_filter(rng.normal(size=(h, w)), 4) * elastic * 4
    src_y = cy + (yy - cy) / s + dy
    src_x = cx + (xx - cx) / s + dx
    out = ndimage.map_coordinates(m, [src_y, src_x], order=1, mode="constant") > 0.5
    return out if out.any() else mask.astype(bool)


def load_mask_folder(folder: Path, shape: tuple[int, int]) -> list[np.ndarray]:
    """User-supplied target masks (any size, resized to the images' size)."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    masks = []
    for p in paths:
        m = Image.fromarray(read_image(p, "L")).resize((shape[1], shape[0]), Image.NEAREST)
        if (arr := np.asarray(m) >= 128).any():
            masks.append(arr)
    return masks
