"""`panda synthesize`: write synthetic (image, mask) pairs for the category (data/synthetic)."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from panda.compute import is_main_process
from panda.data.preprocess import category_rows, load_manifest
from panda.figures import grid, overlay
from panda.io import read_image, write_json
from panda.params import section
from panda.synth.params import SynthParams
from panda.synth.quality import compare_contrast
from panda.synth.run import synthesize
from panda.tracking import stage_run
from stages.common import (
    DIFFUSION_DIR,
    FIGURES_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    SYNTHETIC_DIR,
    params_option,
    read_compute,
    read_sections,
    relaunched,
    tags,
    user_errors,
)


def _pair(root: Path, row) -> list:
    img = read_image(root / row["image_path"], "RGB")
    return [img, overlay(img, read_image(root / row["mask_path"], "L"))]


def _grid(real: pd.DataFrame, synthetic: pd.DataFrame, synthetic_dir: Path, path: Path) -> Path:
    """One row per defect type: two real gen_train defects, then four synthesized ones (image | mask)."""
    rows = []
    for defect, sub in synthetic.groupby("defect_type", sort=True):
        row = []
        for _, r in real[real["defect_type"] == defect].head(2).iterrows():
            row += _pair(PROCESSED_DIR, r)
        row += [None] * (4 - len(row))
        for _, r in sub.head(4).iterrows():
            row += _pair(synthetic_dir, r)
        rows.append(row)
    return grid(rows, path, titles=["real"] + [""] * 3 + ["synthetic"])


@click.command("synthesize")
@params_option
@click.option("--method", help="Overrides synth.method.")
@click.option("--n-per-defect", type=int, help="Overrides synth.n_per_defect.")
@click.option("--category", help="Overrides data.category.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=SYNTHETIC_DIR, show_default=True)
@user_errors
def synthesize_cmd(
    params_path: Path, method: str | None, n_per_defect: int | None, category: str | None, out_dir: Path
) -> None:
    """Synthesize n_per_defect defective images per defect type with the chosen method."""
    params, data, tracking = read_sections(params_path, category=category)
    synth = section(params, "synth", SynthParams, str(params_path), method=method, n_per_defect=n_per_defect)
    compute = read_compute(params, params_path)
    if relaunched(compute):
        return
    manifest = load_manifest(PROCESSED_DIR)
    frame, sec_per_image = synthesize(
        manifest, PROCESSED_DIR, out_dir, data.category, synth, DIFFUSION_DIR, compute
    )
    if not is_main_process():
        return
    real = category_rows(manifest, data.category).query("split == 'gen_train'")
    figure = _grid(real, frame, out_dir, FIGURES_DIR / "synthetic_samples.png")
    contrast = compare_contrast(real, PROCESSED_DIR, frame, out_dir)
    write_json(
        {
            "method": synth.method,
            "n_images": len(frame),
            "seconds_per_image": round(sec_per_image, 5),
            **contrast,
        },
        REPORTS_DIR / "synth_metrics.json",
    )
    with stage_run("synthesize", tracking.experiment, {"data": vars(data), "synth": vars(synth)}, tags(data)):
        import mlflow

        mlflow.set_tag("method", synth.method)
        mlflow.log_metrics(
            {
                "n_images": len(frame),
                "seconds_per_image": sec_per_image,
                "mean_mask_area": float(frame["mask_area"].mean()),
                **contrast,
                }
        )
        mlflow.log_artifact(str(figure))
    click.echo(
        f"{len(frame)} synthetic images ({synth.method}) in {out_dir}, {sec_per_image * 1000:.1f} ms/image; "
        f"contrast gap to real defects {contrast.get('contrast_gap', float('nan')):.1f} gray levels"
    )
