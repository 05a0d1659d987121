"""MLflow runs that compare: one parent per pipeline execution, stages nested, real durations, FAILED
runs, the segmenter as a registered model loaded back by URI, its training data as a dataset input,
and the out-of-distribution warning of `panda predict`."""

from __future__ import annotations

import os

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from stages.cli import cli
from tests.test_pipeline import STAGES, run_stage


def _runs() -> pd.DataFrame:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return mlflow.search_runs(experiment_names=["panda-tests"])


@pytest.mark.slow
def test_runs_nest_under_one_pipeline_run_and_the_model_round_trips(
    workdir, tiny_params, tmp_path, monkeypatch
):
    monkeypatch.setenv("DVC_STAGE", "any")  # as under dvc repro
    tiny_params["synth"]["method"] = "cutpaste"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in STAGES:
        run_stage(stage)
    runs = _runs()
    parent = runs[runs["tags.stage"].isna()]
    stages = runs[runs["tags.stage"].notna()]
    assert len(parent) == 1 and parent.iloc[0]["status"] == "FINISHED"
    assert parent.iloc[0]["tags.mlflow.runName"].startswith("workspace@")
    assert set(stages["tags.mlflow.parentRunId"]) == {parent.iloc[0]["run_id"]}
    assert sorted(stages["tags.mlflow.runName"]) == sorted(STAGES)
    assert parent.iloc[0]["metrics.pixel_ap"] == pytest.approx(
        stages[stages["tags.stage"] == "evaluate"].iloc[0]["metrics.pixel_ap"]
    )
    train = stages[stages["tags.stage"] == "train"].iloc[0]
    assert (train["end_time"] - train["start_time"]).total_seconds() >= float(train["metrics.train_seconds"])
    history = mlflow.MlflowClient().get_metric_history(train["run_id"], "train_loss")
    assert min(m.step for m in history) > 0  # the curve starts at a real step, no summary point at 0
    inputs = mlflow.get_run(train["run_id"]).inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["synthetic-pairs"] and inputs[0].dataset.digest

    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(sorted((workdir / "data/processed/brick/test").rglob("*.png"))[:3]):
        if not name.name.endswith("_mask.png"):
            Image.open(name).save(images / f"t{i}.png")
    by_file = CliRunner().invoke(
        cli, ["predict", "--input-dir", str(images), "--output-dir", str(tmp_path / "a")]
    )
    by_uri = CliRunner().invoke(
        cli,
        [
            "predict",
            "--input-dir",
            str(images),
            "--output-dir",
            str(tmp_path / "b"),
            "--model",
            "models:/panda-tests@champion",
        ],
    )
    assert by_file.exit_code == 0 and by_uri.exit_code == 0, by_uri.output
    for png in (tmp_path / "a").glob("*_map.png"):
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(tmp_path / "b" / png.name)))
    assert "unlike the training images" not in by_uri.output
    assert len(_runs()) == len(STAGES) + 1  # predict is no pipeline stage: it logs no run

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    Image.fromarray(np.full((90, 70, 3), (250, 10, 10), np.uint8)).save(foreign / "red.png")
    result = CliRunner().invoke(
        cli, ["predict", "--input-dir", str(foreign), "--output-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0 and "red.png is unlike the training images" in result.output
    scores = pd.read_csv(tmp_path / "c" / "scores.csv", keep_default_na=False)
    assert "brightness" in scores.loc[0, "ood"] or "colour" in scores.loc[0, "ood"]
    adaptive = CliRunner().invoke(
        cli,
        ["predict", "--input-dir", str(foreign), "--output-dir", str(tmp_path / "d"), "--threshold", "nope"],
    )
    assert adaptive.exit_code == 1 and "--threshold nope" in adaptive.output


def test_a_failing_stage_ends_its_run_failed_with_the_error(workdir):
    result = CliRunner().invoke(cli, ["preprocess"])  # no data/raw yet
    assert result.exit_code == 1
    runs = _runs()
    failed = runs[runs["tags.stage"] == "preprocess"].iloc[0]
    assert failed["status"] == "FAILED" and "data/raw" in failed["tags.error"]
