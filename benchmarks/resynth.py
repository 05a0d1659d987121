"""Try other synth params for a finished benchmark's method, reusing its trained denoisers.

A sampler setting (`synth.sampler`, `synth.guidance_scale`, ...) changes no weights, so fine-tuning
again for it would waste most of a benchmark run. For each seed of `--from-method`, this takes that
experiment's denoiser and params from the DVC cache of the clone that ran the benchmark, synthesizes
with the `-S` overrides, trains the segmenter with the experiment's own train params, and scores it
with the benchmark's evaluate overrides:
    python benchmarks/resynth.py --repo /path/to/bench/clone --benchmark reports/benchmark/mtd-tta.json \
        --name panda-ddpm-g2 -S sampler=ddpm -S guidance_scale=2
With `--pool 0,1,2` it synthesizes nothing: each seed's segmenter trains on the synthetic pairs of
those seeds' experiments together (do pairs from several denoisers add up?).
Writes <benchmark>-resynth.md/.json: the benchmark's rows plus one row per `--name`. Finished
(name, seed) runs are kept there and skipped, so calls add rows and an interrupted call resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch
import yaml
from rescore import fetch, open_experiment, write_tables

from panda.benchmark import RunResult, aggregate
from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.evaluate import EvalParams, evaluate
from panda.params import section
from panda.segment.data import load_pairs, load_synthetic_pairs
from panda.segment.train import TrainParams, train_segmenter
from panda.synth.quality import compare_contrast
from panda.synth.run import SynthParams, load_synthetic, synthesize
from stages.benchmark import parse_sets


def resynth_run(
    fs,
    name: str,
    overrides: dict,
    ev: EvalParams,
    work: Path,
    processed: dict[str, Path],
    train_overrides: dict | None = None,
) -> dict:
    """Synthesize with `overrides` from experiment `name`'s denoiser, train (with `train_overrides`),
    evaluate on the test split and on the validation split; test metrics plus `val_*` ones."""
    params = yaml.safe_load(fs.read_text("params.yaml"))
    category = params["data"]["category"]
    model_dir, partial = work / "diffusion", work / "diffusion.partial"
    root = fetch(
        fs, name, {} if model_dir.is_dir() else {"data/models/diffusion": partial}, work.parent, processed
    )
    if not model_dir.is_dir():
        partial.rename(model_dir)  # a copy cut short never looks complete
    manifest = load_manifest(root)
    synth = section(params, "synth", SynthParams, f"{name}/params.yaml", **overrides)
    synthetic_dir = work / "synthetic"
    frame, sec_per_image = synthesize(manifest, root, synthetic_dir, category, synth, model_dir)
    rows = category_rows(manifest, category)
    contrast = compare_contrast(rows[rows["split"] == "gen_train"], root, frame, synthetic_dir)
    metrics = train_and_score(params, name, root, [synthetic_dir], ev, work, train_overrides)
    return {**metrics, **contrast, "seconds_per_image": sec_per_image}


def pool_run(
    experiments: list,
    ev: EvalParams,
    work: Path,
    processed: dict[str, Path],
    train_overrides: dict | None = None,
) -> dict:
    """Train on the synthetic pairs of several experiments ((name, file system) pairs) pooled, with
    the params and data of the first; scored like `resynth_run`."""
    dirs, roots = [], set()
    for name, fs in experiments:
        target, partial = work.parent / f"{name}-synthetic", work.parent / f"{name}-synthetic.partial"
        items = {} if target.is_dir() else {"data/synthetic": partial}
        roots.add(fetch(fs, name, items, work.parent, processed))
        if not target.is_dir():
            partial.rename(target)
        dirs.append(target)
    if len(roots) > 1:
        names = ", ".join(n for n, _ in experiments)
        raise click.ClickException(f"--pool: {names} were trained on different preprocessed data")
    name, fs = experiments[0]
    root = roots.pop()
    params = yaml.safe_load(fs.read_text("params.yaml"))
    return train_and_score(params, name, root, dirs, ev, work, train_overrides)


def train_and_score(
    params: dict,
    name: str,
    root: Path,
    synthetic_dirs: list[Path],
    ev: EvalParams,
    work: Path,
    train_overrides: dict | None,
) -> dict:
    """Train the segmenter on the normals of `root` plus the pairs of `synthetic_dirs`, with
    experiment `name`'s train params (plus `train_overrides`); test and validation metrics."""
    category = params["data"]["category"]
    manifest = load_manifest(root)
    tp = section(params, "train", TrainParams, f"{name}/params.yaml", **(train_overrides or {}))
    normal = load_pairs(root, normal_train_rows(category_rows(manifest, category)))
    parts = [load_synthetic_pairs(d, load_synthetic(d), root, tp.label_min_change) for d in synthetic_dirs]
    pairs = (torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]))
    result = train_segmenter(normal, pairs, tp, work / "train_ckpt.pt")
    metrics = evaluate(result.model, manifest, root, category, ev).metrics
    return {**metrics, "train_seconds": result.seconds}


@click.command()
@click.option("--repo", type=click.Path(path_type=Path), default=".", show_default=True)
@click.option("--benchmark", "bench_json", type=click.Path(path_type=Path), required=True)
@click.option("--from-method", default="panda", show_default=True, help="Whose denoisers to reuse.")
@click.option("--name", required=True, help="Row name for this setting, e.g. panda-ddpm-g2.")
@click.option("-S", "--set", "sets", multiple=True, help="Synth override, e.g. -S sampler=ddpm.")
@click.option("-T", "--train-set", "train_sets", multiple=True, help="Train override: -T label_min_change=8.")
@click.option("--pool", default=None, help="Train on the pooled pairs of these seeds' experiments: 0,1,2.")
@click.option("--seeds", default=None, help="Comma-separated seeds (default: those of --from-method).")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=Path("data/checkpoints/resynth"),
    show_default=True,
    help="Denoisers, synthetic pairs and training checkpoints, kept for resuming.",
)
def main(
    repo: Path,
    bench_json: Path,
    from_method: str,
    name: str,
    sets: tuple[str, ...],
    train_sets: tuple[str, ...],
    pool: str | None,
    seeds: str | None,
    work_dir: Path,
) -> None:
    """Re-synthesize, retrain and rescore one benchmark method under other synth params."""
    bench = json.loads(bench_json.read_text())
    overrides = parse_sets(sets, SynthParams, "a synth")
    train_overrides = parse_sets(train_sets, TrainParams, "a train")
    ev = EvalParams(**parse_sets(tuple(bench.get("evaluate_overrides", [])), EvalParams, "an evaluate"))
    stem = bench_json.with_name(bench_json.stem + "-resynth")
    seed_list = (
        [int(s) for s in seeds.split(",")]
        if seeds
        else sorted(int(r["seed"]) for r in bench["runs"] if r["method"] == from_method)
    )
    if not seed_list:
        raise click.ClickException(f"--from-method {from_method}: no such method in {bench_json}")
    try:
        pooled = [int(s) for s in pool.split(",")] if pool else []
    except ValueError:
        raise click.ClickException(f"--pool {pool}: give comma-separated seeds, e.g. --pool 0,1,2") from None
    if pooled and sets:
        raise click.ClickException("--pool trains on the experiments' own pairs; drop the -S options")
    processed: dict[str, Path] = {}
    for seed in seed_list:
        settings, runs = _saved(stem)
        this: dict = {"from_method": from_method, "synth": list(sets)}
        if train_sets:  # rows from before train overrides existed have no "train" key
            this["train"] = list(train_sets)
        if pooled:
            this["pool"] = pooled
        if settings.get(name, this) != this:
            raise click.ClickException(f"--name {name} holds runs of another setting; choose a new name")
        if any((r.method, r.seed) == (name, seed) for r in runs):
            click.echo(f"{name} s{seed}: already in {stem.with_suffix('.json')}, kept")
            continue
        exp = f"bench-{bench['dataset']}-{from_method}-s{seed}"
        work = work_dir / f"{name}-s{seed}"
        work.mkdir(parents=True, exist_ok=True)
        if pooled:  # this seed's experiment first: its params and train seed
            names = [exp] + [f"bench-{bench['dataset']}-{from_method}-s{s}" for s in pooled if s != seed]
            experiments = [(n, open_experiment(repo, n)) for n in names]
            metrics = pool_run(experiments, ev, work, processed, train_overrides)
        else:
            metrics = resynth_run(
                open_experiment(repo, exp), exp, overrides, ev, work, processed, train_overrides
            )
        gap = f", contrast gap {metrics['contrast_gap']:.1f}" if "contrast_gap" in metrics else ""
        click.echo(
            f"{name} s{seed}: pixel AUROC {metrics['pixel_auroc']:.3f}, pixel AP {metrics['pixel_ap']:.3f}, "
            f"mIoU {metrics['miou']:.3f}{gap}; validation pixel AP {metrics['val_pixel_ap']:.3f}"
        )
        settings, runs = _saved(stem)  # read again: another call may have added rows meanwhile
        settings[name] = this
        write_resynth(bench, bench_json.name, stem, settings, [*runs, RunResult(name, seed, metrics)])


def write_resynth(
    bench: dict, bench_name: str, stem: Path, settings: dict[str, dict], runs: list[RunResult]
) -> None:
    """`stem`.md/.json: the benchmark's rows, then one row per re-synthesized setting."""
    setting = (
        f"The rows of `{bench_name}`, plus rows that reuse the denoisers (and synthetic-data params) of "
        "one of its methods with other synth params (`benchmarks/resynth.py`; the segmenter is retrained "
        "with each experiment's own train params plus any train overrides). New rows, from which method, "
        "with which overrides: "
        + "; ".join(f"`{n}` from `{v['from_method']}`: {_setting(v)}" for n, v in settings.items())
        + "."
    )
    every = [RunResult(**r) for r in bench["runs"]] + runs
    header = {**bench, "resynth": settings}
    evaluate = tuple(bench.get("evaluate_overrides", []))
    write_tables(header, stem, evaluate, aggregate(every), every, "re-synthesized", setting)


def _setting(v: dict) -> str:
    """One row's overrides as the table's description shows them."""
    text = f"`{' '.join(v['synth'] + v.get('train', [])) or 'none'}`"
    if "pool" in v:
        text += f", pairs of seeds {','.join(map(str, v['pool']))} pooled"
    return text


def _saved(stem: Path) -> tuple[dict[str, dict], list[RunResult]]:
    """The setting per new row name and its runs already written to `stem`.json (none at first)."""
    path = stem.with_suffix(".json")
    if not path.is_file():
        return {}, []
    saved = json.loads(path.read_text())
    settings = saved.get("resynth", {})
    return settings, [RunResult(**r) for r in saved["runs"] if r["method"] in settings]


if __name__ == "__main__":
    main()
