"""The segmenter as an MLflow model: logged with the pytorch flavour, registered, loaded back by URI.

The model carries what inference needs in its metadata (input size and geometry, normalisation,
threshold, TTA, the training normals' statistics), so `panda predict --model models:/panda@champion`
needs nothing else. Versions are registered under the MLflow experiment's name; the newest gets the
alias `newest`, and `champion` moves to a version when its validation pixel AP is at least the current
champion's (the test split never decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from panda.errors import PandaError
from panda.segment.unet import SegUNet

URI_PREFIXES = ("models:/", "runs:/", "mlflow-artifacts:/", "m-")
NORMALISATION = "(x - 0.5) / 0.5 on RGB in [0, 1]"


@dataclass
class Segmenter:
    """A trained segmenter and how to feed it."""

    model: SegUNet
    image_size: int
    normal_stats: dict
    geometry: str = "squash"  # how images are fitted to image_size (`panda.data.geometry`)
    threshold: float | None = None  # the operating point it was evaluated at (None: from params)
    tta: bool | None = None


def is_model_uri(ref: str | Path) -> bool:
    return str(ref).startswith(URI_PREFIXES)


def log_segmenter(
    mlflow: Any, model: SegUNet, info: dict, threshold: float, tta: bool, registered_name: str, score: float
) -> str:
    """Log `model` in the active run, register a version, set its aliases; returns the model URI."""
    import logging

    from mlflow.models import infer_signature

    # the flavour warns about pickles on every save: the model is ours, and pickle keeps it whole
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    size = int(info["image_size"])
    example = np.zeros((1, 3, size, size), np.float32)
    with torch.no_grad():
        output = model.eval()(torch.from_numpy(example)).numpy()
    metadata = {
        "image_size": size,
        "geometry": info.get("geometry", "squash"),
        "in_channels": int(info["in_channels"]),
        "normalisation": NORMALISATION,
        "threshold": float(threshold),
        "tta": bool(tta),
        "normal_stats": info.get("normal_stats", {}),
        "val_pixel_ap": score,
    }
    logged = mlflow.pytorch.log_model(
        model,
        name="segmenter",
        signature=infer_signature(example, output),
        input_example=example,
        metadata=metadata,
        registered_model_name=registered_name,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy", "cloudpickle"],
        # the whole module: any batch and image size, train()/eval() as usual (pt2 fixes the shapes)
        serialization_format="pickle",
    )
    client = mlflow.MlflowClient()
    version = str(logged.registered_model_version)
    client.set_registered_model_alias(registered_name, "newest", version)
    client.set_model_version_tag(registered_name, version, "val_pixel_ap", str(score))
    try:
        champion = client.get_model_version_by_alias(registered_name, "champion")
        best = float(champion.tags.get("val_pixel_ap", "nan"))
    except Exception:  # no champion yet
        best = float("nan")
    if not best >= score:  # also when there is none (nan)
        client.set_registered_model_alias(registered_name, "champion", version)
    return logged.model_uri


def load_segmenter(ref: str | Path) -> Segmenter:
    """A segmenter from a `model.pt` path or an MLflow model URI (`models:/name@alias`, `runs:/...`)."""
    if not is_model_uri(ref):
        from panda.segment.train import load_model_file

        model, info = load_model_file(Path(ref))
        return Segmenter(
            model, int(info["image_size"]), info.get("normal_stats", {}), info.get("geometry", "squash")
        )
    import mlflow

    from panda.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    try:
        meta = mlflow.models.get_model_info(str(ref)).metadata or {}
        model = mlflow.pytorch.load_model(str(ref), map_location="cpu")
    except Exception as exc:
        raise PandaError(
            f"--model {ref}: no such MLflow model in {tracking_uri()} ({exc.__class__.__name__}); "
            "list them with `mlflow ui`, or pass a model.pt path"
        ) from None
    return Segmenter(
        model.eval(),
        int(meta["image_size"]),
        meta.get("normal_stats", {}),
        meta.get("geometry", "squash"),
        meta.get("threshold"),
        meta.get("tta"),
    )
