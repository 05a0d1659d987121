"""MLflow tracking: one run per stage, in one store shared by the repo and its DVC experiment copies."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

EXP_TMP_MARKER = os.path.join(".dvc", "tmp", "exps")


def project_root(start: Path | None = None) -> Path:
    """The main repo root, also from inside a `dvc exp run --temp/--queue` copy under .dvc/tmp/exps."""
    here = Path(start or Path.cwd()).resolve()
    text = str(here)
    marker = os.sep + EXP_TMP_MARKER + os.sep
    if marker in text + os.sep:
        return Path(text.split(marker)[0])
    for d in [here, *here.parents]:
        if (d / "dvc.yaml").is_file() or (d / ".git").exists():
            return d
    return here


def tracking_uri(start: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` when set, else SQLite `mlflow.db` at the main repo root."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{project_root(start) / 'mlflow.db'}"


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def stage_run(
    stage: str, experiment: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None
) -> Iterator[Any]:
    """Start an MLflow run for `stage`, tagged for later filtering; yields the mlflow module."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    all_tags = {"stage": stage, "git_commit": git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    with mlflow.start_run(run_name=stage, tags=all_tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield run
