"""Where each supported dataset lives on the internet and how to recognise its extracted root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _has_mvtec_category(d: Path) -> bool:
    return any((c / "train" / "good").is_dir() for c in d.iterdir() if c.is_dir())


def _has_btad_category(d: Path) -> bool:
    return any((c / "train" / "ok").is_dir() for c in d.iterdir() if c.is_dir())


def _has_mtd_classes(d: Path) -> bool:
    return (d / "MT_Free").is_dir()


def _has_custom_layout(d: Path) -> bool:
    return (d / "train").is_dir() and (d / "test").is_dir()


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    url: str | None  # None: nothing to download (demo, custom)
    sha256: str | None  # None: no stable checksum (e.g. a git branch archive)
    filename: str | None
    is_root: Callable[[Path], bool]
    homepage: str = ""
    max_extract_bytes: int = 4 * 2**30  # refuse archives that would unpack to more (archive bombs)


DATASETS: dict[str, DatasetSpec] = {
    "mvtec": DatasetSpec(
        name="mvtec",
        url=(
            "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
            "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
        ),
        sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
        filename="mvtec_anomaly_detection.tar.xz",
        is_root=_has_mvtec_category,
        homepage="https://www.mvtec.com/company/research/datasets/mvtec-ad",
        max_extract_bytes=8 * 2**30,  # 4.9 GiB packed, about 5.3 GiB unpacked
    ),
    "btad": DatasetSpec(
        name="btad",
        url="https://avires.dimi.uniud.it/papers/btad/btad.zip",
        sha256="461c9387e515bfed41ecaae07c50cf6b10def647b36c9e31d239ab2736b10d2a",
        filename="btad.zip",
        is_root=_has_btad_category,
        homepage="https://avires.dimi.uniud.it/papers/btad/",
        max_extract_bytes=4 * 2**30,
    ),
    "mtd": DatasetSpec(
        name="mtd",
        url="https://github.com/abin24/Magnetic-tile-defect-datasets./archive/refs/heads/master.zip",
        sha256=None,
        filename="magnetic-tile-defect-master.zip",
        is_root=_has_mtd_classes,
        homepage="https://github.com/abin24/Magnetic-tile-defect-datasets.",
        max_extract_bytes=2**30,  # about 150 MB unpacked
    ),
    "custom": DatasetSpec(name="custom", url=None, sha256=None, filename=None, is_root=_has_custom_layout),
    "demo": DatasetSpec(name="demo", url=None, sha256=None, filename=None, is_root=_has_mvtec_category),
}


def find_root(tree: Path, is_root: Callable[[Path], bool], max_depth: int = 3) -> Path | None:
    """Breadth-first search for the folder that holds the dataset (archives often add a wrapper)."""
    level = [tree]
    for _ in range(max_depth + 1):
        for d in level:
            if is_root(d):
                return d
        level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir()]
    return None
