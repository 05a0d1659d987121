"""Score the segmenters of a finished benchmark again under other evaluate params, without retraining.

When only the evaluation changes (e.g. `evaluate.tta`), the trained segmenters of every
(method, seed) experiment are still in the DVC cache of the repo that ran the benchmark. This reads
each experiment's model and test data from there and writes a second table beside the first:
    python benchmarks/rescore.py --repo . --benchmark reports/benchmark/mtd.json -S tta=true
The synthesis and training columns are copied from the original runs.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
import yaml
from dvc.api import DVCFileSystem

from panda.benchmark import RunResult, aggregate, to_markdown
from panda.data.preprocess import load_manifest
from panda.evaluate import EvalParams, evaluate
from panda.io import write_json
from panda.segment.train import load_model
from stages.benchmark import exp_ref, parse_sets

EVAL_KEYS = {"pixel_auroc", "pixel_ap", "f1_max", "aupro", "image_auroc", "iou", "miou", "pixel_acc"}


def eval_params(overrides: tuple[str, ...]) -> EvalParams:
    return EvalParams(**parse_sets(overrides, EvalParams, "an evaluate"))


def is_eval_metric(key: str) -> bool:
    """Keys evaluate writes (macro, pooled_, <type>_): replaced; synthesis/training keys are kept."""
    return key.startswith("n_test") or any(key == k or key.endswith("_" + k) for k in EVAL_KEYS)


def open_experiment(repo: Path, name: str) -> DVCFileSystem:
    """The files of experiment `name` of the benchmark clone `repo`, as DVC tracked them."""
    ref = exp_ref(name, repo)
    if ref is None:
        raise click.ClickException(f"experiment {name} not found under refs/exps of {repo}")
    return DVCFileSystem(str(repo), rev=ref)


def fetch(
    fs: DVCFileSystem, name: str, items: dict[str, Path], tmp: Path, processed: dict[str, Path]
) -> Path:
    """Copy the experiment's outputs `items` (DVC path -> local path); return its preprocessed data
    (one copy under `tmp` per content hash, remembered in `processed`)."""
    try:
        lock = yaml.safe_load(fs.read_text("dvc.lock"))
        out_hash = next(
            o["md5"] for o in lock["stages"]["preprocess"]["outs"] if o["path"] == "data/processed"
        )
        if out_hash not in processed:
            processed[out_hash] = tmp / out_hash
            fs.get("data/processed", str(processed[out_hash]), recursive=True)
        for source, target in items.items():
            fs.get(source, str(target), recursive=fs.isdir(source))
    except FileNotFoundError as exc:
        raise click.ClickException(
            f"{name}: its outputs are not in the DVC cache ({exc.filename}); "
            "run this in the clone that ran the benchmark, or `dvc exp pull` them first"
        ) from None
    return processed[out_hash]


def open_run(repo: Path, name: str, tmp: Path, processed: dict[str, Path]) -> tuple[Path, Path, str]:
    """Experiment `name` of the benchmark clone `repo`: its segmenter, preprocessed data and category."""
    fs = open_experiment(repo, name)
    model_path = tmp / f"{name}.pt"
    root = fetch(fs, name, {"data/models/segmenter/model.pt": model_path}, tmp, processed)
    return model_path, root, yaml.safe_load(fs.read_text("params.yaml"))["data"]["category"]


def rescoring_command(default_suffix: str) -> Callable[[Callable[..., None]], click.Command]:
    """The options every script that rescores a finished benchmark takes (here and ensemble.py)."""

    def decorate(fn: Callable[..., None]) -> click.Command:
        for option in reversed(
            [
                click.option("--repo", type=click.Path(path_type=Path), default=".", show_default=True),
                click.option("--benchmark", "bench_json", type=click.Path(path_type=Path), required=True),
                click.option(
                    "-S", "--set", "sets", multiple=True, help="Evaluate override, e.g. -S tta=true."
                ),
                click.option(
                    "--suffix", default=default_suffix, show_default=True, help="Added to the file stem."
                ),
            ]
        ):
            fn = option(fn)
        return click.command()(fn)

    return decorate


@rescoring_command("-rescored")
def main(repo: Path, bench_json: Path, sets: tuple[str, ...], suffix: str) -> None:
    """Score every segmenter of a finished benchmark again under other evaluate params."""
    bench = json.loads(bench_json.read_text())
    dataset = bench["dataset"]
    ev = eval_params(sets)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        processed: dict[str, Path] = {}  # data/processed content hash -> local copy
        for old in bench["runs"]:
            name = f"bench-{dataset}-{old['method']}-s{old['seed']}"
            model_path, root, category = open_run(repo, name, Path(tmp), processed)
            metrics = evaluate(load_model(model_path), load_manifest(root), root, category, ev).metrics
            kept = {k: v for k, v in old["metrics"].items() if not is_eval_metric(k)}
            runs.append(RunResult(old["method"], int(old["seed"]), {**kept, **metrics}))
            click.echo(
                f"{name}: pixel AUROC {metrics['pixel_auroc']:.3f}, image AUROC {metrics['image_auroc']:.3f}"
            )
    setting = (
        f"The segmenters of `{bench_json.name}` (setting: `{' '.join(bench['overrides'])}`), not retrained, "
        f"scored again with evaluate overrides `{' '.join(sets) or 'none'}`."
    )
    stem = bench_json.with_name(bench_json.stem + suffix)
    write_tables(bench, stem, sets, aggregate(runs), runs, "rescored", setting)


def write_tables(
    bench: dict,
    stem: Path,
    sets: tuple[str, ...],
    rows: list[dict],
    runs: list[RunResult],
    kind: str,
    setting: str,
) -> None:
    """`stem`.json (the benchmark's header, new rows and runs) and `stem`.md beside the benchmark."""
    write_json(
        {**bench, "evaluate_overrides": list(sets), "rows": rows, "runs": [r.__dict__ for r in runs]},
        stem.with_suffix(".json"),
    )
    md = to_markdown(rows, f"Benchmark: {bench['dataset']}, {kind}", setting)
    stem.with_suffix(".md").write_text(md)
    click.echo(md)


if __name__ == "__main__":
    main()
