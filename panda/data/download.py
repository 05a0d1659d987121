"""Get a dataset into `out_dir` in its own layout: download, verify, extract, normalise, rename."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from panda.data.demo import generate_demo
from panda.data.extract import extract
from panda.data.fetch import download, verify_sha256
from panda.data.registry import DATASETS, DatasetSpec, find_root
from panda.errors import PandaError
from panda.io import OUTPUT_MARKER, atomic_dir

STAMP = ".panda-download.json"


@dataclass
class DownloadResult:
    out_dir: Path
    skipped: bool
    origin: str


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "panda"


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://", "file://"))


def rooted_source(source: str | None, root: Path) -> str | None:
    """A relative local `data.source` from params.yaml names a path under the repo root `root`, also
    when a stage runs in a DVC experiment's temporary copy (`dvc exp run --temp`, queues)."""
    if source is None or _is_url(source) or Path(source).expanduser().is_absolute():
        return source
    return str(root / source)


def _bmp_to_png(root: Path) -> int:
    """BTAD ships .bmp images; the rest of panda expects lossless .png."""
    bmps = sorted(root.rglob("*.bmp"))
    for bmp in tqdm(bmps, desc="bmp -> png", disable=not bmps):
        with Image.open(bmp) as img:
            img.save(bmp.with_suffix(".png"))
        bmp.unlink()
    return len(bmps)


def _fetch_archive(spec: DatasetSpec, source: str | None, cache_dir: Path) -> tuple[Path, str]:
    """Return a local archive path for a URL/mirror/local-archive source."""
    if source is None:
        if spec.url is None:
            raise PandaError(
                f"dataset '{spec.name}' has no public URL; set data.source (or --source) to a folder"
            )
        url = spec.url
    elif _is_url(source):
        url = source
    else:
        path = Path(source).expanduser()
        verify_sha256(path, spec.sha256, str(path), delete=False)
        return path, str(path)
    if url.startswith("file://"):
        path = Path(url[len("file://") :])
        verify_sha256(path, spec.sha256, url, delete=False)
        return path, url
    name = spec.filename or Path(url).name
    return download(url, cache_dir / name, sha256=spec.sha256), url


def folder_inventory(root: Path) -> dict[str, int]:
    """File count and total bytes under `root` (the stamp keeps them: a damaged copy is noticed)."""
    files = [p for p in Path(root).rglob("*") if p.is_file() and p.name not in (STAMP, OUTPUT_MARKER)]
    return {"n_files": len(files), "n_bytes": sum(p.stat().st_size for p in files)}


def copy_regular_files(source: Path, target: Path) -> int:
    """Copy the regular files under `source` into `target`; symbolic links are neither followed nor
    copied (a link can loop, or lead out of the dataset). Returns how many links were skipped."""
    skipped = 0
    for folder, dirs, files in os.walk(source, followlinks=False):
        here = Path(folder)
        rel = here.relative_to(source)
        for name in list(dirs):
            if (here / name).is_symlink():
                dirs.remove(name)
                skipped += 1
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            path = here / name
            if path.is_symlink():
                skipped += 1
            elif path.is_file():
                shutil.copy2(path, target / rel / name)
    return skipped


def downloaded_dataset(out_dir: Path) -> str | None:
    """The dataset name recorded by the last completed download into `out_dir`, if any."""
    stamp = Path(out_dir) / STAMP
    try:
        return json.loads(stamp.read_text()).get("dataset")
    except (OSError, json.JSONDecodeError):
        return None


def fetch_dataset(
    dataset: str, out_dir: Path, source: str | None = None, cache_dir: Path | None = None, seed: int = 0
) -> DownloadResult:
    """Materialise `dataset` at `out_dir` atomically; a second identical call is a no-op."""
    if dataset not in DATASETS:
        raise PandaError(f"unknown data.dataset '{dataset}'; choose one of: {', '.join(DATASETS)}")
    spec = DATASETS[dataset]
    out_dir = Path(out_dir)
    wanted = {"dataset": dataset, "source": source, "seed": seed if dataset == "demo" else None}
    stamp = out_dir / STAMP
    if stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            recorded = {}
        inventory = recorded.pop("inventory", None)
        if recorded == wanted and inventory == folder_inventory(out_dir):
            return DownloadResult(out_dir, skipped=True, origin=str(source or spec.url or "generated"))
        if recorded == wanted:
            note = f"{out_dir} differs from its download (files missing or changed); fetching again"
            warnings.warn(note, stacklevel=2)

    with atomic_dir(out_dir, "raw") as tmp:
        if dataset == "demo" and source is None:
            generate_demo(tmp, seed=seed)
            origin = f"generated (seed {seed})"
        else:
            if source is None and spec.url is None:
                raise PandaError(
                    f"data.dataset '{dataset}' needs data.source (or --source): the dataset folder"
                )
            local = Path(source).expanduser() if source and not _is_url(source) else None
            if local is not None and local.is_dir():
                if out_dir.resolve().is_relative_to(local.resolve()):
                    raise PandaError(
                        f"data.source = {source} contains the output folder {out_dir}; "
                        "point data.source at the dataset's own folder"
                    )
                staging, origin = local, str(local)
            else:
                if local is not None and not local.exists():
                    raise PandaError(f"--source {source}: no such file or folder")
                archive, origin = _fetch_archive(spec, source, cache_dir or default_cache_dir())
                staging = tmp / ".extract"
                staging.mkdir()
                extract(archive, staging, spec.max_extract_bytes)
            root = find_root(staging, spec.is_root)
            if root is None:
                raise PandaError(
                    f"{origin} does not look like the '{dataset}' dataset layout; "
                    "check data.dataset and the README section on datasets"
                )
            if staging == local:
                if skipped := copy_regular_files(root, tmp):
                    note = f"{skipped} symbolic links under {root} skipped (links are not followed)"
                    warnings.warn(note, stacklevel=2)
            else:
                for child in list(root.iterdir()):
                    shutil.move(str(child), tmp / child.name)
                shutil.rmtree(staging, ignore_errors=True)
            if dataset == "btad":
                _bmp_to_png(tmp)
        (tmp / STAMP).write_text(json.dumps({**wanted, "inventory": folder_inventory(tmp)}))
    return DownloadResult(out_dir, skipped=False, origin=origin)
