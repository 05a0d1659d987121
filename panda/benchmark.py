"""Aggregate benchmark runs (one per method and seed) into mean +- spread tables (markdown + JSON)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from panda.evaluate import VALIDATION_KEYS

HEADLINE = [
    "pixel_auroc",
    "pixel_ap",
    "f1_max",
    "aupro",
    "image_auroc",
    "iou",
    "miou",
    "pixel_acc",
    "threshold",
]
POOLED = ["pooled_pixel_auroc", "pooled_pixel_ap", "pooled_image_auroc"]
COST = ["seconds_per_image", "train_seconds"]
PER_TYPE = ["pixel_auroc", "pixel_ap", "image_auroc", "miou"]
VALIDATION = [f"val_{k}" for k in VALIDATION_KEYS]


@dataclass
class RunResult:
    method: str
    seed: int
    metrics: dict[str, float]


def aggregate(runs: Sequence[RunResult]) -> list[dict]:
    """One row per method: `<metric>` = mean over seeds, `<metric>_std` = sample std, `n_seeds`."""
    frame = pd.DataFrame([{"method": r.method, "seed": r.seed, **r.metrics} for r in runs])
    rows = []
    for method, sub in frame.groupby("method", sort=False):
        row: dict = {"method": method, "n_seeds": len(sub), "seeds": sorted(int(s) for s in sub["seed"])}
        for col in sub.columns.drop(["method", "seed"]):
            values = pd.to_numeric(sub[col], errors="coerce").dropna()
            if values.empty:
                continue
            row[col] = float(values.mean())
            row[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def _joined(values: Sequence) -> str:
    return ", ".join(map(str, values))


def _cell(row: dict, key: str, digits: int = 3) -> str:
    if key not in row or (isinstance(row[key], float) and math.isnan(row[key])):
        return "-"
    if row.get("n_seeds") == 1:  # no spread to show
        return f"{row[key]:.{digits}f}"
    return f"{row[key]:.{digits}f} ± {row.get(key + '_std', 0.0):.{digits}f}"


def defect_types(rows: Sequence[dict]) -> list[str]:
    return sorted(
        {k[: -len("_pixel_auroc")] for r in rows for k in r if k.endswith("_pixel_auroc")} - {"pooled", "val"}
    )


def to_markdown(rows: Sequence[dict], title: str, setting: str) -> str:
    """Headline (macro over defect types), pooled, cost, and per-defect-type tables."""
    lines = [
        f"# {title}",
        "",
        setting,
        "",
        "Mean ± sample standard deviation over seeds. Headline metrics are "
        "macro averages over defect types (each scored against all test normals).",
        "",
    ]
    cols = HEADLINE + POOLED
    n_seeds = max(r["n_seeds"] for r in rows)  # a row with fewer (--finished-only) names its seeds
    lines += [
        "| method | seeds | " + " | ".join(cols) + " | synth s/img | train s |",
        "|---" * (len(cols) + 4) + "|",
    ]
    for r in rows:
        cells = [_cell(r, c) for c in cols] + [_cell(r, "seconds_per_image", 4), _cell(r, "train_seconds", 0)]
        seeds = r["n_seeds"] if r["n_seeds"] == n_seeds else f"{r['n_seeds']} (seed {_joined(r['seeds'])})"
        lines.append(f"| {r['method']} | {seeds} | " + " | ".join(cells) + " |")
    for metric in ("pixel_auroc", "pixel_ap"):
        types = defect_types(rows)
        lines += [
            "",
            f"## {metric} per defect type",
            "",
            "| method | " + " | ".join(types) + " |",
            "|---" * (len(types) + 1) + "|",
        ]
        for r in rows:
            lines.append(f"| {r['method']} | " + " | ".join(_cell(r, f"{t}_{metric}") for t in types) + " |")
    scored = [r for r in rows if "val_pixel_ap" in r]
    if scored:
        lines += [
            "",
            "## Validation: gen_train defects with the train normals (not the test split)",
            "",
            "| method | " + " | ".join(VALIDATION) + " |",
            "|---" * (len(VALIDATION) + 1) + "|",
        ]
        for r in scored:
            lines.append(f"| {r['method']} | " + " | ".join(_cell(r, c) for c in VALIDATION) + " |")
    return "\n".join(lines) + "\n"
