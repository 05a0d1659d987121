"""Benchmark aggregation: mean and sample spread over seeds, markdown with per-defect-type tables."""

from __future__ import annotations

import pytest

from panda.benchmark import RunResult, aggregate, to_markdown


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


def test_benchmark_reads_the_newest_experiment_of_a_name(tmp_path, monkeypatch):
    """A rerun on a later commit is filed under another baseline; its ref may sort first by name."""
    import subprocess

    from stages.benchmark import exp_ref

    def git(*args: str, date: str = "2026-01-01T00:00:00") -> str:
        env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date, "PATH": "/usr/bin:/bin"}
        ident = ["-c", "user.name=t", "-c", "user.email=t@t"]
        out = subprocess.run(["git", *ident, *args], cwd=tmp_path, env=env, capture_output=True, text=True)
        return out.stdout.strip()

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
    assert "## Validation" in md and "| panda | 0.800 ± 0.000 | 0.300 ± 0.000 | - | - |" in md
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
