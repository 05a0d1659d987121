"""What a synthesizer may know about one defect type: where it occurs and its few real examples.

Built from `gen_train` images only, so nothing from the test split leaks into synthesis. Synthesizers
work on each image's own pixels (`panda.data.geometry`: all of it, or a padded image's own box);
the placement prior lives on the square grid, in positions relative to the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from panda.data.geometry import own_box, resize_mask
from panda.io import read_image

Sample = tuple[np.ndarray, np.ndarray]  # (defective image RGB uint8, mask uint8 0/255)
ORIENTATION_KEEPING = (0, 2, 4, 6)
ALL_SYMMETRIES = tuple(range(8))


def random_symmetry(allowed: tuple[int, ...], shape: tuple[int, ...], rng: np.random.Generator) -> int:
    """A random allowed `dihedral` k; 90-degree turns only for square images (they swap H and W)."""
    choices = [k for k in allowed if shape[0] == shape[1] or k % 2 == 0]
    return int(rng.choice(choices))


@dataclass
class DefectContext:
    defect_type: str
    placement: np.ndarray  # (H, W) probability map of defect centres on the square grid, sums to 1
    # (image RGB, mask bool), each cropped to its own box
    examples: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # flips/rotations (`dihedral` k) a real example may take: all 8 where position carries no
    # information; with the placement prior only those that keep orientation (a horizontal
    # band stays horizontal), i.e. identity, 180 degrees, left-right and up-down flips
    symmetries: tuple[int, ...] = ORIENTATION_KEEPING


def placement_prior(masks: list[np.ndarray], shape: tuple[int, int], blur: float = 0.05) -> np.ndarray:
    """Where this defect type occurs: blurred sum of its real masks (uniform when there are none).

    Edge defects (Magnetic Tile Break, Fray) get a prior along the edges; centred ones in the middle.
    """
    if not masks:
        prior = np.ones(shape, np.float64)
    else:
        prior = np.zeros(shape, np.float64)
        for m in masks:
            prior += m.astype(np.float64) / max(1, m.sum())
        prior = ndimage.gaussian_filter(prior, sigma=blur * max(shape)) + 1e-3 * prior.max() / prior.size
    return prior / prior.sum()


def sample_centre(prior: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, int]:
    """A defect centre drawn from `prior`, at the same relative position in an image of `shape`."""
    flat = int(rng.choice(prior.size, p=prior.ravel()))
    y, x = divmod(flat, prior.shape[1])
    return y * shape[0] // prior.shape[0], x * shape[1] // prior.shape[1]


def build_contexts(
    rows: pd.DataFrame, processed_dir: Path, shape: tuple[int, int], placement: str = "prior"
) -> list[DefectContext]:
    """One context per defect type that has `gen_train` images, sorted by name.

    `placement`: 'prior' learns where each type occurs from its real masks (objects, edge defects);
    'uniform' places defects anywhere (textures, where position carries no information).
    """
    contexts = []
    gen = rows[rows["split"] == "gen_train"]
    for defect, sub in sorted(gen.groupby("defect_type"), key=lambda kv: kv[0]):
        examples = []
        for _, r in sub.sort_values("image_path").iterrows():
            h, w = own_box(r, shape[0])
            examples.append(
                (
                    read_image(processed_dir / r["image_path"], "RGB")[:h, :w],
                    (read_image(processed_dir / r["mask_path"], "L") >= 128)[:h, :w],
                )
            )
        masks = [resize_mask(m, shape) for _, m in examples] if placement == "prior" else []
        prior = placement_prior(masks, shape)
        square = shape[0] == shape[1]
        symmetries = ALL_SYMMETRIES if placement == "uniform" and square else ORIENTATION_KEEPING
        contexts.append(DefectContext(defect, prior, examples, symmetries))
    return contexts
