"""`panda predict`: apply the trained segmenter to a folder of new images (not a DVC stage)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from panda.errors import PandaError
from panda.evaluate import ADAPTIVE, EvalParams
from panda.params import section
from panda.predict import predict_folder
from panda.segment.train import load_model
from stages.common import (
    REPORTS_DIR,
    SEGMENTER_PATH,
    params_option,
    read_compute,
    read_sections,
    user_errors,
)


def operating_threshold(ev: EvalParams, metrics_path: Path) -> float:
    """`evaluate.threshold`, or for "adaptive" the threshold `panda evaluate` fitted and wrote."""
    if ev.threshold != ADAPTIVE:
        return float(ev.threshold)
    try:
        return float(json.loads(metrics_path.read_text())["threshold"])
    except (OSError, KeyError, TypeError, ValueError):
        raise PandaError(
            f"evaluate.threshold is '{ADAPTIVE}' but {metrics_path} holds no fitted threshold: "
            "run `panda evaluate` (or `dvc repro`) first, or pass --threshold"
        ) from None


@click.command("predict")
@params_option
@click.option(
    "--input-dir", type=click.Path(path_type=Path), required=True, help="Folder of images (any size)."
)
@click.option(
    "--output-dir", type=click.Path(path_type=Path), required=True, help="Where maps/masks/overlays go."
)
@click.option(
    "--model", "model_path", type=click.Path(path_type=Path), default=SEGMENTER_PATH, show_default=True
)
@click.option(
    "--threshold",
    type=float,
    help="Binarisation threshold (default: evaluate.threshold; 'adaptive': reports/metrics.json's).",
)
@user_errors
def predict(
    params_path: Path, input_dir: Path, output_dir: Path, model_path: Path, threshold: float | None
) -> None:
    """Write an anomaly map, a binary mask and an overlay per image, plus scores.csv."""
    params, _, _ = read_sections(params_path)
    ev = section(params, "evaluate", EvalParams, str(params_path), threshold=threshold)
    compute = read_compute(params, params_path)
    model, image_size = load_model(model_path, with_size=True)
    model.to(compute.torch_device())
    cut = operating_threshold(ev, REPORTS_DIR / "metrics.json")
    summary = predict_folder(model, input_dir, output_dir, image_size, cut, ev.tta)
    for path, reason in summary.failed:
        click.secho(f"skipped {path}: {reason}", fg="yellow", err=True)
    n_def = int(summary.scores["defective"].sum())
    click.echo(
        f"{len(summary.scores)} images scored ({n_def} defective at {cut:.3f}), "
        f"{len(summary.failed)} skipped -> {output_dir / 'scores.csv'}"
    )
