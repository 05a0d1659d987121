"""`panda preprocess`: resize, binarise, split and write the manifest (data/processed)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from panda.data.download import downloaded_dataset
from panda.data.preprocess import PreprocessParams, preprocess, split_summary
from panda.figures import grid, overlay
from panda.io import read_image
from panda.params import section
from panda.tracking import stage_run
from stages.common import FIGURES_DIR, PROCESSED_DIR, RAW_DIR, params_option, read_sections, tags, user_errors


def _print_table(summary) -> None:
    table = Table(title="split summary (images)")
    for col in summary.columns:
        table.add_column(str(col), justify="right" if col not in ("category", "defect_type") else "left")
    for _, row in summary.iterrows():
        table.add_row(*[str(v) for v in row])
    Console(stderr=False).print(table)


def _sample_grid(manifest, out_dir: Path, path: Path) -> Path:
    """One gen_train defect per (category, defect type): image and mask overlay, its own box only."""
    rows = []
    picks = manifest[manifest["split"] == "gen_train"].groupby(["category", "defect_type"]).head(1)
    for _, r in picks.iterrows():
        h, w = int(r["valid_height"]), int(r["valid_width"])
        img = read_image(out_dir / r["image_path"], "RGB")[:h, :w]
        mask = read_image(out_dir / r["mask_path"], "L")[:h, :w]
        rows.append([img, overlay(img, mask)])
    return grid(rows, path, titles=["image", "mask"])


@click.command("preprocess")
@params_option
@click.option(
    "--dataset", help="Layout of --raw (default: what `panda download` put there, else data.dataset)."
)
@click.option("--image-size", type=int, help="Overrides preprocess.image_size.")
@click.option("--raw", "raw_dir", type=click.Path(path_type=Path), default=RAW_DIR, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=PROCESSED_DIR, show_default=True)
@user_errors
def preprocess_cmd(
    params_path: Path, dataset: str | None, image_size: int | None, raw_dir: Path, out_dir: Path
) -> None:
    """Normalise the dataset: resized images, binary masks, manifest with train/gen_train/test splits."""
    params, data, tracking = read_sections(params_path, dataset=dataset or downloaded_dataset(raw_dir))
    prep = section(params, "preprocess", PreprocessParams, str(params_path), image_size=image_size)
    logged = {"data": vars(data), "preprocess": vars(prep)}
    with stage_run("preprocess", tracking.experiment, logged, tags(data, False), all_params=params) as run:
        manifest = preprocess(data.dataset, raw_dir, out_dir, prep)
        summary = split_summary(manifest)
        _print_table(summary)
        summary_path = out_dir / "split_summary.csv"
        summary.to_csv(summary_path, index=False)
        figure = _sample_grid(manifest, out_dir, FIGURES_DIR / "preprocess_samples.png")
        counts = manifest.groupby("split").size().to_dict()
        run.log_metrics({f"n_{k}": int(v) for k, v in counts.items()} | {"n_images": len(manifest)})
        run.log_artifact(summary_path)
        run.log_artifact(figure)
