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
    """Save tiles (uint8 or [0, 1] float, gray or RGB; None = blank) as one PNG, in cells the size of
    the largest tile (a smaller one, such as a padded image's own box, sits at its cell's top left)."""
    tiles = [[None if t is None else to_rgb(t) for t in row] for row in rows]
    h = max(t.shape[0] for row in tiles for t in row if t is not None)
    w = max(t.shape[1] for row in tiles for t in row if t is not None)
    head = 12 if titles else 0
    ncol = max(len(r) for r in tiles)
    canvas = np.full((head + len(tiles) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is None:
                continue
            y, x = head + pad + r * (h + pad), pad + c * (w + pad)
            canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    img = Image.fromarray(canvas)
    if titles:
        draw = ImageDraw.Draw(img)
        for c, title in enumerate(titles):
            draw.text((pad + c * (w + pad) + 2, 0), title, fill=(0, 0, 0))
    save_png(np.asarray(img), path)
    return Path(path)


def stack(panels: Sequence[tuple[str, np.ndarray]], path: Path, pad: int = 4) -> Path:
    """Save figures one above the other, each under a line naming it (e.g. one per benchmark method)."""
    width = max(a.shape[1] for _, a in panels)
    height = sum(14 + a.shape[0] + pad for _, a in panels)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, a in panels:
        draw.text((2, y + 1), label, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(to_rgb(a)), (0, y + 14))
        y += 14 + a.shape[0] + pad
    save_png(np.asarray(canvas), path)
    return Path(path)
