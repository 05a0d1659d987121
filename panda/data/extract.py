"""Archive extraction that refuses members escaping the target (absolute, `..`, outside links)."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from panda.errors import PandaError


def _check_member(name: str, archive: Path, target: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise PandaError(
            f"unsafe archive {archive}: member '{name}' has an absolute path; refusing to extract"
        )
    if ".." in pure.parts:
        raise PandaError(f"unsafe archive {archive}: member '{name}' contains '..'; refusing to extract")
    resolved = (target / pure).resolve()
    if not resolved.is_relative_to(target.resolve()):
        raise PandaError(f"unsafe archive {archive}: member '{name}' leaves the target; refusing to extract")


MAX_RATIO = 50  # unpacked / packed bytes above this: not images (PNG/JPEG barely compress) but a bomb


def _check_size(archive: Path, unpacked: int, limit: int) -> None:
    packed = max(archive.stat().st_size, 1)
    if unpacked > limit or unpacked > MAX_RATIO * packed:
        raise PandaError(
            f"refusing to extract {archive}: it would unpack to {unpacked / 2**30:.2f} GiB from "
            f"{packed / 2**20:.1f} MiB (limit {limit / 2**30:.1f} GiB for this dataset, at most "
            f"{MAX_RATIO}x its size); it is not the dataset's archive"
        )


def _extract_tar(archive: Path, target: Path, limit: int) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        _check_size(archive, sum(m.size for m in members if m.isfile()), limit)
        for m in members:
            _check_member(m.name, archive, target)
            if m.issym() or m.islnk():
                link = PurePosixPath(m.linkname)
                base = PurePosixPath(m.name).parent if m.issym() else PurePosixPath()
                dest = (target / base / link).resolve()
                if link.is_absolute() or not dest.is_relative_to(target.resolve()):
                    raise PandaError(
                        f"unsafe archive {archive}: link '{m.name}' -> '{m.linkname}' leaves the target"
                    )
            elif not (m.isfile() or m.isdir()):
                raise PandaError(f"unsafe archive {archive}: member '{m.name}' is a device or fifo")
        tar.extractall(target, members=members, filter="data")


def _extract_zip(archive: Path, target: Path, limit: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        _check_size(archive, sum(i.file_size for i in zf.infolist()), limit)
        for info in zf.infolist():
            _check_member(info.filename, archive, target)
            mode = info.external_attr >> 16
            if (mode & 0o170000) == 0o120000:
                raise PandaError(f"unsafe archive {archive}: member '{info.filename}' is a symbolic link")
        bad = zf.testzip()
        if bad is not None:
            raise PandaError(f"corrupt archive {archive}: member '{bad}' fails its CRC; download it again")
        zf.extractall(target)


def extract(archive: Path, target: Path, max_bytes: int = 4 * 2**30) -> None:
    """Extract a .zip or any tar flavour into `target` (which must exist), at most `max_bytes`."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, target, max_bytes)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, target, max_bytes)
        else:
            raise PandaError(
                f"{archive} is not a zip or tar archive (or it is truncated); delete it and download again"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise PandaError(
            f"archive {archive} is truncated or corrupt ({exc.__class__.__name__}: {exc}); "
            "delete it and download again"
        ) from None
