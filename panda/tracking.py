"""MLflow tracking: one run per stage, in one store shared by the repo and its DVC experiment copies."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from panda.compute import is_main_process
from panda.io import pid_alive

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


# A tracking store that is down must cost seconds, not minutes: MLflow's HTTP client retries 7 times
# with back-off by default. A user's own MLFLOW_HTTP_* settings win.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
OFFLINE_DIR = Path("reports") / "mlflow-offline"


class StageRun:
    """The stage's MLflow run, as the few calls stages make on it.

    When the tracking store fails (down, read-only, corrupt), the run goes on offline: what it would
    have logged is written to `reports/mlflow-offline/<stage>-<time>.json` and one warning says where.
    Tracking never costs a stage its outputs.
    """

    def __init__(self, stage: str, mlflow: Any | None = None, run_id: str | None = None) -> None:
        self.stage, self.mlflow, self.run_id = stage, mlflow, run_id
        self.parent_id: str | None = None
        self.step_keys: set[str] = set()  # curves; a summary value of the same name would add a step-0 point
        self.offline: dict[str, Any] = {"stage": stage, "params": {}, "metrics": {}, "tags": {}, "steps": []}
        self.offline_path: Path | None = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> bool:
        if self.mlflow is None:
            return False
        try:
            fn(*args, **kwargs)
            return True
        except Exception as exc:  # any store failure: go offline, keep the stage running
            self.go_offline(f"{what} failed ({exc.__class__.__name__}: {str(exc)[:200]})")
            return False

    def go_offline(self, why: str) -> None:
        if self.offline_path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            self.offline_path = project_root() / OFFLINE_DIR / f"{self.stage}-{stamp}-{os.getpid()}.json"
            warnings.warn(
                f"MLflow tracking at {tracking_uri()} is unavailable: {why}; this stage goes on and logs "
                f"to {self.offline_path} instead",
                stacklevel=3,
            )
        if self.mlflow is not None:
            with contextlib.suppress(Exception):  # leave no run active in this process
                self.mlflow.end_run(status="FAILED")
        self.mlflow = None
        self.flush()

    def flush(self) -> None:
        if self.offline_path is not None:
            self.offline_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.offline_path.with_name(self.offline_path.name + ".tmp")
            tmp.write_text(json.dumps(self.offline, indent=1, default=str))
            os.replace(tmp, self.offline_path)

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {k: str(v)[:500] for k, v in params.items()}
        self.offline["params"].update(values)
        if not self._call("logging params", lambda: self.mlflow.log_params(values)):
            self.flush()

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """Step metrics from a training loop (the engine calls this on the main process only)."""
        self.offline["steps"].append({"step": step, **metrics})
        self.step_keys.update(metrics)
        if not self._call("logging step metrics", lambda: self.mlflow.log_metrics(dict(metrics), step=step)):
            self.flush()

    def log_metrics(self, metrics: Mapping[str, Any]) -> None:
        values = {
            k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k not in self.step_keys
        }
        self.offline["metrics"].update(values)
        if not self._call("logging metrics", lambda: self.mlflow.log_metrics(values)):
            self.flush()

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        values = {k: str(v) for k, v in tags.items()}
        self.offline["tags"].update(values)
        if not self._call("setting tags", lambda: self.mlflow.set_tags(values)):
            self.flush()

    def close_pipeline(self, metrics: Mapping[str, Any]) -> None:
        """Put the headline `metrics` on the pipeline's run too (the runs table compares them) and
        end it: the last stage of an execution calls this."""
        if self.mlflow is None or self.parent_id is None:
            return
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        client = self.mlflow.MlflowClient()
        self._call(
            "closing the pipeline run",
            lambda: client.log_batch(
                self.parent_id,
                metrics=[
                    self.mlflow.entities.Metric(k, v, int(time.time() * 1000), 0) for k, v in values.items()
                ],
            ),
        )
        self._call("closing the pipeline run", client.set_terminated, self.parent_id, "FINISHED")

    def log_dataset(self, frame: Any, source: str | Path, name: str) -> None:
        """`frame` (a manifest) as an MLflow dataset input of this run, with its digest."""

        def log() -> None:
            import mlflow.data

            with warnings.catch_warnings():  # MLflow registers the local-file source twice and says so
                warnings.simplefilter("ignore")
                dataset = mlflow.data.from_pandas(frame, source=str(source), name=name)
            self.mlflow.log_input(dataset, context="training")
            self.offline["tags"][f"dataset.{name}"] = dataset.digest

        self._call("logging the dataset", log)

    def log_model(self, log: Any) -> str | None:
        """`log(mlflow)` (e.g. `panda.segment.mlflow_model.log_segmenter`); its result, None offline."""
        result: list[Any] = []
        if self._call("logging the model", lambda: result.append(log(self.mlflow))):
            return result[0]
        return None

    def log_artifact(self, path: str | Path) -> None:
        self.offline.setdefault("artifacts", []).append(str(path))
        if not self._call("logging an artifact", lambda: self.mlflow.log_artifact(str(path))):
            self.flush()


def close_killed_runs(mlflow: Any, experiment: str) -> int:
    """Mark this host's RUNNING runs whose process is gone (a killed stage) as KILLED."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    host = socket.gethostname()
    runs = mlflow.search_runs(
        [exp.experiment_id], filter_string="attributes.status = 'RUNNING'", output_format="list"
    )
    closed = 0
    for run in runs:
        tags = run.data.tags
        pid = tags.get("pid", "")
        if tags.get("host") == host and pid.isdigit() and not pid_alive(int(pid)):
            mlflow.MlflowClient().set_terminated(run.info.run_id, status="KILLED")
            closed += 1
    return closed


def code_is_dirty(cwd: Path | None = None) -> bool:
    """Uncommitted changes to what decides results (code, params, pipeline); outputs do not count."""
    paths = ["panda", "stages", "params.yaml", "dvc.yaml", "pyproject.toml"]
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--", *paths],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.stdout.strip())


def pipeline_identity() -> tuple[str, str]:
    """(key, run name) of the pipeline execution a stage belongs to: the DVC experiment's name, or
    for a workspace `dvc repro` the commit (with `-dirty` for uncommitted code or params)."""
    if os.environ.get("DVC_EXP_NAME"):
        return f"exp:{os.environ['DVC_EXP_NAME']}", os.environ["DVC_EXP_NAME"]
    name = f"workspace@{git_commit()[:8]}" + ("-dirty" if code_is_dirty() else "")
    return f"ws:{name}", name


def pipeline_parent(mlflow: Any, experiment_id: str, params: Mapping[str, Any]) -> str:
    """The run of this pipeline execution: the open one of the same key, else a new one that holds
    the whole params. `evaluate`, the last stage, closes it (`StageRun.close_pipeline`)."""
    key, name = pipeline_identity()
    found = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`panda.pipeline` = '{key}' and attributes.status = 'RUNNING'",
        output_format="list",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    tags = {"panda.pipeline": key, "mlflow.runName": name, "git_commit": git_commit()}
    if key.startswith("ws:") and name.endswith("-dirty"):
        tags["dirty"] = "true"
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    client.log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(k, str(v)[:500]) for k, v in flatten(params).items()],
    )
    return run.info.run_id


def _start(
    stage: str, experiment: str, tags: dict[str, str], all_params: Mapping[str, Any] | None
) -> tuple[Any, Any, str | None]:
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    ensure_experiment(mlflow, experiment, artifact_location(experiment))
    exp = mlflow.set_experiment(experiment)
    close_killed_runs(mlflow, experiment)
    # a pipeline execution is what DVC runs (it sets DVC_STAGE); a stage run by hand stands alone
    nested = all_params is not None and bool(os.environ.get("DVC_STAGE"))
    parent = pipeline_parent(mlflow, exp.experiment_id, all_params) if nested else None
    return mlflow, mlflow.start_run(run_name=stage, tags=tags, parent_run_id=parent), parent


@contextlib.contextmanager
def stage_run(
    stage: str,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    all_params: Mapping[str, Any] | None = None,
) -> Iterator[StageRun | None]:
    """An MLflow run around the stage's work, tagged for filtering; yields it as a `StageRun`.

    With `all_params` (the whole params file) the run is nested under its pipeline execution's run
    (`pipeline_parent`). Under a launcher only the main process (rank 0) tracks: the others get None
    and log nothing. A stage that raises ends its run as FAILED with the error as a tag.
    """
    if not is_main_process():
        yield None
        return
    for key, value in QUICK_HTTP.items():
        os.environ.setdefault(key, value)
    all_tags = {"stage": stage, "git_commit": git_commit(), "host": socket.gethostname()}
    all_tags["pid"] = str(os.getpid())  # lets a later stage tell a killed run from a live one
    if os.environ.get("DVC_EXP_NAME"):
        all_tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("WORLD_SIZE"):
        all_tags["processes"] = os.environ["WORLD_SIZE"]
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    run = StageRun(stage)
    run.offline["tags"].update(all_tags)
    try:
        run.mlflow, active, run.parent_id = _start(stage, experiment, all_tags, all_params)
        run.run_id = active.info.run_id
    except Exception as exc:  # the store is down, read-only or corrupt: work on, log offline
        run.go_offline(f"starting the run failed ({exc.__class__.__name__}: {str(exc)[:200]})")
    run.log_params(flatten(params))
    try:
        yield run
    except BaseException as exc:
        if run.mlflow is not None:
            run.set_tags({"error": f"{exc.__class__.__name__}: {exc}"[:500]})
            run._call("ending the run", run.mlflow.end_run, status="FAILED")
        raise
    if run.mlflow is not None:
        run._call("ending the run", run.mlflow.end_run)
