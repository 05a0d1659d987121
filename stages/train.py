"""`panda train`: train the defect segmenter on normal + synthetic pairs (data/models/segmenter)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import PreprocessParams, category_rows, load_manifest, normal_train_rows
from panda.io import write_json
from panda.params import section
from panda.segment.data import load_pairs
from panda.segment.ood import normal_statistics
from panda.segment.train import TrainParams, save_model, train_segmenter
from panda.synth.manifest import load_synthetic
from panda.tracking import project_root, stage_run
from stages.common import (
    CHECKPOINT_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    SEGMENTER_PATH,
    SYNTHETIC_DIR,
    params_option,
    read_compute,
    read_sections,
    relaunched,
    tags,
    user_errors,
)

COLLAPSED = (
    "warning: the segmenter marks no pixel of its validation pairs as a defect (val dice 0): "
    "training collapsed to 'all normal'. Try another train.seed or a lower train.lr."
)


@click.command("train")
@params_option
@click.option("--steps", type=int, help="Overrides train.steps.")
@click.option("--category", help="Overrides data.category.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=SEGMENTER_PATH, show_default=True)
@user_errors
def train(params_path: Path, steps: int | None, category: str | None, out_path: Path) -> None:
    """Train the U-Net segmenter; resumes from data/checkpoints after an interruption."""
    params, data, tracking = read_sections(params_path, category=category)
    tp = section(params, "train", TrainParams, str(params_path), steps=steps)
    geometry = section(params, "preprocess", PreprocessParams, str(params_path)).geometry
    compute = read_compute(params, params_path)
    rows = category_rows(load_manifest(PROCESSED_DIR), data.category)
    normal = load_pairs(PROCESSED_DIR, normal_train_rows(rows))
    frame = load_synthetic(SYNTHETIC_DIR)
    synthetic = load_pairs(SYNTHETIC_DIR, frame)
    if relaunched(compute):
        return
    logged = {"data": vars(data), "train": vars(tp), "compute": vars(compute)}
    with stage_run("train", tracking.experiment, logged, tags(data), all_params=params) as run:
        if run is not None:
            run.log_dataset(frame, (SYNTHETIC_DIR / "manifest.csv").resolve(), "synthetic-pairs")
        result = train_segmenter(
            normal,
            synthetic,
            tp,
            CHECKPOINT_DIR / "train" / "segmenter",
            compute,
            on_step=run.log_step if run else None,
            # the pretext is cached at the main repo root, keyed by its job: experiments share it
            pretext_cache=project_root() / CHECKPOINT_DIR / "train" / "pretext",
        )
        if run is None:  # not the main process: it only trained
            return
        stats = normal_statistics(normal[0])
        save_model(result.model.cpu(), tp, out_path, int(normal[0].shape[-1]), stats, geometry)
        summary = result.summary()
        write_json(summary, REPORTS_DIR / "train_metrics.json")
        run.log_metrics(summary)
    click.echo(f"{result.report()} -> {out_path}")
    if result.val_dice == 0:
        click.secho(COLLAPSED, fg="yellow", err=True)
