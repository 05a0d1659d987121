"""AUPRO against a brute-force reference, and the other metrics on known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from panda.metrics.aupro import aupro
from panda.metrics.segmentation import compute_metrics, threshold_metrics


def brute_force_aupro(scores: np.ndarray, masks: np.ndarray, max_fpr: float) -> float:
    """Threshold by threshold: binarise, measure each region's overlap and the FPR, integrate."""
    regions = []
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m > 0, structure=np.ones((3, 3)))
        regions += [(i, lab == k) for k in range(1, n + 1)]
    normal = masks == 0
    points = [(0.0, 0.0)]
    for thr in sorted(np.unique(scores), reverse=True):
        pred = scores >= thr
        overlaps = [pred[i][region].mean() for i, region in regions]
        points.append((pred[normal].mean(), float(np.mean(overlaps))))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:  # cut the last segment at max_fpr
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


@pytest.mark.parametrize("seed", range(8))
def test_aupro_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, h, w = rng.integers(1, 4), 8, 8
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, h - 2, 2)
            masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = 1
    scores = rng.random((n, h, w)).round(2) + 0.5 * masks * rng.random()
    for max_fpr in (0.3, 1.0):
        assert aupro(scores, masks, max_fpr) == pytest.approx(
            brute_force_aupro(scores, masks, max_fpr), abs=1e-9
        )


def test_aupro_perfect_and_inverted():
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[0, 2:4, 2:4] = 1
    masks[1, 5:9, 1:3] = 1
    assert aupro(masks.astype(float), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks, masks) == pytest.approx(0.0)


def test_threshold_metrics_known_case():
    import torch

    preds = torch.tensor([0.9, 0.8, 0.2, 0.1])
    target = torch.tensor([1, 0, 1, 0])
    m = threshold_metrics(preds, target, 0.5)
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["miou"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["pixel_acc"] == pytest.approx(0.5)


def test_compute_metrics_perfect_map():
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[1, 4:7, 4:7] = 1
    m = compute_metrics(masks.astype(float), masks)
    for key in ("pixel_auroc", "pixel_ap", "f1_max", "aupro", "image_auroc", "iou", "miou", "pixel_acc"):
        assert m[key] == pytest.approx(1.0), key
