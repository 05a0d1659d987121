"""`panda synthesize`: write synthetic (image, mask) pairs for the category (data/synthetic)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.io import write_json
from panda.params import section
from panda.synth.params import SynthParams
from panda.synth.report import synthesis_report
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
    logged = {"data": vars(data), "synth": vars(synth), "compute": vars(compute)}
    with stage_run(
        "synthesize", tracking.experiment, logged, tags(data) | {"method": synth.method}, all_params=params
    ) as run:
        frame, sec_per_image = synthesize(
            manifest, PROCESSED_DIR, out_dir, data.category, synth, DIFFUSION_DIR, compute
        )
        if run is None:  # not the main process: it only synthesized its share
            return
        figure = FIGURES_DIR / "synthetic_samples.png"
        quality = synthesis_report(manifest, PROCESSED_DIR, data.category, frame, out_dir, figure)
        summary = {"n_images": len(frame), "seconds_per_image": round(sec_per_image, 5), **quality}
        write_json({"method": synth.method, **summary}, REPORTS_DIR / "synth_metrics.json")
        run.log_metrics(summary | {"mean_mask_area": float(frame["mask_area"].mean())})
        run.log_artifact(figure)
    click.echo(
        f"{len(frame)} synthetic images ({synth.method}) in {out_dir}, {sec_per_image * 1000:.1f} ms/image; "
        f"gap to real defects: contrast {quality.get('contrast_gap', float('nan')):.1f} gray levels, "
        f"detail {quality.get('detail_gap', float('nan')):.1f}"
        + (f", chroma {quality['chroma_gap']:.1f}" if "chroma_gap" in quality else "")
    )
