"""What `synthesize` reports beside its pairs: a grid of synthetic defects next to real ones, and the
defect contrast and detail of both (`quality.compare_to_real`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from panda.data.geometry import valid_boxes
from panda.figures import grid, overlay
from panda.io import read_image
from panda.synth.quality import compare_to_real


def _pair(root: Path, row: pd.Series, box: tuple[int, int]) -> list:
    """image | mask overlay, cropped to the image's own box (`panda.data.geometry`)."""
    img = read_image(root / row["image_path"], "RGB")
    tiles = [img, overlay(img, read_image(root / row["mask_path"], "L"))]
    return [t[: box[0], : box[1]] for t in tiles]


def sample_grid(
    processed: pd.DataFrame, processed_dir: Path, synthetic: pd.DataFrame, synthetic_dir: Path, path: Path
) -> Path:
    """One row per defect type: two real gen_train defects, then four synthesized ones (image | mask);
    a mixed set shows each of its methods' pairs in turn (`real+panda`: two real pastes, two panda).
    `processed` holds the gen_train rows and the backgrounds (whose boxes the pairs keep)."""
    size = read_image(processed_dir / processed["image_path"].iloc[0], "L").shape[0]
    box = dict(zip(processed["image_path"], valid_boxes(processed, size), strict=True))
    real = processed[processed["split"] == "gen_train"]
    rows = []
    share = 4 // max(1, synthetic["method"].nunique())
    for defect, sub in synthetic.groupby("defect_type", sort=True):
        row = []
        for _, r in real[real["defect_type"] == defect].head(2).iterrows():
            row += _pair(processed_dir, r, box[r["image_path"]])
        row += [None] * (4 - len(row))
        for _, r in sub.groupby("method", sort=False).head(share).iterrows():
            row += _pair(synthetic_dir, r, box.get(r["background"], (size, size)))
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
    """Draw the sample grid to `figure`; return contrast and detail metrics (per type, real and synthetic)."""
    rows = manifest[manifest["category"] == category]
    sample_grid(rows, processed_dir, synthetic, synthetic_dir, figure)
    return compare_to_real(rows[rows["split"] == "gen_train"], processed_dir, synthetic, synthetic_dir)
