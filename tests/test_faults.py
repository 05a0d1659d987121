"""Faults and hostile input: each case ends in one clear line or correct output, never a traceback,
a hang, lost data or a silently wrong label. Small files made here; loopback only; bounded loops."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from panda.data.download import fetch_dataset
from panda.data.extract import extract
from panda.errors import PandaError
from panda.io import read_image, read_mask, temp_dir_beside
from stages.cli import cli
from tests.conftest import make_mvtec_tree, write_image
from tests.test_pipeline import run_stage


def fails_cleanly(args: list[str], message: str) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    return result.output


def test_out_never_replaces_a_folder_panda_did_not_make(workdir):
    mine = workdir / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    fails_cleanly(["download", "--out", str(mine)], "refusing to replace")
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    run_stage("download")
    fails_cleanly(["preprocess", "--out", "data/raw"], "it holds panda's raw output, not processed")
    assert (workdir / "data/raw/.panda-download.json").is_file()


def test_a_file_url_is_checksummed_like_any_other_source(workdir, tmp_path):
    wrong = tmp_path / "not-mvtec.tar"
    wrong.write_bytes(b"x" * 100)
    fails_cleanly(["download", "--dataset", "mvtec", "--source", f"file://{wrong}"], "checksum mismatch")


def test_links_in_a_source_folder_are_not_followed(workdir, tmp_path):
    root = make_mvtec_tree(tmp_path / "src" / "mvtec")
    (root / "widget" / "train" / "loop").symlink_to(root)  # a loop back to the top
    (root / "widget" / "train" / "etc").symlink_to("/etc")  # a way out of the dataset
    with pytest.warns(UserWarning, match="2 symbolic links"):
        fetch_dataset("mvtec", workdir / "data/raw", source=str(root))
    assert not list((workdir / "data/raw").rglob("passwd"))
    assert len(list((workdir / "data/raw").rglob("*.png"))) == len(list(root.rglob("*.png")))


def test_a_source_folder_that_holds_the_output_is_refused(workdir):
    fails_cleanly(["download", "--dataset", "custom", "--source", "."], "contains the output folder")


def test_a_damaged_download_is_fetched_again(workdir):
    run_stage("download")
    victim = next((workdir / "data/raw").rglob("*.png"))
    victim.unlink()
    with pytest.warns(UserWarning, match="differs from its download"):
        fetch_dataset("demo", workdir / "data/raw")
    assert victim.is_file()


def test_archive_bombs_are_refused_before_extraction(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.png", bytes(40 * 2**20))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PandaError, match="refusing to extract .* it is not the dataset's archive"):
        extract(bomb, target)
    assert not any(target.iterdir())


@pytest.mark.parametrize("kind", ["zero_one", "alpha"])
def test_masks_in_0_1_or_alpha_are_read_as_their_defects(tmp_path, kind):
    path = tmp_path / "m.png"
    truth = np.zeros((20, 20), bool)
    truth[5:9, 5:12] = True
    if kind == "zero_one":
        Image.fromarray(truth.astype(np.uint8)).save(path)
    else:
        rgba = np.zeros((20, 20, 4), np.uint8)
        rgba[..., 3] = truth * 255
        Image.fromarray(rgba, "RGBA").save(path)
    mask, rule = read_mask(path)
    assert np.array_equal(mask, truth) and rule == {"zero_one": "0/1", "alpha": "alpha"}[kind]


def test_0_1_masks_go_through_preprocess_and_empty_ones_leave_gen_train_intact(workdir, tmp_path):
    root = tmp_path / "custom"
    for i in range(4):
        write_image(root / "train" / f"n{i}.png")
        write_image(root / "test" / "good" / f"g{i}.png")
    for i in range(6):
        write_image(root / "test" / "scratch" / f"d{i}.png")
        mask = np.zeros((40, 40), np.uint8)
        if i != 0:  # d0's mask marks nothing: it must not take a gen_train place
            mask[10:20, 10:20] = 1
        Image.fromarray(mask).save(
            (root / "masks" / "scratch").mkdir(parents=True, exist_ok=True)
            or root / "masks" / "scratch" / f"d{i}.png"
        )
    run_stage("download", "--dataset", "custom", "--source", str(root))
    result = CliRunner().invoke(cli, ["preprocess", "--dataset", "custom"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    manifest = __import__("pandas").read_csv(workdir / "data/processed/manifest.csv", keep_default_na=False)
    defects = manifest[manifest["defect_type"] == "scratch"]
    assert len(defects) == 5 and (defects["split"] == "gen_train").sum() == 2
    assert set(defects["mask_rule"]) == {"0/1"} and (defects["mask_area"] > 0).all()
    summary = (workdir / "data/processed/split_summary.csv").read_text()
    assert "mask_rule" in summary and "0/1" in summary


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    gray = read_image(path, "L")
    assert gray.max() == 255 and gray.min() == 0 and (gray == 255).mean() < 0.01


def test_unreadable_inputs_name_the_file(workdir, tmp_path):
    noise = tmp_path / "model.pt"
    noise.write_bytes(os.urandom(2048))
    write_image(tmp_path / "imgs" / "a.png")
    fails_cleanly(
        [
            "predict",
            "--input-dir",
            str(tmp_path / "imgs"),
            "--output-dir",
            str(tmp_path / "o"),
            "--model",
            str(noise),
        ],
        "is not a panda segmenter checkpoint",
    )
    (workdir / "params.yaml").write_bytes(b"\xff\xfe\x00binary")
    fails_cleanly(["train"], "not a text (UTF-8) file")


def test_a_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    from panda.data.layouts import scan

    root = make_mvtec_tree(tmp_path / "mvtec")
    bad = os.fsencode(root / "widget" / "train" / "good") + b"/caf\xe9.png"
    with open(bad, "wb") as f:
        f.write((root / "widget" / "train" / "good" / "000.png").read_bytes())
    with pytest.raises(PandaError, match="not valid UTF-8"):
        scan("mvtec", root)


def test_an_image_over_the_pixel_limit_is_refused_by_name(tmp_path, monkeypatch):
    import panda.io

    path = tmp_path / "huge.png"
    Image.new("L", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 0.16 MP counts as 16x over, as 3 GP would
    monkeypatch.setattr(panda.io, "MAX_PIXELS", 10_000)
    with pytest.raises(PandaError, match="image too large: .*huge.png"):
        read_image(path)


def test_leftovers_of_a_killed_run_are_cleaned_and_live_ones_kept(tmp_path):
    target = tmp_path / "synthetic"
    dead = tmp_path / ".synthetic.tmp-999999999-abc"
    dead.mkdir()
    live = tmp_path / f".synthetic.tmp-{os.getpid()}-xyz"
    live.mkdir()
    fresh = temp_dir_beside(target)
    assert not dead.exists() and live.exists() and str(os.getpid()) in fresh.name


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_tracking_server_that_is_down_costs_seconds_and_no_output(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    began = time.perf_counter()
    result = CliRunner().invoke(cli, ["download"])
    assert result.exit_code == 0 and time.perf_counter() - began < 30, result.output
    assert (workdir / "data/raw/.panda-download.json").is_file()
    (offline,) = (workdir / "reports/mlflow-offline").glob("download-*.json")
    assert json.loads(offline.read_text())["metrics"]["n_files"] > 0


def test_a_corrupt_tracking_store_does_not_cost_the_outputs(workdir, monkeypatch):
    store = workdir / "broken.db"
    store.write_bytes(b"this is not sqlite" * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    result = CliRunner().invoke(cli, ["download"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert list((workdir / "reports/mlflow-offline").glob("download-*.json"))


def test_a_killed_stage_leaves_no_running_mlflow_run(workdir):
    import mlflow

    from panda.tracking import stage_run

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("panda-tests")
    with mlflow.start_run(run_name="train", tags={"host": socket.gethostname(), "pid": "999999999"}) as run:
        stale = run.info.run_id
    mlflow.MlflowClient().update_run(stale, status="RUNNING")  # as a kill -9 leaves it
    with stage_run("train", "panda-tests", {}):
        pass
    assert mlflow.get_run(stale).info.status == "KILLED"


@pytest.mark.slow
def test_kill_9_of_training_resumes_to_the_uninterrupted_weights(workdir, tiny_params):
    tiny_params["synth"]["method"] = "cutpaste"
    tiny_params["train"].update(steps=40, checkpoint_every=1)
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "synthesize"):
        run_stage(stage)
    env = {**os.environ, "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "stages.cli", "train"]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = workdir / "data/checkpoints/train/segmenter"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpts.glob("*/step-*"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    subprocess.run(cmd, cwd=workdir, env=env, check=True, capture_output=True, timeout=300)
    resumed = torch.load(workdir / "data/models/segmenter/model.pt", weights_only=True)["state_dict"]
    assert json.loads((workdir / "reports/train_metrics.json").read_text())["resumed_from"] > 0
    for folder in ckpts.iterdir():
        if folder.is_dir():
            for leftover in folder.glob(".tmp-*"):
                raise AssertionError(f"half-written checkpoint left: {leftover}")
    import shutil

    shutil.rmtree(ckpts)
    run_stage("train")
    straight = torch.load(workdir / "data/models/segmenter/model.pt", weights_only=True)["state_dict"]
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


def test_a_stage_under_a_killed_dvc_does_not_run_on(workdir, tiny_params):
    """DVC runs `panda <stage>` as its child with DVC_STAGE set; kill -9 of DVC ends the stage."""
    tiny_params["synth"]["method"] = "cutpaste"
    tiny_params["train"].update(steps=100000, checkpoint_every=100000)
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "synthesize"):
        run_stage(stage)
    fake_dvc = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'stages.cli', 'train'], env={**os.environ, "
        "'DVC_STAGE': 'train'}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(child.pid, flush=True)\ntime.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", fake_dvc], cwd=workdir, stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    time.sleep(8)  # the stage is training now
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, os.WNOHANG)
        time.sleep(0.2)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the stage ran on after DVC was killed")
