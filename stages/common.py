"""What every stage command shares: the --params option, user-error handling, data params, paths."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

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
    dataset: str
    category: str
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
