"""MLflow store location: repo root, also from DVC experiment working copies; env var wins."""

from __future__ import annotations

from pathlib import Path

import mlflow

from panda.tracking import project_root, stage_run, tracking_uri


def _repo_with_dvc_temp_copy(root: Path) -> Path:
    """A repo root and the kind of working copy `dvc exp run --temp` makes under it."""
    (root / "dvc.yaml").write_text("stages: {}\n")
    copy = root / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    return copy


def test_store_is_main_repo_root_inside_dvc_temp_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = _repo_with_dvc_temp_copy(tmp_path)
    assert project_root(copy) == tmp_path.resolve()
    assert project_root(copy / "data") == tmp_path.resolve()
    assert tracking_uri(copy) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(copy) == "http://127.0.0.1:5000"


def test_artifacts_of_a_run_from_a_dvc_temp_copy_land_at_the_main_root(tmp_path, monkeypatch):
    """The first run may start in a temp copy DVC deletes afterwards; its artifacts must not go there."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = _repo_with_dvc_temp_copy(tmp_path)
    (copy / "note.txt").write_text("x")
    monkeypatch.chdir(copy)
    with stage_run("train", "exp-in-copy", {"a": 1}) as run:
        mlflow.log_artifact("note.txt")
    uri = mlflow.get_run(run.run_id).info.artifact_uri
    assert uri.startswith((tmp_path.resolve() / "mlruns" / "exp-in-copy").as_uri())
    assert not (copy / "mlruns").exists()
    assert list((tmp_path / "mlruns").rglob("note.txt"))
