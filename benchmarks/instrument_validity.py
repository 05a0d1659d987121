"""Is the segmenter a valid instrument? Train it directly on the real gen_train defects and score it.

Issue 3's criterion, on Magnetic Tile: the mean over defect types of pixel AUROC >= 0.85 and of
image AUROC >= 0.75 on the test split. No synthesizer is involved: if the segmenter cannot learn
the real defects themselves, differences between synthesizers say little.

Run after `panda preprocess` on the dataset (e.g. inside a benchmark experiment, or with
`-S data.dataset=mtd ...` applied to params.yaml):
    python benchmarks/instrument_validity.py --processed-dir data/processed --category magnetic_tile \
        -S crop_size=0 -S steps=800 -S normal_fraction=0.5 -S photometric=1 --seeds 0
Writes reports/benchmark/validity.md and .json (one row per setting and seed, mean and spread).
Seeds already in that .json for the same category and overrides are kept, not rerun.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import click
import torch

from panda.benchmark import RunResult, aggregate, to_markdown
from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.evaluate import EvalParams, evaluate
from panda.io import write_json
from panda.params import load_params
from panda.segment.data import load_pairs
from panda.segment.train import TrainParams, save_model, train_segmenter
from panda.tracking import project_root
from stages.benchmark import parse_sets
from stages.common import CHECKPOINT_DIR

PIXEL_AUROC_BAR, IMAGE_AUROC_BAR = 0.85, 0.75


def train_params(base: dict, overrides: tuple[str, ...], seed: int) -> TrainParams:
    """params.yaml's `train` section with `key=value` overrides; no validation split (all reals train)."""
    names = {f.name for f in fields(TrainParams)}
    values = {k: v for k, v in base.items() if k in names} | {"val_fraction": 0.0, "seed": seed}
    params = TrainParams(**values | parse_sets(overrides, TrainParams, "a train"))
    params.validate()
    return params


def earlier_runs(path: Path, category: str, sets: tuple[str, ...]) -> list[RunResult]:
    """Runs of the same setting already in `path`, so an interrupted or extended run adds seeds only."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    if (old.get("category"), old.get("overrides")) != (category, list(sets)):
        return []
    return [RunResult(r["method"], int(r["seed"]), r["metrics"]) for r in old.get("runs", [])]


def distinct_defects(rows) -> dict[str, int]:
    """Physical defects per type in gen_train: photos of one tile (several exposures) are one group."""
    gen = rows[rows["split"] == "gen_train"]
    return {str(k): int(v) for k, v in gen.groupby("defect_type")["group"].nunique().items()}


def load_setting(params_path: str, processed_dir: str, category: str | None):
    """params.yaml, the category (default data.category), its manifest rows and normal train images."""
    params = load_params(Path(params_path))
    category = category or params["data"]["category"]
    root = Path(processed_dir)
    manifest = load_manifest(root)
    rows = category_rows(manifest, category)
    return params, category, root, manifest, rows, load_pairs(root, normal_train_rows(rows))


def write_report(
    out: Path, header: dict, table: list[dict], runs: list[RunResult], title: str, setting: str
) -> None:
    """`out`.json (header, table and every seed's run, so a later call can add seeds) and `out`.md."""
    write_json(header | {"rows": table, "runs": [r.__dict__ for r in runs]}, out.with_suffix(".json"))
    md = to_markdown(table, title, setting)
    out.with_suffix(".md").write_text(md)
    click.echo(md)


SETTING_OPTIONS = [
    click.option("--params", "params_path", default="params.yaml", show_default=True),
    click.option("--processed-dir", default="data/processed", show_default=True),
    click.option("--category", help="Defaults to data.category in params.yaml."),
    click.option("-S", "--set", "sets", multiple=True, help="Train parameter override, e.g. -S steps=800."),
    click.option("--seeds", default="0", show_default=True),
]


def setting_options(fn: Callable[..., None]) -> Callable[..., None]:
    """The options of both validity scripts (this one and defect_shots.py): data, category, training."""
    for option in reversed(SETTING_OPTIONS):
        fn = option(fn)
    return fn


def pretext_cache() -> Path:
    """Where `train.pretext_steps` runs are cached: the same place `panda train` uses."""
    return project_root() / CHECKPOINT_DIR / "train" / "pretext"


@click.command()
@setting_options
@click.option("--name", default="real-direct", show_default=True, help="Row name in the table.")
@click.option(
    "--tta/--no-tta", default=True, show_default=True, help="Also score with mirror TTA (row NAME-tta)."
)
@click.option("--out", "out_stem", default="reports/benchmark/validity", show_default=True)
@click.option(
    "--save-dir",
    type=click.Path(file_okay=False),
    help="Also save each seed's segmenter here (NAME-seedN.pt), e.g. to score it again later.",
)
def main(
    params_path: str,
    processed_dir: str,
    category: str | None,
    sets: tuple[str, ...],
    seeds: str,
    name: str,
    tta: bool,
    out_stem: str,
    save_dir: str | None,
) -> None:
    params, category, root, manifest, rows, normal = load_setting(params_path, processed_dir, category)
    real = load_pairs(root, rows[rows["split"] == "gen_train"].sort_values("image_path"))
    click.echo(f"{category}: {len(normal[0])} normal train images, {len(real[0])} gen_train defects")
    shots = distinct_defects(rows)
    click.echo(f"distinct physical defects (groups) in gen_train: {shots}")
    out = Path(out_stem)
    runs = earlier_runs(out.with_suffix(".json"), category, sets)
    done = {r.seed for r in runs}
    for seed in [int(s) for s in seeds.split(",") if s.strip()]:
        if seed in done:
            click.echo(f"seed {seed}: kept from {out.with_suffix('.json')}")
            continue
        tp = train_params(params.get("train", {}), sets, seed)
        result = train_segmenter(normal, real, tp, pretext_cache=pretext_cache())
        seconds = result.seconds
        if save_dir:
            image_size = int(real[0].shape[-1])
            save_model(result.model, tp, Path(save_dir) / f"{name}-seed{seed}.pt", image_size)
        for use_tta in (False, True) if tta else (False,):
            metrics = evaluate(result.model, manifest, root, category, EvalParams(tta=use_tta)).metrics
            row_name = f"{name}-tta" if use_tta else name
            timing = {"train_seconds": round(seconds, 1), "pretext_seconds": round(result.pretext_seconds, 1)}
            runs.append(RunResult(row_name, seed, {**metrics, **timing}))
            click.echo(
                f"seed {seed} {row_name}: macro pixel AUROC {metrics['pixel_auroc']:.3f}, "
                f"image AUROC {metrics['image_auroc']:.3f} ({seconds:.0f} s of training)"
            )
    table = aggregate(runs)
    row = max(table, key=lambda r: (r["pixel_auroc"], r["image_auroc"]))
    met = row["pixel_auroc"] >= PIXEL_AUROC_BAR and row["image_auroc"] >= IMAGE_AUROC_BAR
    pretext_steps = train_params(params.get("train", {}), sets, 0).pretext_steps
    pretext_note = (
        f"started from a {pretext_steps}-step restoration pretext on them; " if pretext_steps else ""
    )
    setting = (
        f"Segmenter trained directly on the {len(real[0])} real gen_train defects of {category} plus "
        f"{len(normal[0])} normal images; train overrides: `{' '.join(sets) or 'none'}`; "
        f"{pretext_note}"
        f"{torch.get_num_threads()} torch threads on {platform.processor() or platform.machine()}. "
        f"Distinct physical defects (tile groups) per type in gen_train: "
        f"{', '.join(f'{k} {v}' for k, v in shots.items())}.\n\n"
        f"Criterion (issue 3): macro pixel AUROC >= {PIXEL_AUROC_BAR} and image AUROC >= "
        f"{IMAGE_AUROC_BAR}: **{'met' if met else 'NOT met'}** "
        f"(best row `{row['method']}`: {row['pixel_auroc']:.3f} / {row['image_auroc']:.3f})."
    )
    header = {"category": category, "overrides": list(sets)}
    header |= {"criterion_met": met, "gen_train_groups": shots}
    write_report(out, header, table, runs, "Instrument validity", setting)


if __name__ == "__main__":
    main()
