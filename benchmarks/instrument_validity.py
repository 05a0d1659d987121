"""Is the segmenter a valid instrument? Train it directly on the real gen_train defects and score it.

Issue 3's criterion, on Magnetic Tile: the mean over defect types of pixel AUROC >= 0.85 and of
image AUROC >= 0.75 on the test split. No synthesizer is involved: if the segmenter cannot learn
the real defects themselves, differences between synthesizers say little.

Run after `panda preprocess` on the dataset (e.g. inside a benchmark experiment, or with
`-S data.dataset=mtd ...` applied to params.yaml):
    python benchmarks/instrument_validity.py --processed-dir data/processed --category magnetic_tile \
        -S crop_size=0 -S steps=800 -S normal_fraction=0.5 -S photometric=1 --seeds 0
Writes reports/benchmark/validity.md and .json (one row per setting and seed, mean and spread).
"""

from __future__ import annotations

import platform
import time
from dataclasses import fields
from pathlib import Path

import click
import torch
import yaml

from panda.benchmark import RunResult, aggregate, to_markdown
from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.evaluate import EvalParams, evaluate
from panda.io import write_json
from panda.params import load_params
from panda.segment.data import load_pairs
from panda.segment.train import TrainParams, train_segmenter

PIXEL_AUROC_BAR, IMAGE_AUROC_BAR = 0.85, 0.75


def train_params(base: dict, overrides: tuple[str, ...], seed: int) -> TrainParams:
    """params.yaml's `train` section with `key=value` overrides; no validation split (all reals train)."""
    names = {f.name for f in fields(TrainParams)}
    values = {k: v for k, v in base.items() if k in names} | {"val_fraction": 0.0, "seed": seed}
    for item in overrides:
        key, _, raw = item.partition("=")
        if key not in names:
            raise click.BadParameter(f"-S {item}: '{key}' is not a train parameter ({sorted(names)})")
        values[key] = yaml.safe_load(raw)
    params = TrainParams(**values)
    params.validate()
    return params


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--processed-dir", default="data/processed", show_default=True)
@click.option("--category", help="Defaults to data.category in params.yaml.")
@click.option("-S", "--set", "sets", multiple=True, help="Train parameter override, e.g. -S steps=800.")
@click.option("--seeds", default="0", show_default=True)
@click.option("--name", default="real-direct", show_default=True, help="Row name in the table.")
@click.option("--out", "out_stem", default="reports/benchmark/validity", show_default=True)
def main(
    params_path: str,
    processed_dir: str,
    category: str | None,
    sets: tuple[str, ...],
    seeds: str,
    name: str,
    out_stem: str,
) -> None:
    params = load_params(Path(params_path))
    category = category or params["data"]["category"]
    root = Path(processed_dir)
    manifest = load_manifest(root)
    rows = category_rows(manifest, category)
    normal = load_pairs(root, normal_train_rows(rows))
    real = load_pairs(root, rows[rows["split"] == "gen_train"].sort_values("image_path"))
    click.echo(f"{category}: {len(normal[0])} normal train images, {len(real[0])} gen_train defects")
    runs = []
    for seed in [int(s) for s in seeds.split(",") if s.strip()]:
        tp = train_params(params.get("train", {}), sets, seed)
        began = time.perf_counter()
        result = train_segmenter(normal, real, tp)
        seconds = time.perf_counter() - began
        metrics = evaluate(result.model, manifest, root, category, EvalParams()).metrics
        runs.append(RunResult(name, seed, {**metrics, "train_seconds": round(seconds, 1)}))
        click.echo(
            f"seed {seed}: macro pixel AUROC {metrics['pixel_auroc']:.3f}, "
            f"image AUROC {metrics['image_auroc']:.3f} ({seconds:.0f} s of training)"
        )
    table = aggregate(runs)
    row = table[0]
    met = row["pixel_auroc"] >= PIXEL_AUROC_BAR and row["image_auroc"] >= IMAGE_AUROC_BAR
    setting = (
        f"Segmenter trained directly on the {len(real[0])} real gen_train defects of {category} plus "
        f"{len(normal[0])} normal images; train overrides: `{' '.join(sets) or 'none'}`; "
        f"{torch.get_num_threads()} torch threads on {platform.processor() or platform.machine()}.\n\n"
        f"Criterion (issue 3): macro pixel AUROC >= {PIXEL_AUROC_BAR} and image AUROC >= "
        f"{IMAGE_AUROC_BAR}: **{'met' if met else 'NOT met'}** "
        f"({row['pixel_auroc']:.3f} / {row['image_auroc']:.3f})."
    )
    out = Path(out_stem)
    write_json(
        {
            "category": category,
            "overrides": list(sets),
            "criterion_met": met,
            "rows": table,
            "runs": [r.__dict__ for r in runs],
        },
        out.with_suffix(".json"),
    )
    md = to_markdown(table, "Instrument validity", setting)
    out.with_suffix(".md").write_text(md)
    click.echo(md)


if __name__ == "__main__":
    main()
