"""Area under the per-region-overlap curve (AUPRO, Bergmann et al. 2021) up to a false-positive rate.

Exact over all score thresholds: sorting every pixel once, the PRO at a threshold is the sum over
defect pixels above it of 1 / (K * size of its region), with K regions in total (8-connected, per
image), and the FPR is the share of normal pixels above it. The curve is integrated with the
trapezoid rule up to `max_fpr` (interpolated there) and divided by `max_fpr`, so 1.0 is perfect.
With `valid` (N, H, W) only those pixels count (padded images: each one's own box).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=int)


def label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected defect regions per image, numbered globally from 1; 0 is background."""
    labels = np.zeros(masks.shape, dtype=np.int64)
    offset = 0
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m > 0, structure=EIGHT)
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return labels, offset


def pro_curve(
    scores: np.ndarray, masks: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) at every distinct score threshold, from the highest threshold down."""
    labels, k = label_regions(masks if valid is None else (masks > 0) & valid)
    if k == 0:
        raise ValueError("AUPRO needs at least one defect region")
    keep = slice(None) if valid is None else valid.ravel()
    flat_scores = scores.ravel()[keep].astype(np.float64)
    flat_labels = labels.ravel()[keep]
    sizes = np.bincount(flat_labels)
    negative = flat_labels == 0
    n_neg = int(negative.sum())
    if n_neg == 0:
        raise ValueError("AUPRO needs normal pixels")
    weight_pro = np.where(negative, 0.0, 1.0 / (k * sizes[flat_labels].clip(min=1)))
    weight_fpr = negative / n_neg
    order = np.argsort(-flat_scores, kind="stable")
    s = flat_scores[order]
    pro = np.cumsum(weight_pro[order])
    fpr = np.cumsum(weight_fpr[order])
    last_of_tie = np.r_[s[1:] != s[:-1], True]
    return np.r_[0.0, fpr[last_of_tie]], np.r_[0.0, pro[last_of_tie]]


def aupro(
    scores: np.ndarray, masks: np.ndarray, max_fpr: float = 0.3, valid: np.ndarray | None = None
) -> float:
    """Normalised AUPRO up to `max_fpr` for anomaly maps `scores` and binary `masks` (N, H, W)."""
    fpr, pro = pro_curve(scores, masks, valid)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr:
        nxt = np.searchsorted(fpr, max_fpr, side="right")
        if nxt < len(fpr):
            t = (max_fpr - fpr[nxt - 1]) / (fpr[nxt] - fpr[nxt - 1])
            x = np.r_[x, max_fpr]
            y = np.r_[y, pro[nxt - 1] + t * (pro[nxt] - pro[nxt - 1])]
    return float(np.trapezoid(y, x) / max_fpr)
