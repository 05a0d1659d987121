"""The built-in demo dataset: deterministic, MVTec layout, exact masks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from panda.data.demo import DEFECTS, RENDERERS, add_defect, generate_demo
from panda.data.layouts import scan


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_in_mvtec_layout(tmp_path):
    generate_demo(tmp_path / "a", seed=3, n_train=3, n_test_good=2, n_per_defect=3)
    generate_demo(tmp_path / "b", seed=3, n_train=3, n_test_good=2, n_per_defect=3)
    generate_demo(tmp_path / "c", seed=4, n_train=3, n_test_good=2, n_per_defect=3)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    records = scan("demo", tmp_path / "a")
    assert set(records["category"]) == {"brick", "grass", "gravel"}
    for category, kinds in DEFECTS.items():
        got = set(records.loc[records["category"] == category, "defect_type"]) - {"good"}
        assert got == set(kinds) and len(kinds) >= 2


@pytest.mark.parametrize("kind", sorted(RENDERERS))
def test_defect_mask_is_exactly_the_changed_pixels(kind):
    rng = np.random.default_rng(0)
    for _ in range(5):
        clean = rng.integers(60, 200, (128, 128), dtype=np.uint8)
        out, mask = add_defect(clean, kind, rng)
        changed = out != clean
        assert mask.any()
        assert not (changed & (mask == 0)).any(), "pixels changed outside the mask"
        assert changed[mask > 0].mean() > 0.9
