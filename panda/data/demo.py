"""The built-in offline `demo` dataset: real texture photos (scikit-image) with drawn surface defects.

Generated deterministically from a seed, written in the MVTec-AD layout, so every stage can run and be
tested on a fresh machine without a network. Train crops come from the top 70% of each photo and test
crops from the bottom 30%, so no test pixel was ever seen in training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage import data as skdata

from panda.io import save_png

SIZE = 128
SUPERSAMPLE = 4
TEXTURES: dict[str, Callable[[], np.ndarray]] = {
    "brick": skdata.brick,
    "grass": skdata.grass,
    "gravel": skdata.gravel,
}
DEFECTS: dict[str, list[str]] = {
    "brick": ["crack", "hole"],
    "grass": ["scratch", "stain"],
    "gravel": ["hole", "scratch"],
}


def _coverage(draw_fn: Callable[[ImageDraw.ImageDraw, float], None]) -> np.ndarray:
    """Render a shape at 4x and box-downsample: anti-aliased coverage in [0, 1]."""
    big = Image.new("L", (SIZE * SUPERSAMPLE, SIZE * SUPERSAMPLE), 0)
    draw_fn(ImageDraw.Draw(big), SUPERSAMPLE)
    return np.asarray(big.resize((SIZE, SIZE), Image.BOX), dtype=np.float32) / 255.0


def _centre(rng: np.random.Generator, margin: int = 20) -> np.ndarray:
    return rng.uniform(margin, SIZE - margin, size=2)


def _curve(rng: np.random.Generator, length: float, bend: float, n: int = 24) -> np.ndarray:
    """A smooth random quadratic Bezier of roughly `length` pixels."""
    c = _centre(rng)
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    normal = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6)
    p0, p2 = c - d, c + d
    p1 = c + normal * rng.uniform(-bend, bend)
    s = np.linspace(0, 1, n)[:, None]
    return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2


def _scratch(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = _curve(rng, rng.uniform(30, 80), 15)
    width = rng.uniform(1.5, 3.0)
    cov = _coverage(lambda d, s: d.line([tuple(p * s) for p in pts], fill=255, width=int(width * s)))
    tone = np.full_like(img, rng.uniform(200, 240))
    return cov, tone


def _crack(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    strokes = []
    start = _centre(rng)
    for _ in range(rng.integers(1, 4)):
        pts = [start]
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(rng.integers(6, 14)):
            angle += rng.normal(0, 0.6)
            pts.append(np.clip(pts[-1] + 4 * np.array([np.cos(angle), np.sin(angle)]), 2, SIZE - 2))
        strokes.append(pts)
        start = pts[len(pts) // 2]
    width = rng.uniform(1.2, 2.2)

    def draw(d: ImageDraw.ImageDraw, s: float) -> None:
        for pts in strokes:
            d.line([tuple(p * s) for p in pts], fill=255, width=int(width * s), joint="curve")

    cov = _coverage(draw)
    tone = img * 0.25
    return cov, tone


def _hole(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _centre(rng)
    r = rng.uniform(4, 10, size=2)
    box = [(c[0] - r[0]), (c[1] - r[1]), (c[0] + r[0]), (c[1] + r[1])]
    cov = _coverage(lambda d, s: d.ellipse([v * s for v in box], fill=255))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    radial = np.sqrt(((xx - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2)
    shade = np.clip(radial, 0, 1)
    tone = 15 + 60 * shade**3  # dark pit, lighter toward the rim
    return cov, tone


def _stain(rng: np.random.Generator, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _centre(rng, 28)
    r = rng.uniform(10, 22)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disk = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / r
    noise = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 4) * 8
    field = np.clip(1.2 - disk + noise, 0, 1).astype(np.float32)
    tone = img * rng.uniform(0.45, 0.65) + rng.uniform(-10, 10)
    return field, tone


RENDERERS = {"scratch": _scratch, "crack": _crack, "hole": _hole, "stain": _stain}


def add_defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend one defect into a grey image; the mask is exactly the set of changed pixels."""
    cov, tone = RENDERERS[kind](rng, img.astype(np.float32))
    alpha = np.where(cov >= 0.5, cov, 0.0).astype(np.float32)
    out = img * (1 - alpha) + np.clip(tone, 0, 255) * alpha
    mask = (alpha > 0).astype(np.uint8) * 255
    return np.clip(out, 0, 255).round().astype(np.uint8), mask


def _crop(texture: np.ndarray, rng: np.random.Generator, test: bool) -> np.ndarray:
    split_row = int(texture.shape[0] * 0.7)
    lo, hi = (split_row, texture.shape[0] - SIZE) if test else (0, split_row - SIZE)
    y = int(rng.integers(lo, hi + 1))
    x = int(rng.integers(0, texture.shape[1] - SIZE + 1))
    crop = texture[y : y + SIZE, x : x + SIZE].astype(np.float32)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = crop * rng.uniform(0.92, 1.08)
    return np.clip(crop, 0, 255).round().astype(np.uint8)


def generate_demo(
    root: Path, seed: int = 0, n_train: int = 48, n_test_good: int = 12, n_per_defect: int = 12
) -> None:
    """Write the demo dataset under `root` in the MVTec-AD layout."""
    for ci, (category, load) in enumerate(TEXTURES.items()):
        texture = load()
        if texture.ndim == 3:
            texture = texture[..., :3].mean(axis=2)
        rng = np.random.default_rng([seed, ci])
        base = root / category
        rgb = lambda a: np.repeat(a[..., None], 3, axis=2)  # noqa: E731
        for i in range(n_train):
            save_png(rgb(_crop(texture, rng, test=False)), base / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            save_png(rgb(_crop(texture, rng, test=True)), base / "test" / "good" / f"{i:03d}.png")
        for kind in DEFECTS[category]:
            for i in range(n_per_defect):
                img, mask = add_defect(_crop(texture, rng, test=True), kind, rng)
                save_png(rgb(img), base / "test" / kind / f"{i:03d}.png")
                save_png(mask, base / "ground_truth" / kind / f"{i:03d}_mask.png")
