"""Load (image, mask) pairs into memory tensors; datasets here are small enough at CPU resolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from panda.io import read_image

IGNORE = -1.0  # mask value of a pixel the loss skips (see `ignore_unchanged`)


def load_pairs(root: Path, frame: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float (N, 3, H, W) in [0, 1], masks as float (N, 1, H, W) in {0, 1}.

    `frame` needs `image_path` and `mask_path` (empty for normal images) relative to `root`.
    """
    images, masks = [], []
    for image_rel, mask_rel in zip(frame["image_path"], frame["mask_path"], strict=True):
        img = read_image(root / image_rel, "RGB")
        images.append(img)
        if mask_rel:
            masks.append(read_image(root / mask_rel, "L") >= 128)
        else:
            masks.append(np.zeros(img.shape[:2], dtype=bool))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(np.stack(masks)).unsqueeze(1).float()
    return x, y


def load_backgrounds(root: Path, frame: pd.DataFrame) -> torch.Tensor:
    """The clean normal image each synthetic pair was made from (manifest column `background`)."""
    return load_pairs(root, pd.DataFrame({"image_path": frame["background"], "mask_path": ""}))[0]


def ignore_unchanged(
    x: torch.Tensor, y: torch.Tensor, background: torch.Tensor, min_change: float
) -> torch.Tensor:
    """Mark mask pixels that the synthesis left (almost) as the background with IGNORE.

    A synthesized defect rarely fills its whole mask: a faint crack covers part of its stroke, a
    large Uneven patch stays plain texture in places. Training on those pixels as "defect" teaches
    the segmenter to fire on normal texture. Ours, after NSA (Schlueter et al. 2022), which derives
    labels from the change to the image; we skip such pixels rather than call them normal, since the
    test masks count them as defect. `min_change` is in gray levels (0-255) of the change, averaged
    over a 3x3 neighbourhood so that pixel noise does not punch holes into a defect.
    """
    change = (x - background).abs().amax(dim=1, keepdim=True) * 255.0
    change = F.avg_pool2d(change, 3, stride=1, padding=1, count_include_pad=False)
    return torch.where((y > 0) & (change < min_change), torch.full_like(y, IGNORE), y)


def load_synthetic_pairs(
    synthetic_dir: Path, frame: pd.DataFrame, processed_dir: Path, min_change: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic pairs for training; with `min_change` > 0, their unchanged mask pixels are IGNORE."""
    x, y = load_pairs(synthetic_dir, frame)
    if min_change and len(frame):
        y = ignore_unchanged(x, y, load_backgrounds(processed_dir, frame), min_change)
    return x, y


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] images to roughly zero mean, unit range for the network."""
    return (x - 0.5) / 0.5
