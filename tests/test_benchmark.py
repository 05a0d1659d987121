"""Benchmark aggregation: mean and sample spread over seeds, markdown with per-defect-type tables."""

from __future__ import annotations

import pytest

from panda.benchmark import RunResult, aggregate, paired_differences, to_markdown


def test_aggregate_mean_and_spread_per_method():
    runs = [
        RunResult("real", 0, {"pixel_ap": 0.2, "crack_pixel_auroc": 0.9, "pixel_auroc": 0.8}),
        RunResult("real", 1, {"pixel_ap": 0.4, "crack_pixel_auroc": 0.7, "pixel_auroc": 0.9}),
        RunResult("draem", 0, {"pixel_ap": 0.1, "crack_pixel_auroc": 0.6, "pixel_auroc": 0.7}),
    ]
    rows = aggregate(runs)
    assert [r["method"] for r in rows] == ["real", "draem"]
    real = rows[0]
    assert real["pixel_ap"] == pytest.approx(0.3) and real["pixel_ap_std"] == pytest.approx(0.1414, abs=1e-4)
    assert real["n_seeds"] == 2 and rows[1]["pixel_ap_std"] == 0.0
    md = to_markdown(rows, "Benchmark: x", "setting")
    assert "| real | 2 | 0.850 ± 0.071 | 0.300 ± 0.141 |" in md
    assert "## pixel_auroc per defect type" in md and "| crack |" in md


def test_paired_differences_compare_the_same_seed_and_count_the_seeds_ahead():
    """A shared seed effect cancels: panda is 0.05 ahead of real on each seed although the seeds
    spread by 0.3; a seed only one row ran is left out."""
    runs = [
        RunResult("real", 0, {"pixel_ap": 0.2, "miou": 0.5}),
        RunResult("real", 1, {"pixel_ap": 0.5, "miou": 0.6}),
        RunResult("panda", 0, {"pixel_ap": 0.25, "miou": 0.45}),
        RunResult("panda", 1, {"pixel_ap": 0.55, "miou": 0.62}),
        RunResult("panda", 2, {"pixel_ap": 0.9, "miou": 0.9}),
        RunResult("draem", 1, {"pixel_ap": 0.4}),
    ]
    panda, draem = paired_differences(runs, "real")
    assert panda["method"] == "panda" and panda["seeds"] == [0, 1]
    assert panda["pixel_ap"] == pytest.approx(0.05) and panda["pixel_ap_std"] == pytest.approx(0.0, abs=1e-9)
    assert panda["pixel_ap_ahead"] == 2 and panda["miou_ahead"] == 1
    assert draem["pixel_ap"] == pytest.approx(-0.1) and "miou" not in draem
    md = to_markdown(aggregate(runs), "Benchmark: x", "setting", {"real": [panda, draem]})
    assert "## Paired with `real`" in md
    assert "| panda | +0.050 ± 0.000 (2/2) | -0.015 ± 0.049 (1/2) | - | - |" in md
    assert "| draem | -0.100 (0/1) | - | - | - |" in md


def test_params_drift_names_changed_keys_but_not_overridden_added_or_unquoted_ones():
    from panda.benchmark import params_drift

    current = {"synth": {"method": "panda", "pma_steps": 16, "only": [[0.7, 0.8]]}, "compute": {"mp": "no"}}
    ran = {"synth": {"method": "real", "pma_steps": 16, "only": []}, "compute": {"mp": False}}
    assert params_drift(ran, current, ["synth.method=real"]) == ["synth.only"]
    assert params_drift(ran, current, ["synth.method=real", "synth.only=[]"]) == []
    assert params_drift(ran, current, ["synth.method=draem", "synth.only=[]"]) == ["synth.method"]
    current["synth"]["new_option"] = 1  # added since the run: not drift
    assert params_drift(ran, current, ["synth.method=real", "synth.only=[]"]) == []
    # ... unless the row sets it away from today's default: the run had the default's behaviour
    assert params_drift(ran, current, ["synth.method=real", "synth.only=[]", "synth.new_option=2"]) == [
        "synth.new_option"
    ]
    assert params_drift(ran, current, ["synth.method=real", "synth.only=[]", "synth.new_option=1"]) == []


def test_a_key_added_since_a_run_counts_with_the_value_the_run_had():
    """A default changed after the key was added (synth.match_chroma: false, then true) must not be
    taken for the setting of runs made before the key existed."""
    from pathlib import Path

    import yaml

    from panda.benchmark import ADDED_KEYS, _flatten, params_drift

    current = {"synth": {"method": "panda", "mix_method": None, "match_chroma": True, "inject_until": 0.0}}
    ran = {"synth": {"method": "panda", "mix_method": None}}
    assert params_drift(ran, current, []) == ["synth.match_chroma"]
    assert params_drift(ran, current, ["synth.match_chroma=false"]) == []
    both = ["synth.inject_until", "synth.match_chroma"]
    assert params_drift(ran, current, ["synth.inject_until=0.5"]) == both
    with open(Path(__file__).parents[1] / "params.yaml") as f:
        assert set(ADDED_KEYS) <= set(_flatten(yaml.safe_load(f)))  # each names a real key


def test_keys_only_panda_reads_are_drift_only_where_panda_synthesizes():
    from panda.benchmark import params_drift

    panda_only = {"inject_background": False, "match_chroma": True}
    current = {"synth": {"method": "panda", "mix_method": None, "n_per_defect": 8, **panda_only}}
    ran = {"synth": {"method": "cutpaste", "mix_method": None, "n_per_defect": 8}}
    ran["synth"] |= {"inject_background": True, "match_chroma": False}
    assert params_drift(ran, current, ["synth.method=cutpaste"]) == []
    ran["synth"]["method"] = "real"
    assert params_drift(ran, current, ["synth.method=real"]) == []
    assert params_drift(ran, current, ["synth.method=real", "synth.n_per_defect=4"]) == ["synth.n_per_defect"]
    ran["synth"]["mix_method"] = "panda"
    mixed = ["synth.method=real", "synth.mix_method=panda"]
    assert params_drift(ran, current, mixed) == ["synth.inject_background", "synth.match_chroma"]
    ran["synth"] |= {"method": "panda", "mix_method": None}
    assert params_drift(ran, current, []) == ["synth.inject_background", "synth.match_chroma"]


def _git(root, *args: str, date: str = "2026-01-01T00:00:00") -> str:
    import subprocess

    env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date, "PATH": "/usr/bin:/bin"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
    out = subprocess.run(["git", *ident, *args], cwd=root, env=env, capture_output=True, text=True)
    return out.stdout.strip()


def test_benchmark_reads_the_newest_experiment_of_a_name(tmp_path, monkeypatch):
    """A rerun on a later commit is filed under another baseline; its ref may sort first by name."""
    from functools import partial

    from stages.benchmark import exp_ref

    git = partial(_git, tmp_path)
    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "old", "--no-gpg-sign")
    old = git("rev-parse", "HEAD")
    git("commit", "-q", "--allow-empty", "-m", "new", "--no-gpg-sign", date="2026-06-01T00:00:00")
    new = git("rev-parse", "HEAD")
    git("update-ref", "refs/exps/ff/base1/bench-mtd-real-s0", old)
    git("update-ref", "refs/exps/0a/base2/bench-mtd-real-s0", new)
    monkeypatch.chdir(tmp_path)
    assert exp_ref("bench-mtd-real-s0") == "refs/exps/0a/base2/bench-mtd-real-s0"
    assert exp_ref("bench-mtd-draem-s0") is None


def test_validation_rows_get_their_own_table_and_are_not_a_defect_type():
    runs = [
        RunResult(
            "panda",
            0,
            {"pixel_ap": 0.1, "crack_pixel_auroc": 0.9, "val_pixel_auroc": 0.8, "val_pixel_ap": 0.3},
        )
    ]
    md = to_markdown(aggregate(runs), "Benchmark: x", "setting")
    assert "## Validation" in md and "| panda | 0.800 | 0.300 | - | - |" in md  # one seed: no spread
    assert "| method | crack |" in md  # "val" is no defect type
    assert "## Validation" not in to_markdown(aggregate([RunResult("a", 0, {"pixel_ap": 0.1})]), "x", "y")


def test_the_validation_split_is_gen_train_defects_with_train_normals_of_one_category():
    import pandas as pd

    from panda.evaluate import with_validation_split

    manifest = pd.DataFrame(
        {
            "category": ["tile"] * 5 + ["other"],
            "split": ["train", "test", "gen_train", "test", "gen_train", "gen_train"],
            "defect_type": ["good", "good", "crack", "crack", "fray", "crack"],
        }
    )
    val = with_validation_split(manifest, "tile")
    assert val["split"].tolist() == ["val", "test", "val", "test", "val", "gen_train"]
    assert manifest["split"].iloc[0] == "train"  # the caller's manifest is left alone


def test_benchmark_writes_tables_and_each_methods_pairs_from_finished_experiments(tmp_path, monkeypatch):
    """Experiments that exist are read, not rerun: metrics into the tables, seed 0's grid into the figure."""
    import json
    from pathlib import Path

    import numpy as np
    import yaml
    from click.testing import CliRunner
    from PIL import Image

    from stages.cli import cli

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    _git(tmp_path, "init", "-q")
    (tmp_path / "reports/figures").mkdir(parents=True)
    for shade, (method, seed) in enumerate([("real", 0), ("real", 1), ("panda", 0), ("panda", 1)]):
        ran = yaml.safe_load(yaml.safe_dump(params))  # what `dvc exp run -S ...` commits
        ran["synth"] |= {"method": method, "seed": seed}
        ran["train"]["seed"] = ran["finetune"]["seed"] = seed
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(ran))
        grid = np.full((20, 30 + 10 * shade, 3), 40 * shade, np.uint8)
        Image.fromarray(grid).save(tmp_path / "reports/figures/synthetic_samples.png")
        metrics = {"pixel_ap": 0.1 * (shade + 1), "crack_pixel_ap": 0.5}
        (tmp_path / "reports/metrics.json").write_text(json.dumps(metrics))
        _git(tmp_path, "add", "-A")
        _git(tmp_path, "commit", "-q", "-m", f"{method} {seed}", "--no-gpg-sign")
        _git(tmp_path, "update-ref", f"refs/exps/aa/base/bench-demo-{method}-s{seed}", "HEAD")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["benchmark", "--method", "real", "--method", "panda", "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    assert "running" not in result.output  # nothing was run again
    table = json.loads((tmp_path / "reports/benchmark/demo.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["real", "panda"]
    assert table["paired"]["real"][0]["pixel_ap"] == pytest.approx(0.2)  # panda - real, seed by seed
    assert table["rows"][1]["pixel_ap"] == pytest.approx(0.35)
    figure = np.asarray(Image.open(tmp_path / "reports/benchmark/demo-pairs.png"))
    assert figure.shape[1] == 50  # the widest panel: panda's seed-0 grid, not a seed-1 one
    assert figure.shape[0] == 2 * (14 + 20 + 4)  # real's and panda's seed-0 grids, each under a label
    assert (figure[14:34, :30] == 0).all() and (figure[52:72] == 80).all()
    _git(tmp_path, "update-ref", "-d", "refs/exps/aa/base/bench-demo-panda-s1")
    (tmp_path / "reports/benchmark/demo.json").unlink()  # else its panda s1 run would stand in
    args = ["benchmark", "--method", "real", "--method", "panda", "--seeds", "0,1,2", "--finished-only"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "running" not in result.output, result.output
    assert "bench-demo-panda-s1 has not run; left out" in result.output
    table = (tmp_path / "reports/benchmark/demo.md").read_text()
    assert "| real | 2 | - | 0.150 ± 0.071 |" in table
    assert "| panda | 1 (seed 0) | - | 0.300 | " in table  # fewer seeds than the rest, and no spread
    params["synth"]["pma_steps"] += 1  # a changed sampler default: only panda's runs are out of date
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, args)
    assert "bench-demo-panda-s0 ran with other params (synth.pma_steps); left out" in result.output
    assert "bench-demo-real-s0 ran" not in result.output
    assert "| real | 2 | - | 0.150 ± 0.071 |" in (tmp_path / "reports/benchmark/demo.md").read_text()
    params["synth"]["n_per_defect"] += 1  # a changed default every method reads: every run is out of date
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(cli, args)
    assert "bench-demo-real-s0 ran with other params (synth.n_per_defect); left out" in result.output
    assert result.exit_code != 0 and "no experiment of this benchmark has finished" in result.output


def test_benchmark_file_pairs_with_real_rows_by_default_or_the_rows_it_names(tmp_path):
    from panda.errors import PandaError
    from stages.benchmark import read_benchmark_config

    path = tmp_path / "b.yaml"
    base = "name: b\nseeds: [0]\noverrides: []\nmethods: {real: [], panda: [], real+panda: []}\n"
    path.write_text(base)
    assert read_benchmark_config(path).paired_with == ("real",)
    path.write_text(base + "paired_with: [panda]\n")
    assert read_benchmark_config(path).paired_with == ("panda",)
    path.write_text(base + "paired_with: [draem]\n")
    with pytest.raises(PandaError, match="paired_with names 'draem'"):
        read_benchmark_config(path)


def _committed_pipeline(root, monkeypatch, files: dict[str, str]) -> None:
    """A repo whose one stage runs a.py (and reads the untracked data/raw), committed, made the cwd."""
    (root / "dvc.yaml").write_text("stages:\n  s:\n    cmd: x\n    deps: [a.py, data/raw]\n")
    (root / "a.py").write_text("x = 1\n")
    for name, text in files.items():
        (root / name).write_text(text)
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "code", "--no-gpg-sign")
    monkeypatch.chdir(root)


def test_code_drift_lists_pipeline_code_changed_since_an_experiment(tmp_path, monkeypatch):
    from stages.benchmark import code_drift

    _committed_pipeline(tmp_path, monkeypatch, {"notes.md": "n\n"})
    assert code_drift("HEAD") == []
    (tmp_path / "notes.md").write_text("not pipeline code\n")
    assert code_drift("HEAD") == []
    (tmp_path / "a.py").write_text("x = 2\n")
    assert code_drift("HEAD") == ["a.py"]


def test_a_fresh_clone_reuses_the_reports_runs_whose_params_still_match(tmp_path, monkeypatch):
    """No refs/exps here (they stay in the repo that ran them): the committed JSON's runs stand in,
    each checked against today's params; a run with other params or no recorded overrides does not."""
    import json
    from pathlib import Path

    import yaml
    from click.testing import CliRunner

    from stages.benchmark import code_digest
    from stages.cli import cli

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    _committed_pipeline(tmp_path, monkeypatch, {"params.yaml": yaml.safe_dump(params)})
    made_here = code_digest("HEAD", ["a.py"])
    assert made_here == code_digest(None, ["a.py"])  # the tree and the workspace agree

    def run(method: str, seed: int, sets: list[str] | None, ap: float) -> dict:
        seed_sets = [f"synth.seed={seed}", f"train.seed={seed}", f"finetune.seed={seed}"]
        entry = {"method": method, "seed": seed, "metrics": {"pixel_ap": ap}, "code": made_here}
        return entry | ({"sets": [*sets, *seed_sets]} if sets is not None else {})

    stale = params | {"train": params["train"] | {"steps": params["train"]["steps"] + 1}}
    report = {
        "params": stale,  # written when train.steps was one more: only runs that override it still match
        "runs": [
            run("real", 0, ["synth.method=real", f"train.steps={params['train']['steps']}"], 0.4),
            run("real", 1, ["synth.method=real"], 0.9),  # ran with the old train.steps
            run("panda", 0, None, 0.1),  # an old report's run: its overrides were not recorded
        ],
    }
    (tmp_path / "reports/benchmark").mkdir(parents=True)
    (tmp_path / "reports/benchmark/demo.json").write_text(json.dumps(report))
    args = ["benchmark", "--method", "real:synth.method=real;train.steps=" + str(params["train"]["steps"])]
    args += ["--method", "real1:synth.method=real", "--method", "panda", "--seeds", "0,1", "--finished-only"]
    report["runs"].append(run("real1", 0, ["synth.method=real"], 0.7))
    report["runs"][-1]["code"] = "made-elsewhere"
    (tmp_path / "reports/benchmark/demo.json").write_text(json.dumps(report))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (
        "bench-demo-real-s0: no experiment here; its run in reports/benchmark/demo.json reused\n"
        in result.output
    )
    assert (
        "bench-demo-real1-s0: its run in reports/benchmark/demo.json had other params: train.steps"
        in result.output
    )
    assert "bench-demo-panda-s0 has not run; left out" in result.output
    table = json.loads((tmp_path / "reports/benchmark/demo.json").read_text())
    # real1 wants what real's run (train.steps set back to today's) ran with: the same run, reused
    assert (
        "bench-demo-real1-s0: no experiment here; its run in reports/benchmark/demo.json (as real)"
        in result.output
    )
    assert [(r["method"], r["seed"], r["metrics"]["pixel_ap"]) for r in table["runs"]] == [
        ("real", 0, 0.4),
        ("real1", 0, 0.4),
    ]
    assert table["runs"][0]["code"] == made_here and table["params"] == params
    # the rewritten report is itself reusable, and a run made on other code is named as such
    table["runs"].append(run("real", 1, ["synth.method=real"], 0.6) | {"code": "made-elsewhere"})
    table["runs"][-1]["sets"][1:1] = [f"train.steps={params['train']['steps']}"]
    (tmp_path / "reports/benchmark/demo.json").write_text(json.dumps(table))
    assert not (tmp_path / "reports/benchmark/demo-pairs.png").exists()  # no grid came from a report
    (tmp_path / "reports/benchmark/demo-pairs.png").write_bytes(b"the committed grid")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports/benchmark/demo-pairs.png").read_bytes() == b"the committed grid"
    assert "demo-pairs.png left as it was: 2 first-seed grids are not here" in result.output
    assert (
        "bench-demo-real-s1: no experiment here; its run in reports/benchmark/demo.json reused (made on"
        in result.output
    )
    rows = json.loads((tmp_path / "reports/benchmark/demo.json").read_text())["rows"]
    assert rows[0]["n_seeds"] == 2 and rows[0]["pixel_ap"] == pytest.approx(0.5)


def test_a_benchmark_reuses_another_reports_run_that_has_the_params_a_row_wants(tmp_path, monkeypatch):
    """`reuse_from`: a row is the same run as another benchmark's row of another name (say
    mtd-only's real+panda-only-off and mtd's real+panda-no-only) when the params are the same."""
    import json
    from pathlib import Path

    import yaml
    from click.testing import CliRunner

    from panda.errors import PandaError
    from stages.benchmark import read_benchmark_config
    from stages.cli import cli

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    _committed_pipeline(tmp_path, monkeypatch, {"params.yaml": yaml.safe_dump(params)})
    (tmp_path / "reports/benchmark").mkdir(parents=True)
    seed_sets = ["synth.seed=0", "train.seed=0", "finetune.seed=0"]
    runs = [
        {
            "method": "real+panda-no-only",
            "seed": 0,
            "metrics": {"pixel_ap": 0.3},
            "sets": ["x.a=1", *seed_sets],
        },
        {"method": "real+panda", "seed": 0, "metrics": {"pixel_ap": 0.2}, "sets": seed_sets},
    ]
    (tmp_path / "reports/benchmark/big.json").write_text(json.dumps({"params": params, "runs": runs}))
    spec = "name: small\nseeds: [0]\noverrides: []\nmethods: {only-off: ['x.a=1']}\n"
    (tmp_path / "small.yaml").write_text(spec + "reuse_from: [missing]\n")
    with pytest.raises(PandaError, match="reuse_from names 'missing', but reports/benchmark/missing.json"):
        read_benchmark_config(tmp_path / "small.yaml")
    (tmp_path / "small.yaml").write_text(spec + "reuse_from: [big]\n")
    result = CliRunner().invoke(cli, ["benchmark", "--config", "small.yaml", "--finished-only"])
    assert result.exit_code == 0, result.output
    assert (
        "bench-small-only-off-s0: no experiment here; its run in reports/benchmark/big.json " in result.output
    )
    assert "big.json (as real+panda-no-only) reused (its pipeline code was not recorded)" in result.output
    table = json.loads((tmp_path / "reports/benchmark/small.json").read_text())
    assert [(r["method"], r["metrics"]["pixel_ap"]) for r in table["runs"]] == [("only-off", 0.3)]
    (tmp_path / "small.yaml").write_text(spec)  # without reuse_from, big.json is not looked at
    result = CliRunner().invoke(cli, ["benchmark", "--config", "small.yaml", "--finished-only"])
    assert result.exit_code == 0 and "reports/benchmark/small.json reused" in result.output  # its own now


def test_every_committed_benchmark_file_reads_and_writes_the_report_it_is_named_after(monkeypatch):
    from pathlib import Path

    from stages.benchmark import read_benchmark_config

    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)  # reuse_from is checked against reports/benchmark/
    files = sorted((root / "benchmarks").glob("*.yaml"))
    assert files
    for path in files:
        assert read_benchmark_config(path).name == path.stem, path


def test_rewriting_a_report_keeps_the_runs_its_table_no_longer_shows(tmp_path, monkeypatch):
    """A row renamed or dropped, or a default changed under it, must not take the only record of
    its runs with it: they move to `retired_runs` with the params they ran with, and a row that asks
    for those params again reuses them."""
    import json
    from pathlib import Path

    import yaml
    from click.testing import CliRunner

    from stages.cli import cli

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    _committed_pipeline(tmp_path, monkeypatch, {"params.yaml": yaml.safe_dump(params)})
    (tmp_path / "reports/benchmark").mkdir(parents=True)
    steps = params["train"]["steps"]
    seed_sets = ["synth.seed=0", "train.seed=0", "finetune.seed=0"]

    def run(method: str, ap: float, sets: list[str]) -> dict:
        return {"method": method, "seed": 0, "metrics": {"pixel_ap": ap}, "sets": [*sets, *seed_sets]}

    report = {
        "params": params | {"train": params["train"] | {"steps": steps + 1}},  # before a default changed
        "runs": [
            run("real", 0.5, ["synth.method=real"]),  # ran with the old default
            run("short", 0.4, ["synth.method=real", f"train.steps={steps}"]),
            {"method": "gone", "seed": 0, "metrics": {"pixel_ap": 0.2}},  # its overrides were not recorded
        ],
    }
    path = tmp_path / "reports/benchmark/demo.json"
    path.write_text(json.dumps(report))
    now = [
        "benchmark",
        "--method",
        "real:synth.method=real",
        "--method",
        "short",
        "--seeds",
        "0",
        "--finished-only",
    ]
    now[4] = f"short:synth.method=real;train.steps={steps}"
    result = CliRunner().invoke(cli, now)
    assert result.exit_code == 0, result.output
    assert (
        "bench-demo-real-s0: its run in reports/benchmark/demo.json had other params: train.steps"
        in result.output
    )
    table = json.loads(path.read_text())  # real now is what short ran: the same run
    assert [(r["method"], r["metrics"]["pixel_ap"]) for r in table["runs"]] == [("real", 0.4), ("short", 0.4)]
    retired = {r["method"]: r for r in table["retired_runs"]}
    assert sorted(retired) == ["gone", "real"]
    assert retired["real"]["params"]["train.steps"] == steps + 1 and retired["gone"]["params"] is None
    # a row that sets the old value gets the run back; written again, the others are kept once each
    outputs = [
        CliRunner().invoke(cli, [*now, "--method", f"old:synth.method=real;train.steps={steps + 1}"]).output
    ]
    outputs += [
        CliRunner().invoke(cli, [*now, "--method", f"old:synth.method=real;train.steps={steps + 1}"]).output
    ]
    assert (
        "bench-demo-old-s0: no experiment here; its run in reports/benchmark/demo.json (as real)"
        in outputs[0]
    )
    assert (
        "bench-demo-old-s0: no experiment here; its run in reports/benchmark/demo.json reused" in outputs[1]
    )
    table = json.loads(path.read_text())
    assert [(r["method"], r["metrics"]["pixel_ap"]) for r in table["runs"]] == [
        ("real", 0.4),
        ("short", 0.4),
        ("old", 0.5),
    ]
    assert [r["method"] for r in table["retired_runs"]] == ["gone"]
