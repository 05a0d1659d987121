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


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
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


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            _check_member(info.filename, archive, target)
            mode = info.external_attr >> 16
            if (mode & 0o170000) == 0o120000:
                raise PandaError(f"unsafe archive {archive}: member '{info.filename}' is a symbolic link")
        bad = zf.testzip()
        if bad is not None:
            raise PandaError(f"corrupt archive {archive}: member '{bad}' fails its CRC; download it again")
        zf.extractall(target)


def extract(archive: Path, target: Path) -> None:
    """Extract a .zip or any tar flavour into `target` (which must exist)."""
    archive = Path(archive)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, target)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, target)
        else:
            raise PandaError(
                f"{archive} is not a zip or tar archive (or it is truncated); delete it and download again"
            )
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise PandaError(
            f"archive {archive} is truncated or corrupt ({exc.__class__.__name__}: {exc}); "
            "delete it and download again"
        ) from None
