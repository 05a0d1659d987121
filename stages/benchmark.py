"""`panda benchmark`: the same pipeline for several synthesis methods x seeds, as DVC experiments.

Each (method, seed) runs as `dvc exp run --temp -n <name> -S ...`, so unchanged stages (download,
preprocess, finetune) come from DVC's run cache, every run appears in `dvc exp show` and logs to the
main MLflow store. Existing experiments of the same name are reused, so an interrupted benchmark
continues where it stopped. Experiments live in the repo that ran them (`dvc exp push` shares them);
where one is not here, its run in the committed report JSON is reused when its params still match,
so a fresh clone can add rows or seeds to a benchmark without running the others again. The table
goes to reports/benchmark/<dataset>.md and .json, each method's synthetic pairs beside real defects
(first seed) to reports/benchmark/<dataset>-pairs.png.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import click
import numpy as np
import yaml
from PIL import Image

from panda.benchmark import (
    PAIRED_WITH,
    RunResult,
    aggregate,
    paired_differences,
    params_drift,
    to_markdown,
    with_sets,
)
from panda.errors import PandaError
from panda.figures import stack
from panda.io import write_json
from stages.common import REPORTS_DIR, params_option, read_sections, user_errors

SAMPLES = "reports/figures/synthetic_samples.png"  # drawn by the synthesize stage


def parse_sets(items: tuple[str, ...], cls: type, noun: str) -> dict[str, Any]:
    """`-S key=value` overrides of dataclass `cls` as a dict (YAML-typed values); a bad key names it."""
    names = {f.name for f in fields(cls)}
    values = {}
    for item in items:
        key, _, raw = item.partition("=")
        if key not in names:
            raise click.BadParameter(f"-S {item}: '{key}' is not {noun} parameter ({sorted(names)})")
        values[key] = yaml.safe_load(raw)
    return values


def _parse_method(spec: str) -> tuple[str, list[str]]:
    """'cutpaste' or 'panda-no-pma:synth.method=panda;synth.pma_steps=0' -> (name, ['k=v', ...])."""
    name, _, rest = spec.partition(":")
    sets = [s for s in rest.split(";") if s] if rest else [f"synth.method={name}"]
    for s in sets:
        if "=" not in s:
            raise PandaError(f"--method {spec}: '{s}' is not KEY=VALUE")
    return name, sets


def exp_ref(name: str, repo: Path | str = ".") -> str | None:
    """The newest experiment called `name`: a rerun on a later commit files it under a new baseline."""
    out = subprocess.run(
        ["git", "-C", str(repo), "for-each-ref", "--sort=committerdate", "--format=%(refname)", "refs/exps"],
        capture_output=True,
        text=True,
    )
    refs = [r for r in out.stdout.split() if r.rsplit("/", 1)[-1] == name]
    return refs[-1] if refs else None


def _git_show(ref: str, path: str) -> bytes | None:
    """A file as committed in experiment `ref`; None when it is not there."""
    out = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True)
    return out.stdout if out.returncode == 0 else None


def _read_json(ref: str, path: str) -> dict:
    return json.loads(data) if (data := _git_show(ref, path)) is not None else {}


def _read_png(ref: str, path: str) -> np.ndarray | None:
    data = _git_show(ref, path)
    return None if data is None else np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def pipeline_code(dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The git-tracked deps of dvc.yaml's stages: the code whose change can change a run's results."""
    if not dvc_yaml.is_file():
        return []
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})
    deps = sorted({d for stage in stages.values() for d in stage.get("deps", []) if isinstance(d, str)})
    return subprocess.run(["git", "ls-files", "--", *deps], capture_output=True, text=True).stdout.split()


def code_drift(ref: str, code: list[str] | None = None) -> list[str]:
    """Pipeline code (`code`, default `pipeline_code()`) that differs between experiment `ref` and
    the workspace: its results may no longer be what the code gives (or may be, when a change kept
    the outputs; --rerun decides)."""
    code = pipeline_code() if code is None else code
    if not code:
        return []
    out = subprocess.run(["git", "diff", "--name-only", ref, "--", *code], capture_output=True, text=True)
    return out.stdout.split()


def code_digest(ref: str | None, code: list[str]) -> str | None:
    """A short digest of the pipeline code `code` as committed in `ref` (the workspace when None):
    the report keeps it beside each run, where no git ref survives to diff against."""
    if not code:
        return None
    if ref is None:
        out = subprocess.run(["git", "hash-object", "--", *code], capture_output=True, text=True)
        blobs = out.stdout.split()
    else:
        out = subprocess.run(["git", "ls-tree", "-r", ref, "--", *code], capture_output=True, text=True)
        found = {line.split("\t", 1)[1]: line.split()[2] for line in out.stdout.splitlines()}
        blobs = [found.get(path, "-") for path in code]
    if out.returncode != 0:
        return None
    listing = "".join(f"{path} {blob}\n" for path, blob in zip(code, blobs, strict=True))
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


@dataclass
class ReportedRun:
    """A run in a committed benchmark JSON, with the params it ran with (flat, dotted keys)."""

    source: Path
    params: dict
    run: RunResult


def _ran_with(report: dict, entry: dict) -> dict | None:
    """The params (flat) a run in `report` ran with: its own where it was kept as retired, else
    the report's with its `-S` overrides; None where either was not recorded."""
    if "params" in entry:
        return entry["params"]
    params = report.get("params")
    return (
        with_sets(params, entry["sets"])
        if isinstance(params, dict) and isinstance(entry.get("sets"), list)
        else None
    )


def _load_report(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PandaError(f"{path}: not valid JSON ({err}); restore it with `git checkout -- {path}`") from err


def read_report(path: Path) -> list[ReportedRun]:
    """The runs of a benchmark report JSON, shown and retired; only runs whose params are known
    (recorded `-S` overrides in a report that recorded its params) can be checked against today's
    params, so only those count."""
    report = _load_report(path)
    entries = [*report.get("runs", []), *report.get("retired_runs", [])]
    return [
        ReportedRun(
            path, ran, RunResult(r["method"], int(r["seed"]), r["metrics"], r.get("sets", []), r.get("code"))
        )
        for r in entries
        if isinstance(ran := _ran_with(report, r), dict)
    ]


def retired_runs(path: Path, shown: list[RunResult]) -> list[dict]:
    """The runs in report `path` that its rewritten table no longer shows (a row renamed or dropped,
    a default changed under it), each with the params it ran with: rewriting a report loses no run,
    and a row that asks for one again reuses it. A run is the same run by seed and metrics."""
    report = _load_report(path)
    entries = [*report.get("runs", []), *report.get("retired_runs", [])]
    seen = {json.dumps([r.seed, r.metrics], sort_keys=True) for r in shown}
    kept = []
    for entry in entries:
        key = json.dumps([int(entry["seed"]), entry["metrics"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(entry | {"params": _ran_with(report, entry)})
    return kept


def find_reported(
    reported: list[ReportedRun], name: str, seed: int, current: dict, run_sets: list[str]
) -> tuple[ReportedRun | None, list[str]]:
    """The reported run that gives what `current` params plus `run_sets` give now: this row's own
    run first, else any row's of any report read (a run is the same run under another row name).
    Also the keys in which this row's own reported run, if any, differs (why it is not reused)."""
    same_seed = sorted((r for r in reported if r.run.seed == seed), key=lambda r: r.run.method != name)
    own = [r for r in same_seed if r.run.method == name]
    stale = params_drift(own[0].params, current, run_sets) if own else []
    found = next((r for r in same_seed if not params_drift(r.params, current, run_sets)), None)
    return found, stale


@dataclass
class BenchmarkFile:
    """A committed benchmark (benchmarks/<name>.yaml)."""

    name: str
    seeds: list[int]
    overrides: tuple[str, ...]
    methods: tuple[str, ...]  # NAME or NAME:KEY=VAL;KEY=VAL, as --method takes them
    paired_with: tuple[str, ...]
    reuse_from: tuple[str, ...]  # other benchmarks whose reported runs this one may reuse


def read_benchmark_config(path: Path) -> BenchmarkFile:
    """A benchmark file, or an error that names what is wrong in it. `paired_with` (default: `real`
    and `real+draem`) and `reuse_from` (default: none) are optional."""
    if not path.is_file():
        raise PandaError(f"--config {path}: no such file (see benchmarks/*.yaml)")
    spec = yaml.safe_load(path.read_text()) or {}
    missing = [k for k in ("name", "seeds", "overrides", "methods") if k not in spec]
    if missing:
        keys = "name, seeds, overrides, methods"
        raise PandaError(f"{path}: missing key '{missing[0]}' (a benchmark file has {keys})")
    methods = tuple(f"{name}:{';'.join(sets)}" if sets else name for name, sets in spec["methods"].items())
    paired_with = tuple(str(m) for m in spec.get("paired_with", ()))
    unknown = [m for m in paired_with if m not in spec["methods"]]
    if unknown:
        raise PandaError(f"{path}: paired_with names '{unknown[0]}', which is not one of its methods")
    paired_with = paired_with or tuple(m for m in PAIRED_WITH if m in spec["methods"])
    reuse_from = tuple(str(b) for b in spec.get("reuse_from", ()))
    for other in reuse_from:
        if not (REPORTS_DIR / "benchmark" / f"{other}.json").is_file():
            raise PandaError(
                f"{path}: reuse_from names '{other}', but reports/benchmark/{other}.json does not exist"
            )
    return BenchmarkFile(
        str(spec["name"]),
        [int(s) for s in spec["seeds"]],
        tuple(spec["overrides"]),
        methods,
        paired_with,
        reuse_from,
    )


@click.command("benchmark")
@params_option
@click.option(
    "--method",
    "methods",
    multiple=True,
    default=("cutpaste", "draem", "real"),
    show_default=True,
    help="NAME, or NAME:KEY=VAL;KEY=VAL for a variant, e.g. 'r96:synth.method=real;synth.n_per_defect=96'.",
)
@click.option(
    "--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds (synth, train, finetune)."
)
@click.option(
    "-S", "--set", "sets", multiple=True, help="Extra param override for every run, as in dvc exp run -S."
)
@click.option("--rerun", is_flag=True, help="Run again even when an experiment of the same name exists.")
@click.option(
    "--finished-only",
    is_flag=True,
    help="Run nothing: write the tables from the experiments that have finished (each row lists its seeds).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A committed benchmark file (benchmarks/<name>.yaml: name, seeds, overrides, methods); "
    "replaces --method, --seeds and -S.",
)
@user_errors
def benchmark(
    params_path: Path,
    methods: tuple[str, ...],
    seeds: str,
    sets: tuple[str, ...],
    rerun: bool,
    finished_only: bool,
    config_path: Path | None,
) -> None:
    """Run methods x seeds as DVC experiments and write reports/benchmark/<name>.md/.json."""
    _, data, _ = read_sections(params_path)
    dataset = next((s.split("=", 1)[1] for s in sets if s.startswith("data.dataset=")), data.dataset)
    seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    paired_with, reuse_from = PAIRED_WITH, ()
    if config_path is not None:
        spec = read_benchmark_config(config_path)
        dataset, seed_list, sets, methods = spec.name, spec.seeds, spec.overrides, spec.methods
        paired_with, reuse_from = spec.paired_with, spec.reuse_from
    current = yaml.safe_load(Path(params_path).read_text()) or {}
    out = REPORTS_DIR / "benchmark"
    code = pipeline_code()  # listed once: each reused run is diffed against it
    here = code_digest(None, code)
    reported = [r for b in (dataset, *reuse_from) for r in read_report(out / f"{b}.json")]
    runs: list[RunResult] = []
    pairs: list[tuple[str, np.ndarray]] = []  # each method's synthesis grid, first seed
    missing_grids = 0
    for spec in methods:
        name, method_sets = _parse_method(spec)
        for seed in seed_list:
            exp = f"bench-{dataset}-{name}-s{seed}"
            seed_sets = [f"synth.seed={seed}", f"train.seed={seed}", f"finetune.seed={seed}"]
            run_sets = [*sets, *method_sets, *seed_sets]
            existing = exp_ref(exp)
            drift = []
            if existing is not None:
                ran = yaml.safe_load(_git_show(existing, "params.yaml") or b"") or {}
                drift = params_drift(ran, current, run_sets)
            elif not rerun:
                found, stale = find_reported(reported, name, seed, current, run_sets)
                if stale:
                    click.echo(f"{exp}: its run in {out / dataset}.json had other params: {', '.join(stale)}")
                if found is not None:
                    old = found.run
                    note = (
                        " (its pipeline code was not recorded)"
                        if old.code is None
                        else ""
                        if old.code == here
                        else " (made on other pipeline code; --rerun redoes)"
                    )
                    source = f"{found.source}" + ("" if old.method == name else f" (as {old.method})")
                    click.echo(f"{exp}: no experiment here; its run in {source} reused{note}")
                    runs.append(RunResult(name, seed, old.metrics, run_sets, old.code))
                    missing_grids += seed == seed_list[0]
                    continue
            if finished_only:
                if existing is None:
                    click.echo(f"{exp} has not run; left out")
                    continue
                if drift:
                    click.echo(f"{exp} ran with other params ({', '.join(drift)}); left out")
                    continue
            elif rerun or existing is None or drift:
                if drift:
                    click.echo(f"{exp} ran with other params ({', '.join(drift)}); running it again")
                if existing is not None:
                    # not `dvc exp run -f`: that also forces every stage to rerun, bypassing the run
                    # cache (each panda ablation would fine-tune its denoiser again)
                    subprocess.run(["dvc", "exp", "remove", exp], capture_output=True)
                cmd = ["dvc", "exp", "run", "--temp", "-n", exp]
                for s in run_sets:
                    cmd += ["-S", s]
                click.echo(f"running {exp}: {' '.join(cmd)}")
                if subprocess.run(cmd).returncode != 0:
                    raise PandaError(
                        f"experiment {exp} failed; see the output above, fix, and run the benchmark again"
                    )
            if existing is not None and not drift and (finished_only or not rerun):
                if changed := code_drift(existing, code):
                    click.echo(
                        f"{exp}: reused; made on other pipeline code ({len(changed)} files); --rerun redoes"
                    )
            ref = exp_ref(exp)
            if ref is None:
                raise PandaError(f"experiment {exp} finished but its git ref was not found under refs/exps")
            if seed == seed_list[0] and (figure := _read_png(ref, SAMPLES)) is not None:
                pairs.append((f"{name} (seed {seed}): real gen_train defects | synthetic pairs", figure))
            metrics = _read_json(ref, "reports/metrics.json")
            metrics |= {
                k: v for k, v in _read_json(ref, "reports/synth_metrics.json").items() if k != "method"
            }
            metrics |= _read_json(ref, "reports/train_metrics.json")
            numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            runs.append(RunResult(name, seed, numbers, run_sets, code_digest(ref, code)))
    if not runs:
        raise PandaError("no experiment of this benchmark has finished yet; run it without --finished-only")
    rows = aggregate(runs)
    present = {r.method for r in runs}
    paired = {ref: paired_differences(runs, ref) for ref in paired_with if ref in present}
    setting = (
        "Setting: `" + " ".join(f"-S {s}" for s in sets) + f"`, seeds {seed_list}."
        if sets
        else f"Seeds {seed_list}."
    )
    write_json(
        {
            "dataset": dataset,
            "overrides": list(sets),
            "seeds": seed_list,
            "params": current,  # each run's params: these with its `sets`
            "rows": rows,
            "paired": paired,
            "runs": [r.__dict__ for r in runs],
            "retired_runs": retired_runs(out / f"{dataset}.json", runs),
        },
        out / f"{dataset}.json",
    )
    grid = out / f"{dataset}-pairs.png"
    if missing_grids and grid.is_file():
        click.echo(f"{grid} left as it was: {missing_grids} first-seed grids are not here")
    elif pairs:
        stack(pairs, grid)
    md = to_markdown(rows, f"Benchmark: {dataset}", setting, paired)
    (out / f"{dataset}.md").write_text(md)
    click.echo(md)
