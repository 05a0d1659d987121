"""Would more physical defects make the instrument valid? A 2-fold split over the test tiles.

`instrument_validity.py` trains on gen_train, which on Magnetic Tile holds only 3-8 physical defects
(tile groups) per type. This script measures how far the same segmenter moves when it sees about
twice as many: each defect type's test groups are dealt alternately (in dataset order) into two
halves. Row `gen_train` trains once on gen_train and is scored on each half; row `gen_train+half`
trains on gen_train plus one half and is scored on the other, for both halves. Both rows are thus
scored on exactly the same images (every test image once), and metrics are the mean of the two
halves. Test normals are scored in both halves and never trained on. The result is a diagnostic for
the protocol decision, not a benchmark setting: issue 2 fixes gen_train at the first third.

    python benchmarks/defect_shots.py --processed-dir data/processed --category magnetic_tile \
        -S crop_size=0 -S steps=800 -S normal_fraction=0.5 -S photometric=1 -S ema_decay=0.995 --seeds 0
Writes reports/benchmark/defect-shots.md and .json.
"""

from __future__ import annotations

import platform
from pathlib import Path

import click
import pandas as pd
import torch
from instrument_validity import (
    distinct_defects,
    earlier_runs,
    load_setting,
    pretext_cache,
    setting_options,
    train_params,
    write_report,
)

from panda.benchmark import RunResult, aggregate
from panda.data.layouts import NORMAL
from panda.evaluate import EvalParams, evaluate
from panda.segment.data import load_pairs
from panda.segment.train import train_segmenter

HIDDEN = "not_scored"


def held_out_defects(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["split"] == "test") & (rows["defect_type"] != NORMAL)]


def deal_halves(rows: pd.DataFrame) -> dict[str, int]:
    """Group -> 0 or 1: each defect type's test groups dealt alternately, in dataset order."""
    test = held_out_defects(rows)
    half: dict[str, int] = {}
    for _, sub in test.groupby("defect_type", sort=True):
        order = sub.reset_index().groupby("group")["index"].min().sort_values(kind="stable")
        half |= {str(g): i % 2 for i, g in enumerate(order.index)}
    return half


def scored_on(manifest: pd.DataFrame, half: dict[str, int], which: int) -> pd.DataFrame:
    """The manifest with the other half's test defects taken out of scoring."""
    out = manifest.copy()
    other = out["group"].astype(str).map(half).eq(1 - which) & out.index.isin(held_out_defects(out).index)
    out.loc[other, "split"] = HIDDEN
    return out


def mean_metrics(runs: list[dict]) -> dict:
    keys = set.intersection(*(set(r) for r in runs))
    return {k: sum(float(r[k]) for r in runs) / len(runs) for k in sorted(keys)}


@click.command()
@setting_options
@click.option("--out", "out_stem", default="reports/benchmark/defect-shots", show_default=True)
def main(
    params_path: str,
    processed_dir: str,
    category: str | None,
    sets: tuple[str, ...],
    seeds: str,
    out_stem: str,
) -> None:
    params, category, root, manifest, rows, normal = load_setting(params_path, processed_dir, category)
    half = deal_halves(rows)
    gen = rows[rows["split"] == "gen_train"]
    test = held_out_defects(rows)
    extra = [test[test["group"].astype(str).map(half) == h] for h in (0, 1)]
    shots = {"gen_train": distinct_defects(rows)}
    for h in (0, 1):
        shots[f"gen_train+half{h}"] = {
            str(k): shots["gen_train"].get(str(k), 0) + int(v)
            for k, v in extra[h].groupby("defect_type")["group"].nunique().items()
        }
    click.echo(f"physical defects per type used for training: {shots}")
    out = Path(out_stem)
    runs = earlier_runs(out.with_suffix(".json"), category, sets)
    done = {(r.method, r.seed) for r in runs}
    for seed in [int(s) for s in seeds.split(",") if s.strip()]:
        tp = train_params(params.get("train", {}), sets, seed)
        # (row name, training rows, the half each trained model is scored on)
        plans = [
            ("gen_train", [gen], [(0, 1)]),
            ("gen_train+half", [pd.concat([gen, extra[1]]), pd.concat([gen, extra[0]])], [(0,), (1,)]),
        ]
        for name, train_sets, scored in plans:
            if (name, seed) in done:
                click.echo(f"{name} seed {seed}: kept from {out.with_suffix('.json')}")
                continue
            per_tta: dict[bool, list[dict]] = {False: [], True: []}
            seconds = 0.0
            for train_rows, halves in zip(train_sets, scored, strict=True):
                real = load_pairs(root, train_rows.sort_values("image_path"))
                result = train_segmenter(normal, real, tp, pretext_cache=pretext_cache())
                model, seconds = result.model, seconds + result.seconds
                for h in halves:
                    for tta in (False, True):
                        m = evaluate(model, scored_on(manifest, half, h), root, category, EvalParams(tta=tta))
                        per_tta[tta].append(m.metrics)
            for tta, metrics in per_tta.items():
                row = f"{name}-tta" if tta else name
                mean = mean_metrics(metrics) | {"train_seconds": round(seconds, 1)}
                runs.append(RunResult(row, seed, mean))
                click.echo(
                    f"seed {seed} {row}: macro pixel AUROC {mean['pixel_auroc']:.3f}, "
                    f"image AUROC {mean['image_auroc']:.3f}"
                )
            done.add((name, seed))
            partial = {"category": category, "overrides": list(sets)}
            write_report(
                out, partial, aggregate(runs), runs, "More physical defects (partial)", "Not finished."
            )
    setting = (
        f"Segmenter as in the validity check (train overrides `{' '.join(sets) or 'none'}`), "
        f"{torch.get_num_threads()} torch threads on {platform.processor() or platform.machine()}. "
        f"Each type's test tile groups dealt alternately into two halves; `gen_train` trains on gen_train "
        f"only, `gen_train+half` on gen_train plus one half (scored on the other); both rows are scored on "
        f"every test image once (mean of the two halves; all test normals in each half). "
        f"Physical defects per type used for training: {shots}."
    )
    header = {"category": category, "overrides": list(sets), "shots": shots}
    write_report(out, header, aggregate(runs), runs, "More physical defects: 2-fold over test tiles", setting)


if __name__ == "__main__":
    main()
