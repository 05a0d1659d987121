"""Why is mIoU low? Where each defect type's IoU loses its pixels, for finished benchmark runs.

A type's defect IoU is TP / (TP + FN + FP), and its FP count includes every false alarm on the test
normals (each type is scored against all of them). So a type with small defects (Magnetic Tile's
blowholes: 2,300 mask pixels in 78 test images) loses its IoU to a few thousand false-alarm pixels
on normals even when recall is high. This splits each type's pixels at the threshold into recall,
false alarms on its own images and false alarms on the normals, and says where the normals' false
alarms sit: within `--border` pixels of the image edge, and how dark (median gray level against
all normal pixels). Reads the segmenters from the clone that ran the benchmark, like rescore.py:
    python benchmarks/pixel_errors.py --repo . --out reports/benchmark/mtd-errors \\
        bench-mtd-draem-rpt-s0 bench-mtd-panda-auto-b1500-rpt-s0
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np
from rescore import open_run

from panda.data.preprocess import load_manifest
from panda.evaluate import EvalParams, SplitMaps, predict_split
from panda.io import write_json
from panda.segment.train import load_model


def border_mask(shape: tuple[int, int], border: int) -> np.ndarray:
    edge = np.zeros(shape, bool)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = True, True, True, True
    return edge


def pixel_errors(split: SplitMaps, threshold: float, border: int) -> tuple[list[dict], dict]:
    """Per defect type: mask pixels, recall, FP on its images, FP on all normals, IoU; and where the
    normals' false alarms are (share at the border, median gray level)."""
    pred = split.maps >= threshold
    truth = split.masks.astype(bool)
    types = split.frame["defect_type"].to_numpy()
    normal = types == "good"
    fp_normals = int(pred[normal].sum())
    rows = []
    for defect in sorted(set(types[~normal])):
        sel = types == defect
        tp = int((pred[sel] & truth[sel]).sum())
        fn = int((~pred[sel] & truth[sel]).sum())
        fp_own = int((pred[sel] & ~truth[sel]).sum())
        rows.append(
            {
                "defect_type": defect,
                "mask_pixels": tp + fn,
                "recall": tp / max(1, tp + fn),
                "fp_own_images": fp_own,
                "fp_normals": fp_normals,
                "iou": tp / max(1, tp + fn + fp_own + fp_normals),
            }
        )
    gray = split.images[normal].numpy().mean(1)
    alarms = pred[normal]
    edge = border_mask(alarms.shape[1:], border)
    where = {
        "fp_normal_pixels": fp_normals,
        "normals_with_fp": int(alarms.reshape(len(alarms), -1).any(1).sum()),
        "n_normals": int(normal.sum()),
        "fp_share_at_border": float(alarms[:, edge].sum() / max(1, fp_normals)),
        "border_area_share": float(edge.mean()),
        "fp_median_gray": float(np.median(gray[alarms])) if fp_normals else float("nan"),
        "normal_median_gray": float(np.median(gray)),
    }
    return rows, where


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    lines = ["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--repo", type=click.Path(path_type=Path), default=".", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Writes OUT.md and OUT.json.")
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--border", default=8, show_default=True, help="Pixels from the edge counted as border.")
def main(names: tuple[str, ...], repo: Path, out: Path, threshold: float, border: int) -> None:
    """Split each run's per-type IoU into recall and false alarms, at `--threshold`."""
    report: dict[str, dict] = {}
    lines = [f"# Pixel errors at threshold {threshold} (test split, mirror TTA)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        processed: dict[str, Path] = {}
        for name in names:
            model_path, root, category = open_run(repo, name, Path(tmp), processed)
            split = predict_split(
                load_model(model_path), load_manifest(root), root, category, EvalParams(), "test"
            )
            rows, where = pixel_errors(split, threshold, border)
            report[name] = {"types": rows, "normals": where}
            lines += [
                f"## {name}",
                "",
                markdown_table(rows),
                "",
                f"False alarms on the {where['n_normals']} test normals: {where['fp_normal_pixels']} pixels "
                f"in {where['normals_with_fp']} images; {where['fp_share_at_border']:.0%} within {border} px "
                f"of the edge ({where['border_area_share']:.0%} of the area); median gray "
                f"{where['fp_median_gray']:.3f} against {where['normal_median_gray']:.3f} over all normals.",
                "",
            ]
            click.echo("\n".join(lines[-6:]))
    write_json({"threshold": threshold, "border": border, "runs": report}, out.with_suffix(".json"))
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
