"""Load (image, mask) pairs into memory tensors; datasets here are small enough at CPU resolutions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from panda.io import read_image


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


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Map [0, 1] images to roughly zero mean, unit range for the network."""
    return (x - 0.5) / 0.5
