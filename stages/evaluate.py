"""`panda evaluate`: score the segmenter on the held-out test split; write metrics, plots, figures."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.evaluate import EvalParams, evaluate, write_evaluation
from panda.params import section
from panda.segment.train import load_model
from panda.tracking import stage_run
from stages.common import (
    FIGURES_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    SEGMENTER_PATH,
    params_option,
    read_compute,
    read_sections,
    tags,
    user_errors,
)


@click.command("evaluate")
@params_option
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path), default=SEGMENTER_PATH, show_default=True
)
@click.option("--category", help="Overrides data.category.")
@click.option(
    "--reports", "reports_dir", type=click.Path(path_type=Path), default=REPORTS_DIR, show_default=True
)
@user_errors
def evaluate_cmd(params_path: Path, model_path: Path, category: str | None, reports_dir: Path) -> None:
    """Pixel AUROC/AP, F1-max, AUPRO, image AUROC, IoU, mIoU, pixel accuracy; per defect type too."""
    params, data, tracking = read_sections(params_path, category=category)
    ev = section(params, "evaluate", EvalParams, str(params_path))
    compute = read_compute(params, params_path)
    model, manifest = load_model(model_path).to(compute.torch_device()), load_manifest(PROCESSED_DIR)
    logged = {"data": vars(data), "evaluate": vars(ev), "compute": vars(compute)}
    with stage_run("evaluate", tracking.experiment, logged, tags(data)) as run:
        result = evaluate(model, manifest, PROCESSED_DIR, data.category, ev)
        metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.metrics.items()}
        written = write_evaluation(result, metrics, reports_dir, FIGURES_DIR / "evaluate_samples.png")
        run.log_metrics(metrics)
        for path in written:
            run.log_artifact(path)
    click.echo(f"threshold {result.threshold:.3f} ({result.threshold_source})")
    click.echo(result.per_defect.round(3).to_string(index=False))
    keys = ["pixel_auroc", "pixel_ap", "aupro", "image_auroc", "miou"]
    click.echo("macro: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics))
