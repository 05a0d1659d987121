"""Shared fixtures: a loopback HTTP server with Range support, tiny params, dataset builders."""

from __future__ import annotations

import http.server
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MTD_SHARED = ROOT.parent / "shared" / "data" / "magnetic-tile"
os.environ.setdefault("TQDM_DISABLE", "1")

TINY = {
    "mlflow": {"experiment": "panda-tests"},
    "data": {"dataset": "demo", "source": None, "cache_dir": None, "category": "brick", "seed": 0},
    "preprocess": {"image_size": 32, "normal_test_fraction": 0.2, "gen_train_fraction": 0.334, "seed": 0},
    "finetune": {
        "window": 16,
        "block_channels": [8, 16],
        "steps": 4,
        "batch_size": 4,
        "lr": 0.001,
        "train_timesteps": 100,
        "checkpoint_every": 2,
        "phase_b_steps": 20,
        "seed": 0,
    },
    "synth": {
        "method": "panda",
        "n_per_defect": 6,
        "placement": "uniform",
        "texture_dir": None,
        "seed": 0,
    },
    "train": {
        "base_channels": 4,
        "steps": 6,
        "batch_size": 4,
        "lr": 0.002,
        "normal_fraction": 0.25,
        "val_fraction": 0.2,
        "checkpoint_every": 3,
        "seed": 0,
    },
    "evaluate": {"threshold": 0.5, "max_fpr": 0.3},
}


def preprocessed_demo(root: Path, image_size: int = 32) -> Path:
    """`panda download` and `panda preprocess` of the demo in `root`; returns its data/processed."""
    from click.testing import CliRunner

    from stages.cli import cli

    params = yaml.safe_load(yaml.safe_dump(TINY))
    params["preprocess"]["image_size"] = image_size
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    here = Path.cwd()
    os.chdir(root)
    try:
        for stage in ("download", "preprocess"):
            result = CliRunner().invoke(cli, [stage], catch_exceptions=False)
            assert result.exit_code == 0, result.output
    finally:
        os.chdir(here)
    return root / "data" / "processed"


@pytest.fixture
def tiny_params() -> dict:
    """A deep copy of the tiny configuration (every stage runs in seconds)."""
    return yaml.safe_load(yaml.safe_dump(TINY))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_params: dict) -> Path:
    """A scratch project dir with params.yaml and its own MLflow store."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `directory`; honours `Range: bytes=N-`; can cut a response short."""

    directory: Path
    cut_after: dict[str, int] = {}
    log: list[dict] = []

    def do_GET(self) -> None:  # noqa: N802
        path = self.directory / self.path.lstrip("/")
        self.log.append({"path": self.path, "range": self.headers.get("Range")})
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        match = re.match(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(self.path, None)
        self.wfile.write(body[:cut] if cut is not None else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, type[RangeHandler]]]:
    """(base_url, served_dir, handler_class) for a real socket server on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    handler = type("Handler", (RangeHandler,), {"directory": served, "cut_after": {}, "log": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served, handler
    server.shutdown()
    server.server_close()


def write_image(path: Path, size=(40, 40), value: int | None = None, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    arr = rng.integers(0, 255, shape, dtype=np.uint8) if value is None else np.full(shape, value, np.uint8)
    Image.fromarray(arr).save(path)


def write_mask(path: Path, size=(40, 40), box=(10, 10, 20, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size[1], size[0]), np.uint8)
    arr[box[1] : box[3], box[0] : box[2]] = 255
    Image.fromarray(arr).save(path)


def make_mvtec_tree(root: Path, category: str = "widget", n_defect: int = 3) -> Path:
    for i in range(3):
        write_image(root / category / "train" / "good" / f"{i:03d}.png")
        write_image(root / category / "test" / "good" / f"{i:03d}.png")
    for i in range(n_defect):
        write_image(root / category / "test" / "dent" / f"{i:03d}.png")
        write_mask(root / category / "ground_truth" / "dent" / f"{i:03d}_mask.png")
    return root


def make_btad_tree(root: Path) -> Path:
    base = root / "BTech_Dataset_transformed" / "01"
    for i in range(3):
        write_image(base / "train" / "ok" / f"{i:04d}.bmp")
        write_image(base / "test" / "ok" / f"{i:04d}.bmp")
        write_image(base / "test" / "ko" / f"{i:04d}.bmp")
        write_mask(base / "ground_truth" / "ko" / f"{i:04d}.png")
    return root


def make_mtd_tree(root: Path) -> Path:
    base = root / "Magnetic-tile-defect-datasets.-master"
    for cls, nums in {
        "Free": [100, 120, 140, 900, 930],
        "Crack": [3191, 3211, 3223, 8000, 8020, 9100],
    }.items():
        for exp, num in enumerate(nums, start=1):
            stem = f"exp{exp}_num_{num}"
            write_image(base / f"MT_{cls}" / "Imgs" / f"{stem}.jpg", mode="L")
            write_mask(
                base / f"MT_{cls}" / "Imgs" / f"{stem}.png",
                box=(0, 0, 0, 0) if cls == "Free" else (5, 5, 15, 9),
            )
    return root


def have_mtd() -> bool:
    return (MTD_SHARED / "MT_Free").is_dir() and not os.environ.get("PANDA_SKIP_REAL_DATA")
