"""Aggregate benchmark runs (one per method and seed) into mean +- spread and same-seed paired tables
(markdown + JSON), and tell a reusable run from one made with other params."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields

import pandas as pd
import yaml

from panda.diffusion.sampler import SamplerConfig
from panda.evaluate import VALIDATION_KEYS
from panda.synth.params import PANDA_ONLY

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
PAIRED_WITH = ("real", "real+draem")  # the rows a user compares a synthesizer against, where present
PAIRED = ["pixel_ap", "miou", "val_pixel_ap", "val_miou"]
# Read by panda only: a run that synthesizes without panda gives the same results whatever they are.
PANDA_KEYS = tuple(f"synth.{name}" for name in (*(f.name for f in fields(SamplerConfig)), *PANDA_ONLY))
# Keys added after committed runs were made, each with the value that does what the code did before
# it existed: a run that did not record the key ran with this value, whatever today's default is.
ADDED_KEYS = {"preprocess.val_fraction": 0.0, "synth.inject_until": 0.0, "synth.match_chroma": False}


@dataclass
class RunResult:
    """One (method, seed) run: its metrics, the `-S` overrides it ran with and a digest of the
    pipeline code that made it (None where it was not recorded)."""

    method: str
    seed: int
    metrics: dict[str, float]
    sets: list[str] = field(default_factory=list)
    code: str | None = None


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


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


YAML11_BOOLS = {"yes": True, "on": True, "true": True, "no": False, "off": False, "false": False}


def _leaf(value: object) -> object:
    """A param value as YAML 1.1 reads it: DVC rewrites params.yaml as YAML 1.2, unquoting "no"."""
    return YAML11_BOOLS.get(value.lower(), value) if isinstance(value, str) else value


def with_sets(params: dict, sets: Sequence[str]) -> dict[str, object]:
    """`params` flattened to dotted keys with `-S key=value` overrides applied, values read as YAML."""
    out = _flatten(params)
    for item in sets:
        key, _, raw = item.partition("=")
        out[key] = yaml.safe_load(raw)
    return out


def params_drift(run_params: dict, current: dict, sets: Sequence[str]) -> list[str]:
    """The params an experiment ran with that differ from what it would run with now: `current`
    (params.yaml) with the `-S key=value` overrides `sets` applied, values read as YAML, as DVC does.

    Why: a benchmark reuses an experiment by name, so a changed default (say `synth.only_windows`)
    would otherwise keep showing runs made under the old one. A key the run did not record ran with
    its `ADDED_KEYS` value; any other key only one side has is not drift (options are added with
    defaults that keep the old behaviour), unless `sets` gives it a value other than today's
    default. Nor is a key only panda reads (`PANDA_KEYS`) in a run that does not synthesize with
    panda (a new sampler default leaves cutpaste's runs as they were)."""
    defaults = _flatten(current)
    want = with_sets(current, sets)
    ran = {k: v for k, v in ADDED_KEYS.items() if k in want} | _flatten(run_params)
    overridden = {item.partition("=")[0] for item in sets}
    added = {k for k in (want.keys() - ran.keys()) & overridden if k in defaults}
    keys = (ran.keys() & want.keys()) | added
    if "panda" not in (_leaf(want.get("synth.method")), _leaf(want.get("synth.mix_method"))):
        keys -= set(PANDA_KEYS)
    return sorted(k for k in keys if _leaf(want[k]) != _leaf(defaults[k] if k in added else ran[k]))


def paired_differences(runs: Sequence[RunResult], reference: str, keys: Sequence[str] = PAIRED) -> list[dict]:
    """Per method, its difference from `reference` run by run on the seeds both have.

    Why: one seed fixes the denoiser, the segmenter's initialisation and its batches for every row,
    so much of a row's seed-to-seed spread is shared; the same-seed difference is the method's own
    effect. Each row: `<key>` = mean difference, `<key>_std` = its sample std, `<key>_ahead` = how
    many seeds the method is ahead on, `n_seeds` = seeds compared."""
    by_seed = {r.seed: r.metrics for r in runs if r.method == reference}
    rows: dict[str, dict] = {}
    for run in runs:
        if run.method == reference or run.seed not in by_seed:
            continue
        row = rows.setdefault(run.method, {"method": run.method, "seeds": [], "diffs": {k: [] for k in keys}})
        row["seeds"].append(run.seed)
        for key in keys:
            if key in run.metrics and key in by_seed[run.seed]:
                row["diffs"][key].append(run.metrics[key] - by_seed[run.seed][key])
    out = []
    for row in rows.values():
        summary: dict = {"method": row["method"], "n_seeds": len(row["seeds"]), "seeds": sorted(row["seeds"])}
        for key, diffs in row.pop("diffs").items():
            if diffs:
                values = pd.Series(diffs)
                summary[key] = float(values.mean())
                summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                summary[f"{key}_ahead"] = int((values > 0).sum())
                summary[f"{key}_n"] = len(values)
        out.append(summary)
    return out


def _paired_cell(row: dict, key: str) -> str:
    if key not in row:
        return "-"
    spread = f" ± {row[key + '_std']:.3f}" if row[key + "_n"] > 1 else ""
    return f"{row[key]:+.3f}{spread} ({row[key + '_ahead']}/{row[key + '_n']})"


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


def _section(title: str, columns: Sequence[str], cells: dict[str, list[str]], note: str = "") -> list[str]:
    """A `## title` table, one line per method: its cells under `columns`."""
    lines = ["", f"## {title}", ""] + ([note, ""] if note else [])
    lines += ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    return lines + [f"| {method} | " + " | ".join(row) + " |" for method, row in cells.items()]


def to_markdown(
    rows: Sequence[dict], title: str, setting: str, paired: dict[str, list[dict]] | None = None
) -> str:
    """Headline (macro over defect types), pooled, cost, per-defect-type and validation tables, then
    `paired` ({reference: paired_differences(...)}): each row's same-seed difference from it."""
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
    types = defect_types(rows)
    for metric in ("pixel_auroc", "pixel_ap"):
        cells = {r["method"]: [_cell(r, f"{t}_{metric}") for t in types] for r in rows}
        lines += _section(f"{metric} per defect type", types, cells)
    scored = {r["method"]: [_cell(r, c) for c in VALIDATION] for r in rows if "val_pixel_ap" in r}
    if scored:
        title = "Validation: gen_train defects with the train normals (not the test split)"
        lines += _section(title, VALIDATION, scored)
    for reference, diffs in (paired or {}).items():
        if diffs:
            note = (
                f"Mean ± sample std of (row - `{reference}`) over the seeds both ran; "
                "(k/n): ahead on k of n seeds."
            )
            cells = {r["method"]: [_paired_cell(r, k) for k in PAIRED] for r in diffs}
            lines += _section(f"Paired with `{reference}`: the same seed's difference", PAIRED, cells, note)
    return "\n".join(lines) + "\n"
