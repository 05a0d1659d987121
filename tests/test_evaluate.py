"""Mirror test-time augmentation: views are flipped back onto the right pixels, then averaged."""

from __future__ import annotations

import numpy as np
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
