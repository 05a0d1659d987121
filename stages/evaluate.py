"""`panda evaluate`: score the segmenter on the held-out test split; write metrics, plots, figures."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.evaluate import EvalParams, evaluate, write_evaluation
from panda.params import section
from panda.segment.mlflow_model import log_segmenter
from panda.segment.train import load_model_file
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

HEADLINE = ("pixel_auroc", "pixel_ap", "aupro", "image_auroc", "miou", "val_pixel_ap")


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
    model, info = load_model_file(model_path)
    manifest = load_manifest(PROCESSED_DIR)
    logged = {"data": vars(data), "evaluate": vars(ev), "compute": vars(compute)}
    with stage_run("evaluate", tracking.experiment, logged, tags(data), all_params=params) as run:
        result = evaluate(model.to(compute.torch_device()), manifest, PROCESSED_DIR, data.category, ev)
        metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.metrics.items()}
        written = write_evaluation(result, metrics, reports_dir, FIGURES_DIR / "evaluate_samples.png")
        run.log_metrics(metrics)
        run.close_pipeline({k: metrics[k] for k in HEADLINE if k in metrics})
        score = float(metrics.get("val_pixel_ap", float("nan")))
        uri = run.log_model(
            lambda mlflow: log_segmenter(
                mlflow, model.cpu(), info, result.threshold, ev.tta, tracking.experiment, score
            )
        )
        if uri:
            click.echo(f"model logged as {uri}, registered as '{tracking.experiment}' (alias newest)")
        for path in written:
            run.log_artifact(path)
    click.echo(f"threshold {result.threshold:.3f} ({result.threshold_source})")
    click.echo(result.per_defect.round(3).to_string(index=False))
    keys = ["pixel_auroc", "pixel_ap", "aupro", "image_auroc", "miou"]
    click.echo("macro: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics))
