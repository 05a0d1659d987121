"""Wall time and memory of `synthesize` and `train` with 1 process against 2 (`compute.processes`).

For each setting (the tiny test configuration on the demo data, and a short Magnetic Tile run) this
prepares a scratch project, fine-tunes once, then times each stage as a user runs it (`panda <stage>`,
launcher start-up included): 1 process x 2 threads against 2 processes x 1 thread, so both use the
same 2 cores. The segmenter's checkpoints are removed before each timed `train`, so both train the
whole job. Peak resident memory is read per process (psutil, every 0.1 s). It also checks that both
runs wrote byte-identical synthetic pairs.

    python benchmarks/scaling.py                  # tiny and mtd; writes reports/benchmark/scaling.md/.json
    python benchmarks/scaling.py --setting tiny
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import MTD_SHARED, TINY  # noqa: E402

MTD = {
    "data": {"dataset": "mtd", "category": "magnetic_tile"},
    "preprocess": {"image_size": 128},
    "finetune": {"steps": 40, "phase_b_steps": 40, "checkpoint_every": 40},
    "synth": {"n_per_defect": 32, "placement": "prior", "batch_size": 16},
    "train": {"steps": 60, "crop_size": 64, "base_channels": 16, "batch_size": 16, "checkpoint_every": 60},
}


def settings(mtd_source: Path) -> dict[str, dict]:
    tiny = yaml.safe_load(yaml.safe_dump(TINY))
    tiny["synth"]["batch_size"] = 4
    mtd = yaml.safe_load(yaml.safe_dump(TINY))
    for section, values in MTD.items():
        mtd.setdefault(section, {}).update(values)
    mtd["data"]["source"] = str(mtd_source)
    return {"tiny": tiny, "mtd": mtd}


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run `cmd`; wall seconds and the peak RSS (MiB) of each python process in its tree."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peaks: dict[int, float] = {}
    names: dict[int, str] = {}

    def poll() -> None:
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for p in tree:
                try:
                    cmdline = " ".join(p.cmdline())
                    rss = p.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                if "stages.cli" in cmdline:
                    peaks[p.pid] = max(peaks.get(p.pid, 0.0), rss)
                    names[p.pid] = cmdline
            time.sleep(0.1)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{err.decode()[-3000:]}")
    # under the launcher the stage's workers run `python -u -m stages.cli`; the process that
    # relaunched itself only waits (its memory is listed apart)
    workers = [round(v, 1) for pid, v in sorted(peaks.items()) if " -u -m stages.cli" in names[pid]]
    others = [
        round(v, 1)
        for pid, v in sorted(peaks.items())
        if pid not in workers and "accelerate" not in names[pid]
    ]
    if not workers:
        workers, others = others, []
    return {
        "seconds": round(time.perf_counter() - began, 2),
        "peak_rss_mib": workers,
        "waiting_rss_mib": others,
    }


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def measure(name: str, params: dict, work: Path) -> dict:
    work.mkdir(parents=True)
    (work / "dvc.yaml").write_text("stages: {}\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "TQDM_DISABLE": "1"}
    panda = [sys.executable, "-m", "stages.cli"]

    def write(processes: int) -> None:
        params["compute"] = {"processes": processes, "threads": 2 // processes}
        (work / "params.yaml").write_text(yaml.safe_dump(params))

    write(1)
    for stage in ("download", "preprocess", "finetune"):
        click.echo(f"[{name}] {stage} ...")
        run_measured([*panda, stage], work, env)
    out: dict = {"setting": name}
    pairs = {}
    for stage in ("synthesize", "train"):
        for processes in (1, 2):
            write(processes)
            shutil.rmtree(work / "data" / "checkpoints" / "train", ignore_errors=True)
            click.echo(f"[{name}] {stage} with {processes} process(es) ...")
            out[f"{stage}_{processes}"] = run_measured([*panda, stage], work, env)
            if stage == "synthesize":
                pairs[processes] = files(work / "data" / "synthetic")
        out[f"{stage}_ratio"] = round(out[f"{stage}_2"]["seconds"] / out[f"{stage}_1"]["seconds"], 3)
    out["synthetic_pairs_identical"] = pairs[1] == pairs[2]
    out["n_synthetic_files"] = len(pairs[1])
    out["train_steps"] = params["train"]["steps"]
    return out


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "# 1 process against 2 (`compute.processes`), same 2 cores",
        "",
        f"Measured by `python benchmarks/scaling.py` on {platform.node()} ({os.cpu_count()} cores); "
        "wall seconds of the whole `panda <stage>` command (launcher start included), peak RSS per "
        "worker process in MiB.",
        "",
        "| setting | stage | 1 process (s) | 2 processes (s) | 2 / 1 | MiB, 1 proc | MiB per worker, 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for stage in ("synthesize", "train"):
            one, two = r[f"{stage}_1"], r[f"{stage}_2"]
            lines.append(
                f"| {r['setting']} | {stage} | {one['seconds']} | {two['seconds']} | {r[f'{stage}_ratio']} | "
                f"{', '.join(map(str, one['peak_rss_mib']))} | {', '.join(map(str, two['peak_rss_mib']))} |"
            )
    lines += [
        "",
        "Synthetic pairs byte-identical between 1 and 2 processes: "
        + ", ".join(f"{r['setting']} {r['synthetic_pairs_identical']}" for r in rows),
        "",
    ]
    return "\n".join(lines)


@click.command()
@click.option(
    "--setting", "chosen", multiple=True, type=click.Choice(["tiny", "mtd"]), default=("tiny", "mtd")
)
@click.option("--out", type=click.Path(path_type=Path), default=ROOT / "reports" / "benchmark" / "scaling")
@click.option("--mtd-source", type=click.Path(path_type=Path), default=MTD_SHARED, show_default=True)
def main(chosen: tuple[str, ...], out: Path, mtd_source: Path) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="panda-scaling-") as tmp:
        for name in chosen:
            if name == "mtd" and not (mtd_source / "MT_Free").is_dir():
                click.echo(f"skipping mtd: {mtd_source} is absent")
                continue
            rows.append(measure(name, settings(mtd_source.resolve())[name], Path(tmp) / name))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(rows))
    click.echo(to_markdown(rows))


if __name__ == "__main__":
    main()
