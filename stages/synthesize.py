"""`panda synthesize`: write synthetic (image, mask) pairs for the category (data/synthetic)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.figures import grid, overlay
from panda.io import read_image, write_json
from panda.params import section
from panda.synth.run import SynthParams, synthesize
from panda.tracking import stage_run
from stages.common import (
    DIFFUSION_DIR,
    FIGURES_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    SYNTHETIC_DIR,
    params_option,
    read_sections,
    tags,
    user_errors,
)


def _grid(frame, root: Path, path: Path, per_type: int = 4) -> Path:
    rows = []
    for _, sub in frame.groupby("defect_type", sort=True):
        row = []
        for _, r in sub.head(per_type).iterrows():
            img = read_image(root / r["image_path"], "RGB")
            row += [img, overlay(img, read_image(root / r["mask_path"], "L"))]
        rows.append(row)
    return grid(rows, path)


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
    manifest = load_manifest(PROCESSED_DIR)
    frame, sec_per_image = synthesize(manifest, PROCESSED_DIR, out_dir, data.category, synth, DIFFUSION_DIR)
    figure = _grid(frame, out_dir, FIGURES_DIR / "synthetic_samples.png")
    write_json(
        {"method": synth.method, "n_images": len(frame), "seconds_per_image": round(sec_per_image, 5)},
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
            }
        )
        mlflow.log_artifact(str(figure))
    click.echo(
        f"{len(frame)} synthetic images ({synth.method}) in {out_dir}, {sec_per_image * 1000:.1f} ms/image"
    )
