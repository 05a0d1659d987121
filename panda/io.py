"""Image and file helpers shared by all stages: atomic writes and tolerant image reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from panda.errors import PandaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read an image as uint8 (H, W, 3) for RGB or (H, W) for L; unreadable files raise PandaError."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise PandaError(
            f"unreadable image: {path} ({exc.__class__.__name__}); remove or replace the file"
        ) from None


def save_png(array: np.ndarray, path: str | Path) -> None:
    """Write uint8 array as PNG via a temp file so a crash never leaves a truncated image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)


def job_key(config: dict[str, Any], *tensors: Any) -> str:
    """Identify a training job by its settings and exact input data (any device or dtype), for safe
    checkpoint reuse."""
    import torch

    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def write_json(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def replace_dir(tmp: Path, target: Path) -> None:
    """Swap the finished folder `tmp` in as `target` (the old one is removed after the swap)."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def temp_dir_beside(target: Path) -> Path:
    """A fresh hidden folder next to `target`, on the same file system, for `replace_dir`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp dir beside `target`; on success it replaces `target`, on error it is removed."""
    target = Path(target)
    tmp = temp_dir_beside(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)
