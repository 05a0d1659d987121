"""Benchmark aggregation: mean and sample spread over seeds, markdown with per-defect-type tables."""

from __future__ import annotations

import pytest

from panda.benchmark import RunResult, aggregate, to_markdown


def test_aggregate_mean_and_spread_per_method():
    runs = [
        RunResult("real", 0, {"pixel_ap": 0.2, "crack_pixel_auroc": 0.9, "pixel_auroc": 0.8}),
        RunResult("real", 1, {"pixel_ap": 0.4, "crack_pixel_auroc": 0.7, "pixel_auroc": 0.9}),
        RunResult("draem", 0, {"pixel_ap": 0.1, "crack_pixel_auroc": 0.6, "pixel_auroc": 0.7}),
    ]
    rows = aggregate(runs)
    assert [r["method"] for r in rows] == ["real", "draem"]
    real = rows[0]
    assert real["pixel_ap"] == pytest.approx(0.3) and real["pixel_ap_std"] == pytest.approx(0.1414, abs=1e-4)
    assert real["n_seeds"] == 2 and rows[1]["pixel_ap_std"] == 0.0
    md = to_markdown(rows, "Benchmark: x", "setting")
    assert "| real | 2 | 0.850 ± 0.071 | 0.300 ± 0.141 |" in md
    assert "## pixel_auroc per defect type" in md and "| crack |" in md
