"""How an image of any shape becomes the square every stage works on, and which pixels are its own.

- `squash`: resized to `size` x `size`; elongated products (strips, rails, webs) are stretched, so
  their defects thin out or thicken.
- `pad`: resized so its long side is `size` (the aspect ratio kept), placed at the top left, and the
  rest of the square filled by mirroring it; its mask is mirrored the same way. Every stage sees
  plausible content with consistent labels there (a mirrored photo is still a photo, a mirrored
  defect is still labelled), and only the top-left `valid` box holds the photo's own pixels: the
  evaluation scores exactly that box and prediction maps it back onto the original image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

GEOMETRIES = ("squash", "pad")


def fitted_size(height: int, width: int, size: int, geometry: str) -> tuple[int, int]:
    """(height, width) of the image's own pixels inside the `size` square."""
    if geometry == "squash":
        return size, size
    scale = size / max(height, width)
    return max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale)))


def mirror_pad(array: np.ndarray, size: int) -> np.ndarray:
    """`array` (H, W[, C]) at the top left of a `size` square, the rest filled by mirroring it."""
    h, w = array.shape[:2]
    if (h, w) == (size, size):
        return array
    widths = [(0, size - h), (0, size - w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="symmetric")


def own_box(row: pd.Series, size: int) -> tuple[int, int]:
    """One manifest row's (valid_height, valid_width); the whole square for manifests without them."""
    return int(row.get("valid_height", size)), int(row.get("valid_width", size))


def valid_boxes(frame: pd.DataFrame, size: int) -> list[tuple[int, int]]:
    """`own_box` of every row."""
    return [own_box(row, size) for _, row in frame.iterrows()]


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool mask at `shape` (nearest neighbour); the mask itself when it has that shape already.

    How masks move between images of different boxes: by relative position, so a defect on a tile's
    edge lands on the edge of a tile of another shape."""
    if mask.shape == tuple(shape):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(shape[::-1], Image.NEAREST)) > 0


def valid_masks(frame: pd.DataFrame, size: int) -> np.ndarray | None:
    """(N, size, size) bool: True on each image's own pixels; None when every image fills its square."""
    boxes = valid_boxes(frame, size)
    if all(box == (size, size) for box in boxes):
        return None
    valid = np.zeros((len(boxes), size, size), bool)
    for i, (h, w) in enumerate(boxes):
        valid[i, :h, :w] = True
    return valid


def fit_image(image: np.ndarray, size: int, geometry: str) -> tuple[np.ndarray, tuple[int, int]]:
    """An RGB/gray uint8 image as the `size` square (bicubic), and its own box (height, width) there."""
    vh, vw = fitted_size(image.shape[0], image.shape[1], size, geometry)
    resized = np.asarray(Image.fromarray(image).resize((vw, vh), Image.BICUBIC))
    return mirror_pad(resized, size), (vh, vw)
