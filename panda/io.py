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


OUTPUT_MARKER = ".panda-output"  # in every folder panda writes whole; names what it holds


def output_kind(folder: Path) -> str | None:
    """What panda wrote `folder` as (its marker), or None for a folder panda did not make."""
    try:
        return (Path(folder) / OUTPUT_MARKER).read_text().strip()
    except OSError:
        return None


def check_replaceable(target: Path, kind: str) -> None:
    """Refuse to replace anything but a missing or empty folder, or one panda wrote as `kind`."""
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise PandaError(f"{target} is a file, not an output folder; choose another --out")
    if output_kind(target) == kind or not any(target.iterdir()):
        return
    made = output_kind(target)
    what = f"panda's {made} output" if made else "a folder panda did not make"
    raise PandaError(
        f"refusing to replace {target}: it holds {what}, not {kind}; choose an empty or new folder "
        f"(or remove it yourself)"
    )


def replace_dir(tmp: Path, target: Path, kind: str) -> None:
    """Swap the finished folder `tmp` in as `target` (the old one is removed after the swap)."""
    check_replaceable(target, kind)
    (tmp / OUTPUT_MARKER).write_text(kind + "\n")
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22
    return True


def clean_stale_temps(target: Path) -> None:
    """Remove temp and old folders beside `target` left by a panda process that no longer runs."""
    for leftover in Path(target).parent.glob(f".{Path(target).name}.*-*"):
        pid = leftover.name.rsplit(".", 1)[-1].split("-")[1] if "-" in leftover.name else ""
        if pid.isdigit() and not pid_alive(int(pid)) and leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def temp_dir_beside(target: Path) -> Path:
    """A fresh hidden folder next to `target` (same file system, for `replace_dir`), named after this
    process so that a later run can tell a killed run's leftover from a live one's."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))


@contextlib.contextmanager
def atomic_dir(target: str | Path, kind: str) -> Iterator[Path]:
    """Yield a temp dir beside `target`; on success it replaces `target`, on error it is removed.

    `target` must be missing, empty, or panda's own `kind` output (see `check_replaceable`)."""
    target = Path(target)
    check_replaceable(target, kind)
    tmp = temp_dir_beside(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target, kind)
