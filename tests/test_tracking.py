"""MLflow store location: repo root, also from DVC experiment working copies; env var wins."""

from __future__ import annotations

from panda.tracking import project_root, tracking_uri


def test_store_is_main_repo_root_inside_dvc_temp_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    (copy / "dvc.yaml").write_text("stages: {}\n")
    assert project_root(copy) == tmp_path.resolve()
    assert project_root(copy / "data") == tmp_path.resolve()
    assert tracking_uri(copy) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(copy) == "http://127.0.0.1:5000"
