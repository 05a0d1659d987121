"""The six stages end to end on the tiny demo configuration, tracked in MLflow, deterministic."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stages.cli import cli

STAGES = ["download", "preprocess", "finetune", "synthesize", "train", "evaluate"]
METRIC_KEYS = ["pixel_auroc", "pixel_ap", "f1_max", "aupro", "image_auroc", "iou", "miou", "pixel_acc"]


def run_stage(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_pipeline_end_to_end_tracked_and_deterministic(workdir):
    for stage in STAGES:
        run_stage(stage)
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, key
        assert f"pooled_{key}" in metrics
    for key in ("pixel_auroc", "pixel_ap", "image_auroc", "miou"):  # the validation split, for tuning
        assert 0.0 <= metrics[f"val_{key}"] <= 1.0, key
    assert metrics["threshold"] == 0.5
    assert (workdir / "reports/plots/roc.json").is_file() and (workdir / "reports/per_defect.csv").is_file()
    for fig in ("preprocess_samples", "synthetic_samples", "evaluate_samples"):
        assert (workdir / f"reports/figures/{fig}.png").is_file()

    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["panda-tests"])
    parents = runs[runs["tags.stage"].isna()]
    runs = runs[runs["tags.stage"].notna()]
    assert sorted(runs["tags.stage"]) == sorted(STAGES) and len(parents) == 0  # by hand: no pipeline run
    evaluate = runs[runs["tags.stage"] == "evaluate"].iloc[0]
    assert evaluate["tags.dataset"] == "demo" and evaluate["tags.category"] == "brick"
    assert float(evaluate["metrics.pixel_auroc"]) == pytest.approx(metrics["pixel_auroc"], abs=1e-6)
    train = runs[runs["tags.stage"] == "train"].iloc[0]
    history = mlflow.tracking.MlflowClient().get_metric_history(train["run_id"], "train_loss")
    assert len(history) >= 1

    # same params and seed: identical metrics (checkpoints removed so nothing is reused)
    shutil.rmtree(workdir / "data/checkpoints")
    for stage in ("synthesize", "train", "evaluate"):
        run_stage(stage)
    assert json.loads((workdir / "reports/metrics.json").read_text()) == metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stage_logs_to_mlflow_server_over_rest(workdir, monkeypatch):
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    port = _free_port()
    server = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{workdir / 'server.db'}",
            "--default-artifact-root",
            str(workdir / "server-artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers are children: stop the whole group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{base}/health", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(1)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", base)
        monkeypatch.setenv("DVC_STAGE", "download")  # as under dvc repro: nested in a pipeline run
        run_stage("download")
        exp = json.load(
            urllib.request.urlopen(
                f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=panda-tests"
            )
        )
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [exp["experiment"]["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        runs = json.load(urllib.request.urlopen(request))["runs"]
        stages = [r for r in runs if any(t["key"] == "stage" for t in r["data"]["tags"])]
        assert len(stages) == 1 and len(runs) == 2  # the stage, nested under its pipeline run
        tags = {t["key"]: t["value"] for t in stages[0]["data"]["tags"]}
        params = {p["key"]: p["value"] for p in stages[0]["data"]["params"]}
        assert tags["stage"] == "download" and tags["dataset"] == "demo" and "git_commit" in tags
        assert params["data.dataset"] == "demo"
        os.killpg(server.pid, signal.SIGKILL)  # the server dies: the next stage still writes its outputs
        server.wait(timeout=30)
        began = time.time()
        run_stage("preprocess")
        assert time.time() - began < 60 and (workdir / "data/processed/manifest.csv").is_file()
        assert list((workdir / "reports/mlflow-offline").glob("preprocess-*.json"))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)


def test_finetune_skips_the_denoiser_for_baseline_methods(workdir, tiny_params):
    """A cutpaste/draem/real run must not spend minutes training a diffusion model it never uses."""
    import yaml

    tiny_params["synth"]["method"] = "cutpaste"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "finetune"):
        run_stage(stage)
    model_dir = workdir / "data/models/diffusion"
    assert sorted(p.name for p in model_dir.iterdir()) == [".panda-output", "NOT_TRAINED.txt"]
    assert json.loads((workdir / "reports/finetune_metrics.json").read_text()) == {"trained": 0}
    assert not (workdir / "data/checkpoints").exists()
    result = CliRunner().invoke(cli, ["synthesize", "--method", "panda"])
    assert result.exit_code != 0 and "synth.method: panda" in result.output
    tiny_params["synth"].update(mix_method="panda", mix_fraction=0.5)  # panda makes half: train it
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    run_stage("finetune")
    assert (model_dir / "panda.json").is_file()


def test_train_starts_from_a_cached_pretext_when_asked(workdir, tiny_params):
    import torch
    import yaml

    from panda.segment.train import load_model_file

    tiny_params["synth"]["method"] = "cutpaste"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "synthesize"):
        run_stage(stage)
    run_stage("train")
    scratch = load_model_file(workdir / "data/models/segmenter/model.pt")[0].state_dict()
    tiny_params["train"]["pretext_steps"] = 3
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    run_stage("train")
    pretext = load_model_file(workdir / "data/models/segmenter/model.pt")[0].state_dict()
    assert not torch.equal(pretext["downs.0.0.weight"], scratch["downs.0.0.weight"])
    assert len(list((workdir / "data/checkpoints/train/pretext").glob("*/step-*"))) == 1
    assert json.loads((workdir / "reports/train_metrics.json").read_text())["pretext_seconds"] > 0


def test_train_warns_when_the_segmenter_marks_nothing(workdir, tiny_params, monkeypatch):
    import dataclasses

    import yaml

    import stages.train

    tiny_params["synth"]["method"] = "cutpaste"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "synthesize"):
        run_stage(stage)
    real = stages.train.train_segmenter

    def train_with(dice: float) -> str:
        fake = lambda *a, **k: dataclasses.replace(real(*a, **k), val_dice=dice)  # noqa: E731
        monkeypatch.setattr(stages.train, "train_segmenter", fake)
        result = CliRunner().invoke(cli, ["train"], catch_exceptions=False)
        assert result.exit_code == 0
        return result.output

    assert "marks no pixel" not in train_with(0.4)
    warned = train_with(0.0)
    assert "marks no pixel of its validation pairs" in warned and "train.seed" in warned


@pytest.mark.slow
@pytest.mark.parametrize("method", ["cutpaste", "draem", "real"])
def test_synthesize_methods_and_predict(workdir, tiny_params, method, tmp_path):
    tiny_params["evaluate"]["threshold"] = "adaptive"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess"):
        run_stage(stage)
    run_stage("synthesize", "--method", method)
    import pandas as pd

    frame = pd.read_csv(workdir / "data/synthetic/manifest.csv")
    assert set(frame["method"]) == {method} and set(frame["defect_type"]) == {"crack", "hole"}
    assert len(frame) == 2 * 6 and (frame["mask_area"] > 0).all()
    run_stage("train")

    # predict on a folder with images of other sizes and one broken file
    from PIL import Image

    folder = tmp_path / "new"
    folder.mkdir()
    src = sorted((workdir / "data/raw/brick/test/hole").glob("*.png"))[:2]
    Image.open(src[0]).resize((90, 70)).save(folder / "a.png")
    Image.open(src[1]).convert("L").save(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    predict = ["predict", "--input-dir", str(folder), "--output-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(cli, predict)  # the adaptive threshold is fitted by evaluate
    assert result.exit_code != 0 and "run `panda evaluate`" in result.output
    assert "Traceback" not in result.output
    run_stage("evaluate")
    result = CliRunner().invoke(cli, predict)
    assert result.exit_code == 0, result.output
    fitted = json.loads((workdir / "reports/metrics.json").read_text())["threshold"]
    assert f"defective at {fitted:.3f}" in result.output
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert sorted(scores["image"]) == ["a.png", "b.jpg"]
    assert Image.open(tmp_path / "out" / "a_mask.png").size == (90, 70)
    assert (tmp_path / "out" / "b_overlay.png").is_file() and (tmp_path / "out" / "a_map.png").is_file()
    assert "broken.png" in result.output
