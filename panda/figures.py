"""Small PNG grids for reports and MLflow, drawn with PIL only (no plotting backend needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from panda.io import save_png


def to_rgb(a: np.ndarray) -> np.ndarray:
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a


def overlay(image: np.ndarray, mask: np.ndarray, colour=(255, 40, 40), alpha: float = 0.5) -> np.ndarray:
    """Tint the pixels of `mask` (bool or 0/255) in `image`."""
    out = to_rgb(image).astype(np.float32)
    m = (mask > 0)[..., None]
    out = np.where(m, out * (1 - alpha) + np.array(colour) * alpha, out)
    return out.round().astype(np.uint8)


def grid(rows: Sequence[Sequence[np.ndarray]], path: Path, titles: Sequence[str] = (), pad: int = 2) -> Path:
    """Save tiles (uint8 or [0, 1] float, gray or RGB, same size; None = blank) as one PNG."""
    tiles = [[None if t is None else to_rgb(t) for t in row] for row in rows]
    h, w = next(t for row in tiles for t in row if t is not None).shape[:2]
    head = 12 if titles else 0
    ncol = max(len(r) for r in tiles)
    canvas = np.full((head + len(tiles) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is None:
                continue
            y, x = head + pad + r * (h + pad), pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = tile[:h, :w]
    img = Image.fromarray(canvas)
    if titles:
        draw = ImageDraw.Draw(img)
        for c, title in enumerate(titles):
            draw.text((pad + c * (w + pad) + 2, 0), title, fill=(0, 0, 0))
    save_png(np.asarray(img), path)
    return Path(path)
