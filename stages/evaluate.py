"""`panda evaluate`: score the segmenter on the held-out test split; write metrics, plots, figures."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.evaluate import EvalParams, evaluate, qualitative_grid
from panda.io import write_json
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
    result = evaluate(model, manifest, PROCESSED_DIR, data.category, ev)
    metrics = {k: round(v, 6) if isinstance(v, float) else v for k, v in result.metrics.items()}
    write_json(metrics, reports_dir / "metrics.json")
    per_defect = reports_dir / "per_defect.csv"
    result.per_defect.round(6).to_csv(per_defect, index=False)
    write_json(result.curves["roc"], reports_dir / "plots" / "roc.json")
    write_json(result.curves["pr"], reports_dir / "plots" / "pr.json")
    figure = qualitative_grid(result, FIGURES_DIR / "evaluate_samples.png")
    with stage_run("evaluate", tracking.experiment, {"data": vars(data), "evaluate": vars(ev)}, tags(data)):
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in (
            reports_dir / "metrics.json",
            per_defect,
            reports_dir / "plots" / "roc.json",
            reports_dir / "plots" / "pr.json",
            figure,
        ):
            mlflow.log_artifact(str(path))
    click.echo(f"threshold {result.threshold:.3f} ({result.threshold_source})")
    click.echo(result.per_defect.round(3).to_string(index=False))
    keys = ["pixel_auroc", "pixel_ap", "aupro", "image_auroc", "miou"]
    click.echo("macro: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics))
