"""Segmenter training: an interrupted run resumed from its checkpoint equals an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from panda.errors import PandaError
from panda.segment.train import TrainParams, train_segmenter
from panda.segment.unet import SegUNet, count_parameters


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    y = torch.zeros(n, 1, 32, 32)
    y[:, :, 8:16, 8:16] = 1
    x = x + y * 0.5
    return x.clamp(0, 1), y


PARAMS = TrainParams(steps=6, batch_size=4, base_channels=4, checkpoint_every=2, seed=1)


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_resume_after_interruption_gives_identical_weights(tmp_path, ema_decay):
    params = TrainParams(**{**PARAMS.__dict__, "ema_decay": ema_decay})
    normal = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(6, 1, 32, 32))
    synthetic = _data(10, 1)
    straight = train_segmenter(normal, synthetic, params, tmp_path / "a.pt")
    first = train_segmenter(normal, synthetic, params, tmp_path / "b.pt", stop_after=4)
    assert first.steps_done == 4
    resumed = train_segmenter(normal, synthetic, params, tmp_path / "b.pt")
    assert resumed.resumed_from == 4 and resumed.steps_done == 6
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    changed = TrainParams(**{**params.__dict__, "lr": 0.01})
    assert train_segmenter(normal, synthetic, changed, tmp_path / "b.pt").resumed_from == 0


def test_ema_returns_the_averaged_weights_not_the_last_ones():
    normal = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(6, 1, 32, 32))
    synthetic = _data(10, 1)
    last = train_segmenter(normal, synthetic, PARAMS).model.state_dict()
    averaged = train_segmenter(normal, synthetic, TrainParams(**{**PARAMS.__dict__, "ema_decay": 0.9}))
    weights = averaged.model.state_dict()
    assert set(weights) == set(last)  # a plain SegUNet, loadable by save_model/load_model
    conv = "downs.0.0.weight"
    assert not torch.allclose(weights[conv], last[conv])
    torch.manual_seed(PARAMS.seed)
    initial = SegUNet(base_channels=4).state_dict()[conv]
    # 6 steps at decay 0.9 keep most of the starting weights: the average lies between start and end
    assert (weights[conv] - initial).norm() < (last[conv] - initial).norm()
    with pytest.raises(PandaError, match="ema_decay"):
        TrainParams(steps=1, ema_decay=1.0).validate()


def test_default_width_is_about_two_million_parameters():
    assert 1.5e6 < count_parameters(SegUNet(base_channels=16)) < 2.5e6
    out = SegUNet(base_channels=4)(torch.zeros(1, 3, 48, 64))
    assert out.shape == (1, 1, 48, 64)


def test_photometric_jitter_changes_images_not_masks_and_is_seeded():
    from panda.segment.train import _augment

    x, y = _data(8, 2)

    def run(strength: float) -> tuple[torch.Tensor, torch.Tensor]:
        return _augment(x, y, torch.Generator().manual_seed(5), strength)

    plain, jittered, again = run(0.0), run(1.0), run(1.0)
    assert torch.equal(plain[1], jittered[1])  # the labels only follow the flips
    assert not torch.allclose(plain[0], jittered[0]) and torch.equal(jittered[0], again[0])
    assert 0 <= float(jittered[0].min()) and float(jittered[0].max()) <= 1
    per_image_gain = jittered[0].std(dim=(1, 2, 3)) / plain[0].std(dim=(1, 2, 3))
    assert float(per_image_gain.std()) > 0.01  # each image gets its own contrast
