"""DRAEM-style anomalies (Zavrtanik et al., ICCV 2021): Perlin masks filled with a foreign texture.

Mask: Perlin noise at a random scale 2^0..2^5 per axis, rotated by -90..90 degrees, thresholded at
0.5, and kept where the defect type occurs (its placement prior). Fill: a texture photo (a DTD-like
folder given as `synth.texture_dir`, else the photos scikit-image ships) augmented by three random
operations. Blend: the convention of the authors' released code,
`out = (1 - M) * I + (1 - beta) * M * A + beta * M * I` with `beta ~ U(0, 0.8)`, i.e. beta is the
share of the ORIGINAL image kept inside the mask (the paper's text writes it the other way round).
DRAEM leaves half its training samples normal; here every sample is defective and the normal share
of training batches is `train.normal_fraction`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from scipy import ndimage
from skimage import data as skdata

from panda.data.geometry import resize_mask
from panda.io import IMAGE_SUFFIXES, read_image
from panda.synth.context import DefectContext, Sample
from panda.synth.perlin import perlin_2d

BUILTIN_TEXTURES = ("brick", "grass", "gravel", "rocket", "coffee", "chelsea", "astronaut", "camera")


@lru_cache(maxsize=4)
def load_textures(texture_dir: str | None) -> tuple[np.ndarray, ...]:
    """RGB uint8 texture photos from a folder (recursively), else scikit-image's bundled photos."""
    if texture_dir:
        paths = sorted(p for p in Path(texture_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        return tuple(read_image(p, "RGB") for p in paths)
    out = []
    for name in BUILTIN_TEXTURES:
        img = getattr(skdata, name)()
        out.append(np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3])
    return tuple(out)


def _augment_texture(tex: Image.Image, rng: np.random.Generator) -> Image.Image:
    ops = [
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(0.5, 2.0)),
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2)),
        lambda im: ImageEnhance.Sharpness(im).enhance(rng.uniform(0.0, 4.0)),
        lambda im: im.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5))),
        lambda im: ImageOps.solarize(im, int(rng.integers(32, 128))),
        lambda im: ImageOps.posterize(im, int(rng.integers(4, 8))),
        ImageOps.invert,
        ImageOps.autocontrast,
        ImageOps.equalize,
        lambda im: im.rotate(float(rng.uniform(-45, 45)), resample=Image.BILINEAR),
    ]
    for i in rng.choice(len(ops), size=3, replace=False):
        tex = ops[int(i)](tex)
    return tex


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator, threshold: float = 0.5) -> np.ndarray:
    scale = (2 ** int(rng.integers(0, 6)), 2 ** int(rng.integers(0, 6)))
    noise = perlin_2d(shape, scale, rng)
    noise = ndimage.rotate(noise, float(rng.uniform(-90, 90)), reshape=False, order=1, mode="reflect")
    return noise > threshold


def draem(
    image: np.ndarray, ctx: DefectContext, rng: np.random.Generator, texture_dir: str | None = None
) -> Sample:
    h, w = image.shape[:2]
    region = resize_mask(ctx.placement / ctx.placement.max() > 0.05, (h, w))
    mask = np.zeros((h, w), bool)
    for _ in range(20):
        mask = perlin_mask((h, w), rng) & region
        if mask.sum() >= 4:
            break
    if mask.sum() < 4:  # the prior region is tiny: fall back to the unrestricted Perlin mask
        mask = perlin_mask((h, w), rng)
    textures = load_textures(texture_dir)
    tex = Image.fromarray(textures[int(rng.integers(len(textures)))]).resize((w, h), Image.BILINEAR)
    tex = np.asarray(_augment_texture(tex, rng).convert("RGB")).astype(np.float32)
    if np.ptp(image.astype(np.int16), axis=2).max() == 0:  # grayscale product: grey texture too
        tex = np.repeat(tex.mean(axis=2, keepdims=True), 3, axis=2)
    beta = rng.uniform(0, 0.8)
    m = mask[..., None].astype(np.float32)
    img = image.astype(np.float32)
    out = (1 - m) * img + (1 - beta) * m * tex + beta * m * img
    return out.round().clip(0, 255).astype(np.uint8), mask.astype(np.uint8) * 255
