"""What every stage command shares: the --params option, user-error handling, data params, paths."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from panda.compute import ComputeParams, in_launched_process, is_main_process, launch_command, set_threads
from panda.errors import PandaError
from panda.params import load_params, section

RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
DIFFUSION_DIR = Path("data/models/diffusion")
SYNTHETIC_DIR = Path("data/synthetic")
SEGMENTER_PATH = Path("data/models/segmenter/model.pt")
CHECKPOINT_DIR = Path("data/checkpoints")
REPORTS_DIR = Path("reports")
FIGURES_DIR = REPORTS_DIR / "figures"


@dataclass
class DataParams:
    dataset: str = "demo"
    category: str = "brick"
    source: str | None = None
    cache_dir: str | None = None
    seed: int = 0


@dataclass
class MlflowParams:
    experiment: str = "panda"


params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("params.yaml"),
    show_default=True,
    help="Parameters file; each stage reads its own section.",
)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PandaError into click's one-line 'Error: ...' with exit code 1, and show warnings briefly."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        warnings.showwarning = lambda msg, *a, **k: click.secho(f"warning: {msg}", fg="yellow", err=True)
        try:
            return fn(*args, **kwargs)
        except PandaError as exc:
            if not is_main_process():  # under a launcher the main process says it once
                raise SystemExit(1) from None
            raise click.ClickException(str(exc)) from None

    return wrapper


def read_sections(
    params_path: Path, **data_overrides: Any
) -> tuple[dict[str, Any], DataParams, MlflowParams]:
    """The whole params dict plus the `data` and `mlflow` sections every stage needs."""
    params = load_params(params_path)
    data = section(params, "data", DataParams, str(params_path), **data_overrides)
    tracking = section(params, "mlflow", MlflowParams, str(params_path))
    return params, data, tracking


def tags(data: DataParams, with_category: bool = True) -> dict[str, str]:
    out = {"dataset": data.dataset}
    if with_category:
        out["category"] = data.category
    return out


def read_compute(params: dict[str, Any], params_path: Path) -> ComputeParams:
    """The `compute` section, with torch's thread count set from it for this process."""
    compute = section(params, "compute", ComputeParams, str(params_path))
    compute.uses_cuda()  # `cuda` where there is none: one clear line now, not in every process
    set_threads(compute)
    return compute


def _command_args(ctx: click.Context) -> list[str]:
    """The current subcommand and its options as given, to run it again under a launcher."""
    args = [ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Option) and value is not None and not param.is_flag:
            args += [param.opts[0], str(value)]
    return args


def relaunched(compute: ComputeParams) -> bool:
    """With `compute.processes > 1` (or an Accelerate config file), run this same stage again under
    `accelerate launch` and return True once it has finished; False where the stage runs here.

    A SIGTERM or Ctrl-C here stops the launcher and its processes too (no orphans writing on).
    """
    if not compute.wants_launcher() or in_launched_process():
        return False
    cmd = launch_command(compute, ["stages.cli", *_command_args(click.get_current_context())])
    proc = subprocess.Popen(cmd, start_new_session=True)

    def stop(signum: int, _frame: Any) -> None:
        os.killpg(proc.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if code:
        raise click.ClickException(
            f"the {compute.processes}-process run under `accelerate launch` failed (exit {code}); "
            "its first error is printed above"
        )
    sys.stdout.flush()
    return True
