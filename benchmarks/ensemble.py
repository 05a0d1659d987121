"""Score each benchmark method by the mean map of its seed models (a deep ensemble), without retraining.

Seeds of one method differ by up to 0.15 in macro pixel AUROC on Magnetic Tile, so a ranking of seed
means carries that noise. This reads every (method, seed) segmenter of a finished benchmark from the
DVC cache of the clone that ran it (as rescore.py does), averages each method's defect probabilities
over its seeds and scores that one map:
    python benchmarks/ensemble.py --repo . --benchmark reports/benchmark/mtd.json
Writes <benchmark>-ensemble.md and .json beside the benchmark: one row per method, no spread (the
seeds are inside each row).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import click
from rescore import eval_params, open_run, rescoring_command, write_tables

from panda.benchmark import RunResult, aggregate
from panda.data.preprocess import load_manifest
from panda.evaluate import evaluate
from panda.segment.ensemble import SegEnsemble
from panda.segment.train import load_model


@rescoring_command("-ensemble")
def main(repo: Path, bench_json: Path, sets: tuple[str, ...], suffix: str) -> None:
    """Score each method of a finished benchmark by the mean map of its seed models."""
    bench = json.loads(bench_json.read_text())
    dataset = bench["dataset"]
    ev = eval_params(sets)
    seeds: dict[str, list[int]] = defaultdict(list)
    for run in bench["runs"]:
        seeds[run["method"]].append(int(run["seed"]))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        processed: dict[str, Path] = {}  # data/processed content hash -> local copy
        for method, method_seeds in seeds.items():
            opened = [
                open_run(repo, f"bench-{dataset}-{method}-s{s}", Path(tmp), processed) for s in method_seeds
            ]
            if len({(str(root), category) for _, root, category in opened}) != 1:
                raise click.ClickException(f"{method}: its seeds were scored on different test data")
            _, root, category = opened[0]
            model = SegEnsemble([load_model(path) for path, _, _ in opened])
            metrics = evaluate(model, load_manifest(root), root, category, ev).metrics
            runs.append(RunResult(method, 0, metrics))
            click.echo(
                f"{method} ({len(method_seeds)} seeds): pixel AUROC {metrics['pixel_auroc']:.3f}, "
                f"image AUROC {metrics['image_auroc']:.3f}, pixel AP {metrics['pixel_ap']:.3f}"
            )
    rows = aggregate(runs)
    for row in rows:
        row["seeds"] = sorted(seeds[row["method"]])
        row["n_seeds"] = len(row["seeds"])  # models inside the one ensemble
    setting = (
        f"The segmenters of `{bench_json.name}` (setting: `{' '.join(bench['overrides'])}`), not retrained: "
        f"each row scores the mean probability map of the method's seed models "
        f"({', '.join(f'{m} {len(s)}' for m, s in seeds.items())}), with evaluate overrides "
        f"`{' '.join(sets) or 'none'}`. One ensemble per row, so no spread (± 0)."
    )
    write_tables(
        bench, bench_json.with_name(bench_json.stem + suffix), sets, rows, runs, "seed ensembles", setting
    )


if __name__ == "__main__":
    main()
