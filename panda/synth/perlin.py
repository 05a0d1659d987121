"""2-D Perlin gradient noise, the mask generator of DRAEM (Zavrtanik et al., ICCV 2021)."""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    return 6 * t**5 - 15 * t**4 + 10 * t**3


def perlin_2d(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Noise in about [-1, 1] with `res` gradient cells per axis; any shape (computed on a padded grid)."""
    ph = int(np.ceil(shape[0] / res[0]) * res[0])
    pw = int(np.ceil(shape[1] / res[1]) * res[1])
    angles = rng.uniform(0, 2 * np.pi, (res[0] + 1, res[1] + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    yy, xx = np.meshgrid(np.arange(ph) * res[0] / ph, np.arange(pw) * res[1] / pw, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0

    def dot(dy: int, dx: int) -> np.ndarray:
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    u, v = _fade(fy), _fade(fx)
    top = dot(0, 0) * (1 - v) + dot(0, 1) * v
    bottom = dot(1, 0) * (1 - v) + dot(1, 1) * v
    noise = np.sqrt(2) * (top * (1 - u) + bottom * u)
    return noise[: shape[0], : shape[1]]
