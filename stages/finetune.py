"""`panda finetune`: train the window-local diffusion denoiser (phase A on normal images)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.diffusion.pixel import FinetuneParams, save_denoiser, train_phase_a
from panda.io import atomic_dir, write_json
from panda.params import section
from panda.segment.data import load_pairs
from panda.synth.run import category_rows
from panda.tracking import stage_run
from stages.common import (
    CHECKPOINT_DIR,
    DIFFUSION_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    params_option,
    read_sections,
    tags,
    user_errors,
)


@click.command("finetune")
@params_option
@click.option("--steps", type=int, help="Overrides finetune.steps.")
@click.option("--category", help="Overrides data.category.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DIFFUSION_DIR, show_default=True)
@user_errors
def finetune(params_path: Path, steps: int | None, category: str | None, out_dir: Path) -> None:
    """Train the denoiser on windows of the category's normal training images (resumable)."""
    params, data, tracking = read_sections(params_path, category=category)
    ft = section(params, "finetune", FinetuneParams, str(params_path), steps=steps)
    manifest = load_manifest(PROCESSED_DIR)
    rows = category_rows(manifest, data.category)
    normals = rows[(rows["split"] == "train") & (rows["defect_type"] == "good")]
    images, _ = load_pairs(PROCESSED_DIR, normals)
    with stage_run("finetune", tracking.experiment, {"data": vars(data), "finetune": vars(ft)}, tags(data)):
        import mlflow

        def log(step: int, metrics: dict[str, float]) -> None:
            if step % 10 == 0 or step == ft.steps:
                mlflow.log_metrics(metrics, step=step)

        result = train_phase_a(images * 2 - 1, ft, CHECKPOINT_DIR / "finetune" / data.category, on_step=log)
        with atomic_dir(out_dir) as tmp:
            save_denoiser(result, tmp)  # weights only: the output stays byte-identical across reruns
        summary = {
            "steps": result.steps_done,
            "resumed_from": result.resumed_from,
            "final_loss": result.final_loss,
            "n_parameters": result.n_parameters,
            "train_seconds": round(result.seconds, 2),
        }
        write_json(summary, REPORTS_DIR / "finetune_metrics.json")
        mlflow.log_metrics(summary)
    click.echo(
        f"denoiser: {result.n_parameters / 1e6:.2f}M params, {result.steps_done} steps "
        f"(resumed at {result.resumed_from}) "
        f"in {result.seconds:.1f}s, final loss {result.final_loss:.4f} -> {out_dir}"
    )
