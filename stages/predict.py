"""`panda predict`: apply the trained segmenter to a folder of new images (not a DVC stage)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from panda.errors import PandaError
from panda.evaluate import ADAPTIVE, EvalParams
from panda.params import section
from panda.predict import predict_folder
from panda.segment.mlflow_model import load_segmenter
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
    "--model",
    "model_ref",
    default=str(SEGMENTER_PATH),
    show_default=True,
    help="A model.pt path or an MLflow model URI (models:/panda@champion, runs:/<id>/segmenter).",
)
@click.option(
    "--threshold",
    help="A number, or 'adaptive' (the cut `panda evaluate` fitted). Default: the MLflow model's own "
    "threshold, else evaluate.threshold.",
)
@user_errors
def predict(
    params_path: Path, input_dir: Path, output_dir: Path, model_ref: str, threshold: str | None
) -> None:
    """Write an anomaly map, a binary mask and an overlay per image, plus scores.csv."""
    params, _, _ = read_sections(params_path)
    ev = section(params, "evaluate", EvalParams, str(params_path), threshold=parse_threshold(threshold))
    compute = read_compute(params, params_path)
    segmenter = load_segmenter(model_ref)
    if threshold is None and segmenter.threshold is not None:
        cut = float(segmenter.threshold)
    else:
        cut = operating_threshold(ev, REPORTS_DIR / "metrics.json")
    tta = ev.tta if segmenter.tta is None else bool(segmenter.tta)
    model = segmenter.model.to(compute.torch_device())
    summary = predict_folder(
        model,
        input_dir,
        output_dir,
        segmenter.image_size,
        cut,
        tta,
        normal_stats=segmenter.normal_stats,
        geometry=segmenter.geometry,
    )
    for path, reason in summary.failed:
        click.secho(f"skipped {path}: {reason}", fg="yellow", err=True)
    for _, row in summary.scores[summary.scores["ood"] != ""].iterrows():
        click.secho(
            f"warning: {row['image']} is unlike the training images: {row['ood']}", fg="yellow", err=True
        )
    n_def = int(summary.scores["defective"].sum())
    click.echo(
        f"{len(summary.scores)} images scored ({n_def} defective at {cut:.3f}), "
        f"{len(summary.failed)} skipped -> {output_dir / 'scores.csv'}"
    )


def parse_threshold(text: str | None) -> float | str | None:
    """--threshold as given: a number, or 'adaptive'; anything else names the option."""
    if text is None or text == ADAPTIVE:
        return text
    try:
        return float(text)
    except ValueError:
        raise PandaError(f"--threshold {text}: use a number in [0, 1] or '{ADAPTIVE}'") from None
