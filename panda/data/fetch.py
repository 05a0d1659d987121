"""HTTP download with resume (HTTP Range), streaming progress and sha256 verification."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from panda.errors import PandaError

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None, origin: str, delete: bool = True) -> None:
    """Raise when a known checksum does not match; downloaded (not user-owned) files are deleted."""
    if not expected:
        return
    actual = sha256_of(path)
    if actual != expected:
        if delete:
            path.unlink(missing_ok=True)
        fate = "the file was deleted; download again" if delete else "check the file"
        raise PandaError(
            f"checksum mismatch for {origin}: expected sha256 {expected}, got {actual}; "
            f"{fate} or pass a correct copy with --source"
        )


def download(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest`, resuming `dest.part` when the server honours Range requests.

    An existing `dest` whose checksum matches is reused, so a second call does no network I/O.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        verify_sha256(dest, sha256, str(dest))
        if dest.exists():
            return dest
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "panda-downloader"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete
            os.replace(part, dest)
            verify_sha256(dest, sha256, url)
            return dest
        raise PandaError(
            f"download failed: {url} answered HTTP {exc.code}; use --source with a mirror URL or a local copy"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PandaError(
            f"cannot reach {url} ({reason}); download it by hand and pass --source PATH (or a mirror URL)"
        ) from None
    with response:
        resumed = offset > 0 and response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        try:
            with (
                open(part, "ab" if resumed else "wb") as fh,
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name) as bar,
            ):
                while block := response.read(CHUNK):
                    fh.write(block)
                    bar.update(len(block))
        except (OSError, urllib.error.URLError) as exc:
            raise PandaError(
                f"download of {url} interrupted ({exc}); run the same command again to resume"
            ) from None
    if total is not None and part.stat().st_size < total:
        raise PandaError(
            f"download of {url} stopped at {part.stat().st_size} of {total} bytes; run again to resume"
        )
    os.replace(part, dest)
    verify_sha256(dest, sha256, url)
    return dest
