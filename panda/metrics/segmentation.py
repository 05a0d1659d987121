"""All table metrics for one set of anomaly maps: pixel and image level, threshold-free and at 0.5.

`valid` (N, H, W), where given, limits every metric to those pixels: a padded image's own box
(`panda.data.geometry`), so the mirrored fill is never scored.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
)

from panda.metrics.aupro import aupro


def f1_max(preds: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold that reaches it."""
    precision, recall, thresholds = binary_precision_recall_curve(preds, target)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best = int(torch.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[best]), float(thresholds[best]) if len(thresholds) else 0.5


def threshold_metrics(preds: torch.Tensor, target: torch.Tensor, threshold: float) -> dict[str, float]:
    """Defect IoU, background IoU, their mean (mIoU) and pixel accuracy at a fixed threshold."""
    pred = preds >= threshold
    gt = target.bool()
    tp = (pred & gt).sum().item()
    fp = (pred & ~gt).sum().item()
    fn = (~pred & gt).sum().item()
    tn = (~pred & ~gt).sum().item()
    iou_defect = tp / (tp + fp + fn) if tp + fp + fn else 1.0
    iou_background = tn / (tn + fp + fn) if tn + fp + fn else 1.0
    return {
        "iou": iou_defect,
        "miou": (iou_defect + iou_background) / 2,
        "pixel_acc": (tp + tn) / max(1, tp + tn + fp + fn),
    }


def scored_pixels(
    maps: np.ndarray, masks: np.ndarray, valid: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, labels) of every scored pixel, flattened: all of them, or those under `valid`."""
    if valid is not None:
        maps, masks = maps[valid], masks[valid]
    return (
        torch.from_numpy(maps.astype(np.float32)).flatten(),
        torch.from_numpy(masks.astype(np.int64)).flatten(),
    )


def compute_metrics(
    maps: np.ndarray,
    masks: np.ndarray,
    threshold: float = 0.5,
    max_fpr: float = 0.3,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics for anomaly maps in [0, 1] (N, H, W) against binary masks (N, H, W)."""
    preds, target = scored_pixels(maps, masks, valid)
    out: dict[str, float] = {}
    has_both = 0 < int(target.sum()) < len(target)
    if has_both:
        out["pixel_auroc"] = float(binary_auroc(preds, target))
        out["pixel_ap"] = float(binary_average_precision(preds, target))
        out["f1_max"], out["f1_threshold"] = f1_max(preds, target)
        out["aupro"] = aupro(maps, masks, max_fpr=max_fpr, valid=valid)
    if valid is not None:
        maps, masks = np.where(valid, maps, -np.inf), (masks > 0) & valid
    image_scores = torch.from_numpy(maps.reshape(len(maps), -1).max(axis=1).astype(np.float32))
    image_labels = torch.from_numpy((masks.reshape(len(masks), -1).max(axis=1) > 0).astype(np.int64))
    if 0 < int(image_labels.sum()) < len(image_labels):
        out["image_auroc"] = float(binary_auroc(image_scores, image_labels))
    out.update(threshold_metrics(preds, target, threshold))
    out["defect_pixel_fraction"] = float(target.float().mean())
    return out


def curves(
    maps: np.ndarray, masks: np.ndarray, points: int = 200, valid: np.ndarray | None = None
) -> dict[str, list[dict[str, float]]]:
    """Pixel ROC and PR curves, thinned to about `points` points each for DVC plots."""
    preds, target = scored_pixels(maps, masks, valid)
    fpr, tpr, _ = binary_roc(preds, target)
    precision, recall, _ = binary_precision_recall_curve(preds, target)

    def thin(a: torch.Tensor, b: torch.Tensor, ka: str, kb: str) -> list[dict[str, float]]:
        idx = np.unique(np.linspace(0, len(a) - 1, min(points, len(a))).round().astype(int))
        return [{ka: round(float(a[i]), 6), kb: round(float(b[i]), 6)} for i in idx]

    return {"roc": thin(fpr, tpr, "fpr", "tpr"), "pr": thin(recall, precision, "recall", "precision")}
