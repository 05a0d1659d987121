"""CutPaste (Li et al., CVPR 2021): a patch of the normal image pasted elsewhere, plus the thin "scar".

Patch area 2-15% of the image, aspect ratio 0.3-3.3 (log-uniform), colour jitter on the patch; the
scar variant is a thin rectangle (2-16 px wide, 10-25 px long at 256 px, scaled to the image) rotated
by -45..45 degrees. Half the samples use each variant. The patch is pasted centred on a point drawn
from the defect type's placement prior (where its real defects occur), not uniformly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from panda.synth.context import DefectContext, Sample, sample_centre


def _jitter(patch: Image.Image, rng: np.random.Generator) -> Image.Image:
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        patch = enhancer(patch).enhance(float(rng.uniform(0.9, 1.1)))
    return patch


def _paste(
    image: Image.Image, patch: Image.Image, alpha: Image.Image, ctx: DefectContext, rng: np.random.Generator
) -> Sample:
    w, h = image.size
    pw, ph = patch.size
    cy, cx = sample_centre(ctx.placement, rng, (h, w))
    x = int(np.clip(cx - pw // 2, 0, max(0, w - pw)))
    y = int(np.clip(cy - ph // 2, 0, max(0, h - ph)))
    out = image.copy()
    out.paste(patch, (x, y), alpha)
    mask = Image.new("L", (w, h), 0)
    mask.paste(alpha, (x, y))
    return np.asarray(out), (np.asarray(mask) >= 128).astype(np.uint8) * 255


def cutpaste_normal(image: np.ndarray, ctx: DefectContext, rng: np.random.Generator) -> Sample:
    img = Image.fromarray(image)
    w, h = img.size
    area = rng.uniform(0.02, 0.15) * w * h
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3))))
    pw = int(np.clip(round(np.sqrt(area * aspect)), 2, w - 1))
    ph = int(np.clip(round(np.sqrt(area / aspect)), 2, h - 1))
    x, y = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    patch = _jitter(img.crop((x, y, x + pw, y + ph)), rng)
    return _paste(img, patch, Image.new("L", patch.size, 255), ctx, rng)


def cutpaste_scar(image: np.ndarray, ctx: DefectContext, rng: np.random.Generator) -> Sample:
    img = Image.fromarray(image)
    w, h = img.size
    scale = min(w, h) / 256
    sw = max(2, int(round(rng.uniform(2, 16) * scale)))
    sh = max(3, int(round(rng.uniform(10, 25) * scale)))
    x, y = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
    patch = _jitter(img.crop((x, y, x + sw, y + sh)), rng)
    angle = float(rng.uniform(-45, 45))
    patch = patch.rotate(angle, resample=Image.BILINEAR, expand=True)
    alpha = Image.new("L", (sw, sh), 255).rotate(angle, resample=Image.NEAREST, expand=True)
    return _paste(img, patch, alpha, ctx, rng)


def cutpaste(image: np.ndarray, ctx: DefectContext, rng: np.random.Generator) -> Sample:
    """One CutPaste sample: (defective image, binary mask 0/255)."""
    return (cutpaste_scar if rng.random() < 0.5 else cutpaste_normal)(image, ctx, rng)
