"""Benchmark aggregation: mean and sample spread over seeds, markdown with per-defect-type tables."""

from __future__ import annotations

from pathlib import Path

import click
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


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str, monkeypatch: pytest.MonkeyPatch):
    """A benchmarks/ script as a module (they import each other as scripts do)."""
    import importlib.util

    monkeypatch.syspath_prepend(str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rescore_replaces_evaluation_keys_and_keeps_synthesis_and_training_ones(monkeypatch):
    rescore = load_script("rescore", monkeypatch)
    evaluation = ["pixel_auroc", "pooled_pixel_ap", "crack_image_auroc", "uneven_miou", "n_test_images"]
    kept = ["seconds_per_image", "train_seconds", "contrast_crack", "contrast_gap", "val_dice"]
    assert all(rescore.is_eval_metric(k) for k in evaluation)
    assert not any(rescore.is_eval_metric(k) for k in kept)
    assert rescore.eval_params(("tta=false", "threshold=0.3")).tta is False
    with pytest.raises(click.BadParameter, match="'steps' is not an evaluate parameter"):
        rescore.eval_params(("steps=3",))


def test_defect_shots_halves_keep_tiles_whole_and_score_every_test_image_once(monkeypatch):
    import pandas as pd

    shots = load_script("defect_shots", monkeypatch)
    groups = ["g1", "g1", "g2", "g3", "g3", "g4", "h1", "h2", "n1", "g2", "k1"]
    manifest = pd.DataFrame(
        {
            "group": groups,
            "defect_type": ["crack"] * 6 + ["fray"] * 2 + ["good"] * 2 + ["crack"],
            "split": ["test"] * 10 + ["gen_train"],
        }
    )
    half = shots.deal_halves(manifest)
    assert half == {"g1": 0, "g2": 1, "g3": 0, "g4": 1, "h1": 0, "h2": 1}
    scored = [shots.scored_on(manifest, half, h) for h in (0, 1)]
    for h, frame in enumerate(scored):
        visible = frame[frame["split"] == "test"]
        defects = visible[visible["defect_type"] != "good"]
        assert set(defects["group"]) == {g for g, v in half.items() if v == h}
        assert (visible["defect_type"] == "good").sum() == 2  # normals are scored in both halves
        assert (frame["split"] == "gen_train").sum() == 1
    defect_rows = [set(f.index[(f["split"] == "test") & (f["defect_type"] != "good")]) for f in scored]
    assert defect_rows[0].isdisjoint(defect_rows[1])
    assert len(defect_rows[0] | defect_rows[1]) == 8


def test_instrument_validity_saves_models_and_extends_earlier_seeds(workdir, monkeypatch):
    import json

    from click.testing import CliRunner

    from panda.segment.train import load_model
    from stages.cli import cli

    for stage in ("download", "preprocess"):
        assert CliRunner().invoke(cli, [stage]).exit_code == 0
    validity = load_script("instrument_validity", monkeypatch)
    tiny = ["-S", "steps=2", "-S", "base_channels=4", "-S", "batch_size=4", "-S", "pretext_steps=2"]
    args = [*tiny, "--out", "val", "--save-dir", "models", "--no-tta"]
    first = CliRunner().invoke(validity.main, [*args, "--seeds", "0"])
    assert first.exit_code == 0, first.output
    assert load_model(workdir / "models" / "real-direct-seed0.pt").head.in_channels == 4
    assert len(list((workdir / "data/checkpoints/train/pretext").glob("*.pt"))) == 1
    second = CliRunner().invoke(validity.main, [*args, "--seeds", "0,1"])
    assert "seed 0: kept" in second.output and "seed 1 real-direct:" in second.output
    report = json.loads((workdir / "val.json").read_text())
    assert report["overrides"] == tiny[1::2] and sorted(r["seed"] for r in report["runs"]) == [0, 1]
    assert "2-step restoration pretext" in (workdir / "val.md").read_text()


def test_score_anatomy_finds_edge_maxima_and_what_beats_the_normals(monkeypatch):
    import numpy as np

    anatomy = load_script("score_anatomy", monkeypatch).anatomy
    maps = np.full((6, 16, 16), 0.1, np.float32)
    for i in range(4):  # normals: their maxima on the edge, at 0.2 .. 0.5
        maps[i, 0, 5] = 0.2 + 0.1 * i
    maps[4, 8, 8] = 0.9  # a defect found in the middle of the image
    maps[5, 8, 8] = 0.15  # a defect scored below every normal
    rows = anatomy(maps, np.array(["good"] * 4 + ["hole"] * 2), border=2)
    assert [r["group"] for r in rows] == ["good", "hole"]
    good, hole = rows
    assert good["max_at_border"] == 1.0 and hole["max_at_border"] == 0.0
    assert hole["found_at_10pct_fpr"] == 0.5 and hole["n"] == 2
    assert abs(good["median_score"] - 0.35) < 1e-6


class FolderFS:
    """Stands in for the DVCFileSystem of one experiment: its files are those of a project folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_text(self, path: str) -> str:
        return (self.root / path).read_text()

    def isdir(self, path: str) -> bool:
        return (self.root / path).is_dir()

    def get(self, path: str, target: str, recursive: bool = False) -> None:
        import shutil

        (shutil.copytree if recursive else shutil.copy)(self.root / path, target)


@pytest.mark.slow
def test_resynth_reuses_the_experiments_denoiser_and_applies_the_synth_overrides(workdir, monkeypatch):
    import pandas as pd
    from click.testing import CliRunner

    from panda.evaluate import EvalParams
    from stages.cli import cli

    for stage in ("download", "preprocess", "finetune"):
        assert CliRunner().invoke(cli, [stage]).exit_code == 0
    (workdir / "dvc.lock").write_text(
        "stages:\n  preprocess:\n    outs:\n    - path: data/processed\n      md5: abc.dir\n"
    )
    resynth = load_script("resynth", monkeypatch)
    work = workdir / "resynth" / "run-s0"
    work.mkdir(parents=True)
    metrics = resynth.resynth_run(
        FolderFS(workdir), "run-s0", {"guidance_scale": 2.0, "sampler": "ddpm"}, EvalParams(), work, {}
    )
    assert (work / "diffusion" / "panda.json").is_file() and not (work / "diffusion.partial").exists()
    assert (workdir / "resynth" / "abc.dir" / "manifest.csv").is_file()  # the experiment's own data
    assert 0 <= metrics["pixel_auroc"] <= 1 and "contrast_gap" in metrics and metrics["train_seconds"] > 0
    assert len(pd.read_csv(work / "synthetic" / "manifest.csv")) == 2 * 6


@pytest.mark.slow
def test_resynth_pool_trains_on_every_experiments_pairs_together(workdir, monkeypatch):
    import pandas as pd
    from click.testing import CliRunner

    from panda.evaluate import EvalParams
    from stages.cli import cli

    for stage in ("download", "preprocess", "finetune", "synthesize"):
        assert CliRunner().invoke(cli, [stage]).exit_code == 0
    (workdir / "dvc.lock").write_text(
        "stages:\n  preprocess:\n    outs:\n    - path: data/processed\n      md5: abc.dir\n"
    )
    resynth = load_script("resynth", monkeypatch)
    seen, train = [], resynth.train_segmenter

    def counting(normal, pairs, params, checkpoint):
        seen.append(len(pairs[0]))
        return train(normal, pairs, params, checkpoint)

    monkeypatch.setattr(resynth, "train_segmenter", counting)
    work = workdir / "resynth" / "pool-s0"
    work.mkdir(parents=True)
    fs = FolderFS(workdir)
    metrics = resynth.pool_run([("run-s0", fs), ("run-s1", fs)], EvalParams(), work, {})
    one = len(pd.read_csv(workdir / "data" / "synthetic" / "manifest.csv"))
    assert seen == [2 * one] and one > 0
    assert (workdir / "resynth" / "run-s1-synthetic" / "manifest.csv").is_file()
    assert 0 <= metrics["pixel_auroc"] <= 1 and "val_pixel_ap" in metrics


def test_sampler_contrast_reads_variants_and_measures_each_type(monkeypatch):
    import torch

    from panda.diffusion.phase_b import DefectWindows

    sc = load_script("sampler_contrast", monkeypatch)
    name, config = sc._variant("ddpm-g2:sampler=ddpm;guidance_scale=2")
    assert (name, config.sampler, config.guidance_scale, config.steps) == ("ddpm-g2", "ddpm", 2, 20)
    assert sc._variant("default:")[1] == sc.SamplerConfig()
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 6:10, 6:10] = 1
    images = torch.zeros(2, 3, 16, 16) - masks * torch.tensor([0.5, -0.2]).view(2, 1, 1, 1)
    table = sc.contrast_per_type(
        images, DefectWindows(images, masks, torch.tensor([1, 2])), ["hole", "stain"]
    )
    assert table == {"hole": pytest.approx(-63.8, abs=0.1), "stain": pytest.approx(25.5, abs=0.1)}


def test_resynth_table_keeps_the_benchmark_rows_and_reads_back_only_its_own(tmp_path, monkeypatch):
    resynth = load_script("resynth", monkeypatch)
    bench = {
        "dataset": "mtd",
        "overrides": [],
        "evaluate_overrides": ["tta=true"],
        "runs": [{"method": "panda", "seed": 0, "metrics": {"pixel_ap": 0.05}}],
    }
    settings = {
        "panda-g2": {"from_method": "panda", "synth": ["guidance_scale=2"]},
        "panda-pool": {"from_method": "panda", "synth": [], "pool": [0, 1]},
    }
    new = [RunResult("panda-g2", 0, {"pixel_ap": 0.04}), RunResult("panda-pool", 0, {"pixel_ap": 0.03})]
    resynth.write_resynth(bench, "mtd.json", tmp_path / "mtd-resynth", settings, new)
    text = (tmp_path / "mtd-resynth.md").read_text()
    assert "| panda | 1 |" in text and "| panda-g2 | 1 |" in text
    assert "`panda-g2` from `panda`: `guidance_scale=2`" in text
    assert "`panda-pool` from `panda`: `none`, pairs of seeds 0,1 pooled" in text
    assert resynth._saved(tmp_path / "mtd-resynth") == (settings, new)


def test_sampler_contrast_grid_has_a_row_per_window_and_a_column_per_setting(tmp_path, monkeypatch):
    import torch
    from PIL import Image

    sc = load_script("sampler_contrast", monkeypatch)
    ids = torch.tensor([1, 1, 1, 2, 2])
    samples = {"real": torch.zeros(5, 3, 8, 8), "default": torch.ones(5, 3, 8, 8)}
    path = sc.sample_grid(samples, ids, tmp_path / "g.png", per_type=2)
    width, height = Image.open(path).size
    assert (width, height) == (2 + 2 * (24 + 2), 12 + 2 + 4 * (24 + 2))


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


def test_resynth_pool_rejects_seeds_that_are_not_numbers(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    resynth = load_script("resynth", monkeypatch)
    bench = tmp_path / "mtd.json"
    bench.write_text(json.dumps({"dataset": "mtd", "runs": [{"method": "panda", "seed": 0, "metrics": {}}]}))
    result = CliRunner().invoke(resynth.main, ["--benchmark", str(bench), "--name", "p", "--pool", "a,b"])
    assert result.exit_code != 0 and "--pool a,b: give comma-separated seeds" in result.output


def test_pixel_errors_split_a_types_iou_into_recall_and_false_alarms_on_normals(monkeypatch):
    import numpy as np
    import pandas as pd
    import torch

    from panda.evaluate import SplitMaps

    pixel_errors = load_script("pixel_errors", monkeypatch).pixel_errors

    masks = np.zeros((3, 16, 16), np.uint8)
    masks[0, 6:10, 6:10] = 1  # 16 defect pixels
    maps = np.zeros(masks.shape, np.float32)
    maps[0, 6:10, 6:8] = 0.9  # half found
    maps[0, 0, 0] = 0.9  # one false alarm on its own image
    maps[1, 0, :4] = 0.9  # four false alarms on a normal, at the edge
    maps[2, 8, 8] = 0.9  # one inside a normal
    images = torch.full((3, 3, 16, 16), 0.5)
    images[1, :, 0, :4] = 0.1  # the edge alarms sit on dark pixels
    frame = pd.DataFrame({"defect_type": ["crack", "good", "good"]})
    rows, where = pixel_errors(SplitMaps(frame, images, maps, masks), 0.5, border=2)
    assert rows == [
        {
            "defect_type": "crack",
            "mask_pixels": 16,
            "recall": 0.5,
            "fp_own_images": 1,
            "fp_normals": 5,
            "iou": 8 / (8 + 8 + 1 + 5),
        }
    ]
    assert where["fp_normal_pixels"] == 5 and where["normals_with_fp"] == 2
    assert where["fp_share_at_border"] == pytest.approx(0.8)
    assert where["fp_median_gray"] == pytest.approx(0.1)


def test_shortcut_probe_reads_the_segmenter_inside_the_masks_and_the_change_there(monkeypatch):
    import numpy as np
    import torch

    mask_scores = load_script("shortcut_probe", monkeypatch).mask_scores

    class DarkFinder(torch.nn.Module):
        """Fires on dark pixels (inputs arrive normalized to [-1, 1])."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -x.mean(1, keepdim=True) * 20

    clean = [np.full((16, 16, 3), 200, np.uint8) for _ in range(2)]
    masks = [np.zeros((16, 16), bool) for _ in range(2)]
    masks[0][4:8, 4:8] = masks[1][2:6, 2:6] = True
    redrawn = [c.copy() for c in clean]
    redrawn[0][4:8, 4:8] = 40  # one mask darkened: a defect the stub finds
    redrawn[1][0, 0] = 40  # a false alarm outside the other mask
    scores = mask_scores(DarkFinder(), redrawn, clean, masks, 0.5)
    assert scores["hit_share"] == 0.5
    assert scores["fp_px_per_image"] == 0.5
    assert scores["change_in_mask"] == -80.0
    assert mask_scores(DarkFinder(), clean, clean, masks, 0.5)["hit_share"] == 0.0
