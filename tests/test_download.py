"""Download, resume, checksum and safe extraction against a real loopback HTTP server."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from panda.data import registry
from panda.data.download import fetch_dataset, rooted_source
from panda.data.extract import extract
from panda.data.fetch import download
from panda.data.layouts import scan
from panda.errors import PandaError
from tests.conftest import make_btad_tree, make_mtd_tree, make_mvtec_tree


def _tar_xz(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:xz") as tar:
        for child in sorted(src.iterdir()):
            tar.add(child, arcname=child.name)
    return dest


def _zip(src: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    return dest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_spec(monkeypatch):
    """Point a registry entry at the loopback server with the archive's real checksum."""

    def point(name: str, url: str, sha: str | None, filename: str) -> None:
        spec = registry.DATASETS[name]
        monkeypatch.setitem(
            registry.DATASETS,
            name,
            registry.DatasetSpec(name, url, sha, filename, spec.is_root, spec.homepage),
        )

    return point


@pytest.mark.parametrize(
    ("name", "builder", "packer", "filename"),
    [
        ("mvtec", make_mvtec_tree, _tar_xz, "mvtec.tar.xz"),
        ("btad", make_btad_tree, _zip, "btad.zip"),
        ("mtd", make_mtd_tree, _zip, "mtd.zip"),
    ],
)
def test_download_each_layout(tmp_path, http_server, fake_spec, name, builder, packer, filename):
    base_url, served, handler = http_server
    archive = packer(builder(tmp_path / "src"), served / filename)
    fake_spec(name, f"{base_url}/{filename}", _sha(archive), filename)
    out = tmp_path / "raw"
    result = fetch_dataset(name, out, cache_dir=tmp_path / "cache")
    assert not result.skipped
    records = scan(name, out)
    assert records["is_normal"].any() and (~records["is_normal"]).any()
    assert (records.loc[~records["is_normal"], "mask"] != "").all()
    if name == "btad":
        assert not list(out.rglob("*.bmp")) and list(out.rglob("*.png"))
    # a second run is a no-op: no new request, same files
    n_requests = len(handler.log)
    assert fetch_dataset(name, out, cache_dir=tmp_path / "cache").skipped
    assert len(handler.log) == n_requests


def test_checksum_mismatch_is_reported_and_file_removed(tmp_path, http_server, fake_spec):
    base_url, served, _ = http_server
    _tar_xz(make_mvtec_tree(tmp_path / "src"), served / "m.tar.xz")
    fake_spec("mvtec", f"{base_url}/m.tar.xz", "0" * 64, "m.tar.xz")
    with pytest.raises(PandaError, match="checksum mismatch"):
        fetch_dataset("mvtec", tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "m.tar.xz").exists()
    assert not (tmp_path / "raw").exists()


def test_truncated_archive_is_rejected(tmp_path, http_server, fake_spec):
    base_url, served, _ = http_server
    full = _tar_xz(make_mvtec_tree(tmp_path / "src"), tmp_path / "full.tar.xz").read_bytes()
    (served / "t.tar.xz").write_bytes(full[: len(full) // 2])
    fake_spec("mvtec", f"{base_url}/t.tar.xz", None, "t.tar.xz")
    with pytest.raises(PandaError, match="truncated or corrupt|not a zip or tar"):
        fetch_dataset("mvtec", tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "raw").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw.tmp")]


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_path_traversal_member_is_rejected(tmp_path, member):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(PandaError, match="unsafe archive"):
        extract(archive, target)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_traversal_and_escaping_symlink_are_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.txt", "evil")
    (tmp_path / "out").mkdir()
    with pytest.raises(PandaError, match="contains '..'"):
        extract(archive, tmp_path / "out")
    link_tar = tmp_path / "link.tar"
    with tarfile.open(link_tar, "w") as tar:
        info = tarfile.TarInfo("data/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tar.addfile(info)
    with pytest.raises(PandaError, match="leaves the target"):
        extract(link_tar, tmp_path / "out")


def test_interrupted_download_resumes_with_range(tmp_path, http_server):
    base_url, served, handler = http_server
    payload = bytes(range(256)) * 4000
    (served / "big.bin").write_bytes(payload)
    handler.cut_after["/big.bin"] = len(payload) // 3
    dest = tmp_path / "dl" / "big.bin"
    sha = hashlib.sha256(payload).hexdigest()
    with pytest.raises(PandaError, match="run (the same command )?again to resume"):
        download(f"{base_url}/big.bin", dest, sha256=sha, timeout=5)
    part = dest.with_name("big.bin.part")
    assert part.stat().st_size == len(payload) // 3
    download(f"{base_url}/big.bin", dest, sha256=sha, timeout=5)
    assert dest.read_bytes() == payload and not part.exists()
    assert handler.log[-1]["range"] == f"bytes={len(payload) // 3}-"


def test_no_network_names_url_and_source(tmp_path):
    url = "http://127.0.0.1:9/mvtec.tar.xz"
    with pytest.raises(PandaError, match=r"127\.0\.0\.1:9/mvtec.tar.xz.*--source"):
        download(url, tmp_path / "x.tar.xz", timeout=2)


def test_local_folder_and_archive_sources(tmp_path):
    src = make_mtd_tree(tmp_path / "src")
    out = fetch_dataset("mtd", tmp_path / "raw", source=str(src))
    assert (out.out_dir / "MT_Free").is_dir()
    archive = _zip(src, tmp_path / "mtd.zip")
    out2 = fetch_dataset("mtd", tmp_path / "raw2", source=str(archive))
    assert sorted(p.name for p in (out2.out_dir / "MT_Crack" / "Imgs").iterdir()) == sorted(
        p.name for p in (out.out_dir / "MT_Crack" / "Imgs").iterdir()
    )
    with pytest.raises(PandaError, match="does not look like the 'mvtec' dataset"):
        fetch_dataset("mvtec", tmp_path / "raw3", source=str(src))
    with pytest.raises(PandaError, match="no such file"):
        fetch_dataset("mtd", tmp_path / "raw4", source=str(tmp_path / "missing"))


def test_a_relative_source_in_params_is_under_the_repo_root_also_from_an_experiment_copy(tmp_path):
    from panda.tracking import project_root

    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "tmpabc123"  # where `dvc exp run --temp` runs a stage
    copy.mkdir(parents=True)
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shared = "../shared/data/mvtec-ad"
    assert rooted_source(shared, project_root(copy)) == str(repo / shared)
    assert rooted_source("/data/mtd", repo) == "/data/mtd"
    assert rooted_source("https://example.org/a.tar.xz", repo) == "https://example.org/a.tar.xz"
    assert rooted_source(None, repo) is None
