"""Why is image AUROC low? Where each test image's score (the max of its map) comes from.

For a saved segmenter (e.g. from `instrument_validity.py --save-dir`), per defect type and for the
test normals: the median image score, the share of defect images that score above the normals'
90th percentile (found at a 10% false-alarm rate), and the share of images whose maximum lies within
`--border` pixels of the image edge (padding and tile-edge artefacts rather than defects):
    python benchmarks/score_anatomy.py --model models/real-direct-pretext-seed2.pt \
        --processed-dir data/processed --category magnetic_tile
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from panda.data.preprocess import load_manifest
from panda.evaluate import held_out_rows, predict_maps
from panda.segment.data import load_pairs
from panda.segment.train import load_model


def anatomy(maps: np.ndarray, defect_types: np.ndarray, border: int) -> list[dict]:
    """One row per group ('good' first): n, median score, share found at 10% FPR, share at the border."""
    h, w = maps.shape[1:]
    flat = maps.reshape(len(maps), -1)
    scores = flat.max(1)
    rows, cols = np.unravel_index(flat.argmax(1), (h, w))
    edge = np.minimum.reduce([rows, h - 1 - rows, cols, w - 1 - cols]) < border
    normal = defect_types == "good"
    if not normal.any():
        raise click.ClickException("no test normals: the found-at-10%-FPR column needs them")
    p90 = np.quantile(scores[normal], 0.9)
    out = []
    for group in ["good", *sorted(set(defect_types[~normal]))]:
        sel = defect_types == group
        out.append(
            {
                "group": group,
                "n": int(sel.sum()),
                "median_score": float(np.median(scores[sel])),
                "found_at_10pct_fpr": float((scores[sel] > p90).mean()),
                "max_at_border": float(edge[sel].mean()),
            }
        )
    return out


@click.command()
@click.option("--model", "model_path", type=click.Path(exists=True, path_type=Path), required=True)
@click.option(
    "--processed-dir", type=click.Path(path_type=Path), default=Path("data/processed"), show_default=True
)
@click.option("--category", required=True)
@click.option("--border", default=4, show_default=True, help="Pixels from the edge counted as border.")
@click.option("--tta/--no-tta", default=True, show_default=True)
def main(model_path: Path, processed_dir: Path, category: str, border: int, tta: bool) -> None:
    """Print where the image scores of a saved segmenter come from, per defect type."""
    frame = held_out_rows(load_manifest(processed_dir), category)
    images, _ = load_pairs(processed_dir, frame)
    maps = predict_maps(load_model(model_path), images, tta=tta)
    click.echo(f"| group | images | median score | found at 10% FPR | max within {border} px of the edge |")
    click.echo("|---|---|---|---|---|")
    for row in anatomy(maps, frame["defect_type"].to_numpy(), border):
        click.echo(
            f"| {row['group']} | {row['n']} | {row['median_score']:.3f} | "
            f"{row['found_at_10pct_fpr']:.2f} | {row['max_at_border']:.2f} |"
        )


if __name__ == "__main__":
    main()
