"""What `synthesize` reports beside its pairs: a grid of synthetic defects next to real ones, and the
defect contrast of both (`quality.compare_contrast`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from panda.figures import grid, overlay
from panda.io import read_image
from panda.synth.quality import compare_contrast


def _pair(root: Path, row: pd.Series) -> list:
    img = read_image(root / row["image_path"], "RGB")
    return [img, overlay(img, read_image(root / row["mask_path"], "L"))]


def sample_grid(
    real: pd.DataFrame, processed_dir: Path, synthetic: pd.DataFrame, synthetic_dir: Path, path: Path
) -> Path:
    """One row per defect type: two real gen_train defects, then four synthesized ones (image | mask);
    a mixed set shows each of its methods' pairs in turn (`real+panda`: two real pastes, two panda)."""
    rows = []
    share = 4 // max(1, synthetic["method"].nunique())
    for defect, sub in synthetic.groupby("defect_type", sort=True):
        row = []
        for _, r in real[real["defect_type"] == defect].head(2).iterrows():
            row += _pair(processed_dir, r)
        row += [None] * (4 - len(row))
        for _, r in sub.groupby("method", sort=False).head(share).iterrows():
            row += _pair(synthetic_dir, r)
        rows.append(row)
    return grid(rows, path, titles=["real"] + [""] * 3 + ["synthetic"])


def synthesis_report(
    manifest: pd.DataFrame,
    processed_dir: Path,
    category: str,
    synthetic: pd.DataFrame,
    synthetic_dir: Path,
    figure: Path,
) -> dict[str, float]:
    """Draw the sample grid to `figure`; return the contrast metrics (per type, real and synthetic)."""
    rows = manifest[(manifest["category"] == category) & (manifest["split"] == "gen_train")]
    sample_grid(rows, processed_dir, synthetic, synthetic_dir, figure)
    return compare_contrast(rows, processed_dir, synthetic, synthetic_dir)
