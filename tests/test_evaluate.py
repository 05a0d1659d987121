"""Mirror test-time augmentation: views are flipped back onto the right pixels, then averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from panda.evaluate import predict_maps


class PixelModel(nn.Module):
    """Logits from each pixel's own value: flipping the input flips the output, nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * x.mean(dim=1, keepdim=True)


class RampModel(nn.Module):
    """Logits rising left to right whatever the input: the one thing mirror TTA must average out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3, 3, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return ramp.clone()


def test_tta_realigns_every_view_on_odd_sizes():
    images = torch.rand(3, 3, 20, 27, generator=torch.Generator().manual_seed(0))  # padded to 32 x 32
    plain = predict_maps(PixelModel(), images)
    averaged = predict_maps(PixelModel(), images, tta=True)
    assert averaged.shape == (3, 20, 27)
    np.testing.assert_allclose(averaged, plain, atol=1e-6)


def test_tta_averages_the_left_right_views():
    images = torch.rand(2, 3, 16, 16)
    plain = predict_maps(RampModel(), images)
    averaged = predict_maps(RampModel(), images, tta=True)
    assert plain[0, 0, 0] < 0.1 and plain[0, 0, -1] > 0.9
    np.testing.assert_allclose(averaged, averaged[..., ::-1], atol=1e-6)
    np.testing.assert_allclose(averaged, 0.5 * (plain + plain[..., ::-1]), atol=1e-6)


def test_an_ensemble_map_is_the_mean_of_its_members_maps():
    from panda.errors import PandaError
    from panda.segment.ensemble import SegEnsemble

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    members = [RampModel(), PixelModel()]
    mean = (predict_maps(members[0], images) + predict_maps(members[1], images)) / 2
    np.testing.assert_allclose(predict_maps(SegEnsemble(members), images), mean, atol=1e-5)
    with pytest.raises(PandaError, match="at least one"):
        SegEnsemble([])


def _split(maps: np.ndarray, masks: np.ndarray, types: list[str]):
    import pandas as pd

    from panda.evaluate import SplitMaps

    frame = pd.DataFrame({"defect_type": types})
    return SplitMaps(frame, torch.zeros(len(types), 3, *maps.shape[1:]), maps, masks.astype(np.uint8))


def test_adaptive_threshold_is_the_validation_f1_optimum_and_scores_the_test_split_there():
    """An under-confident segmenter (defects at 0.1, background at 0.02) is measured at its own cut."""
    from panda.evaluate import choose_threshold, score

    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, 2:5, 2:5] = 1
    masks[1, 4:7, 1:3] = 1
    maps = np.full(masks.shape, 0.02, np.float32) + 0.08 * masks
    maps[2, 0, 0] = 0.05  # a weak false alarm on the normal image, below the defects
    val = _split(maps, masks, ["crack", "hole", "good"])
    cut, source = choose_threshold("adaptive", val)
    assert 0.05 < cut <= np.float32(0.1) and source.startswith("adaptive")  # maps are scored as float32
    adaptive, _ = score(val, cut, 0.3)
    fixed, per_defect = score(val, 0.5, 0.3)
    assert adaptive["iou"] == pytest.approx(1.0) and adaptive["miou"] == pytest.approx(1.0)
    assert fixed["iou"] == 0.0 and fixed["miou"] < 0.5
    assert list(per_defect["defect_type"]) == ["crack", "hole"]
    assert choose_threshold(0.3, val) == (0.3, "fixed")
    cut, source = choose_threshold("adaptive", None)
    assert cut == 0.5 and "no validation split" in source


@pytest.mark.parametrize("bad", ["auto", 1.5, -0.1])
def test_bad_thresholds_name_the_key(bad):
    from panda.errors import PandaError
    from panda.evaluate import EvalParams

    with pytest.raises(PandaError, match="evaluate.threshold"):
        EvalParams(threshold=bad).validate()
