"""The learning-rate schedule shared by the segmenter and its restoration pretext."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, peak: float) -> float:
    """Linear warm-up over 5% of `total` steps, then cosine decay to 1% of `peak`.

    A pure function of the step, so a resumed run follows the same curve. The warm-up keeps Adam's
    first full-size steps from hitting a fresh network; the pretext ran at a constant rate before and
    one of its seeds ended with a nearly flat last block (see `pretext.OBJECTIVE`).
    """
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
