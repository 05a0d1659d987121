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


def default_tracking_uri(start: Path | None = None) -> str:
    """The embedded store: SQLite `mlflow.db` at the main repo root."""
    return f"sqlite:///{project_root(start) / 'mlflow.db'}"


def tracking_uri(start: Path | None = None) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the embedded store at the main repo root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(start)


def artifact_location(experiment: str, start: Path | None = None) -> str | None:
    """Where a new experiment's artifacts go in the embedded store: `mlruns/<experiment>` at the root.

    Left to MLflow, the location is relative to the working directory of whichever process creates
    the experiment first; from a `dvc exp run --temp/--queue` copy that is a temporary folder DVC
    deletes. None (the store's own choice) for any other store, e.g. a tracking server.
    """
    if tracking_uri(start) != default_tracking_uri(start):
        return None
    return (project_root(start) / "mlruns" / experiment).as_uri()


def ensure_experiment(mlflow: Any, experiment: str, location: str | None) -> None:
    """Create `experiment` at `location` unless it exists (safe when two stages race to create it)."""
    if mlflow.get_experiment_by_name(experiment) is not None:
        return
    try:
        mlflow.create_experiment(experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        if mlflow.get_experiment_by_name(experiment) is None:
            raise


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


class StageRun:
    """The active MLflow run of a stage, as the few calls stages make on it."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow, self.run_id = mlflow, run.info.run_id

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """Step metrics from a training loop (the engine calls this on the main process only)."""
        self.mlflow.log_metrics(dict(metrics), step=step)

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, int | float)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path) -> None:
        self.mlflow.log_artifact(str(path))


@contextlib.contextmanager
def stage_run(
    stage: str, experiment: str, params: Mapping[str, Any], tags: Mapping[str, str] | None = None
) -> Iterator[StageRun | None]:
    """Start an MLflow run for `stage`, tagged for later filtering; yields it as a `StageRun`.

    Under a launcher only the main process (rank 0) tracks: the others get None and log nothing.
    """
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    ensure_experiment(mlflow, experiment, artifact_location(experiment))
    mlflow.set_experiment(experiment)
    all_tags = {"stage": stage, "git_commit": git_commit()}
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("WORLD_SIZE"):
        all_tags["processes"] = os.environ["WORLD_SIZE"]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    with mlflow.start_run(run_name=stage, tags=all_tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield StageRun(mlflow, run)
