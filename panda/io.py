"""Image and file helpers shared by all stages: atomic writes and tolerant image reads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from panda.errors import PandaError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


MAX_PIXELS = 400_000_000  # larger images are refused (PIL's bomb guard stops at about 179 MP)
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def _to_uint8(img: Image.Image) -> Image.Image:
    """16- and 32-bit gray images scaled to 8 bits (PIL's convert would clip them at 255)."""
    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return img
    values = np.asarray(img).astype(np.float64)
    sixteen = img.mode.startswith("I;16") or values.max() > 255
    top = 1.0 if img.mode == "F" else (65535.0 if sixteen else 255.0)
    return Image.fromarray(np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8), "L")


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read an image as uint8 (H, W, 3) for RGB or (H, W) for L; 16-bit images are scaled, not clipped.

    Unreadable, undecodable or oversized files raise PandaError naming the file."""
    try:
        with Image.open(path) as img:
            return np.asarray(_to_uint8(img).convert(mode))
    except Image.DecompressionBombError:
        raise PandaError(
            f"image too large: {path} has more than {MAX_PIXELS // 10**6} MP; downscale or remove it"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PandaError(
            f"unreadable image: {path} ({exc.__class__.__name__}); remove or replace the file"
        ) from None


def read_mask(path: str | Path) -> tuple[np.ndarray, str]:
    """A mask file as a boolean array, and the rule that read it.

    - drawn only in the alpha channel (colour channels empty): alpha > 0, rule "alpha";
    - a file holding only 0 and 1 (a common export): > 0, rule "0/1";
    - anything else: at least half the full scale (128 of 255), rule ">=128".
    """
    try:
        with Image.open(path) as img:
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = np.asarray(img.convert("RGBA"))
                if not rgba[..., :3].any() and rgba[..., 3].any():
                    return rgba[..., 3] > 0, "alpha"
            gray = np.asarray(_to_uint8(img).convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise PandaError(
            f"unreadable mask: {path} ({exc.__class__.__name__}); remove or replace the file"
        ) from None
    if gray.max() == 1:
        return gray > 0, "0/1"
    return gray >= 128, ">=128"


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
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
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


def remove_dead_leftovers(folders: Iterable[Path]) -> None:
    """Remove temp folders named `...-<pid>-<random>` whose writing process no longer runs (a kill);
    a live writer's (another run on the same workspace) stay."""
    for folder in folders:
        parts = folder.name.split("-")
        pid = parts[-2] if len(parts) > 2 else ""
        if pid.isdigit() and not pid_alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def clean_stale_temps(target: Path) -> None:
    """Remove temp and old folders beside `target` left by a panda process that no longer runs."""
    remove_dead_leftovers(Path(target).parent.glob(f".{Path(target).name}.*-*"))


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
