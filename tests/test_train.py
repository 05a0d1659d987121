"""Segmenter training: exact resume, EMA, augmentation, pretext, and labels from the synthesis's change."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

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


def test_resume_after_interruption_gives_identical_weights(tmp_path):
    params = PARAMS
    normal = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(6, 1, 32, 32))
    synthetic = _data(10, 1)
    straight = train_segmenter(normal, synthetic, params, tmp_path / "a")
    first = train_segmenter(normal, synthetic, params, tmp_path / "b", stop_after=4)
    assert first.steps_done == 4
    resumed = train_segmenter(normal, synthetic, params, tmp_path / "b")
    assert resumed.resumed_from == 4 and resumed.steps_done == 6
    assert resumed.final_loss == straight.final_loss
    finished = train_segmenter(normal, synthetic, params, tmp_path / "b")  # nothing left to do
    assert finished.resumed_from == 6 and finished.final_loss == straight.final_loss
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    changed = TrainParams(**{**params.__dict__, "lr": 0.01})
    assert train_segmenter(normal, synthetic, changed, tmp_path / "b").resumed_from == 0


def test_default_width_is_about_two_million_parameters():
    assert 1.5e6 < count_parameters(SegUNet(base_channels=16)) < 2.5e6
    out = SegUNet(base_channels=4)(torch.zeros(1, 3, 48, 64))
    assert out.shape == (1, 1, 48, 64)


def test_pretext_beats_copying_its_input_is_seeded_and_resets_the_head(tmp_path):

    from panda.segment.data import normalize
    from panda.segment.pretext import HEAD_PRIOR_LOGIT, PretextParams, corrupt, pretrain_restoration, restore

    g = torch.Generator().manual_seed(0)
    stripes = torch.linspace(0, 1, 32).repeat(32, 1)  # a smooth product surface: restorable
    images = (0.3 + 0.4 * stripes + 0.02 * torch.rand(12, 1, 32, 32, generator=g)).expand(-1, 3, -1, -1)
    broken = corrupt(images[:4], torch.Generator().manual_seed(5))
    assert broken.shape == images[:4].shape and 0 <= broken.min() and broken.max() <= 1
    assert not torch.equal(broken, images[:4])
    clean = normalize(images[:4, :1])

    params = PretextParams(steps=60, batch_size=4, seed=3)
    model = pretrain_restoration(images, 4, params, tmp_path)
    again = pretrain_restoration(images, 4, params)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert torch.all(model.head.weight == 0) and torch.all(model.head.bias == HEAD_PRIOR_LOGIT)
    # the cached job keeps the restorer before its head was reset: it must beat copying the input
    restorer = SegUNet(base_channels=4)
    folder = max(tmp_path.glob("*/step-*"))
    restorer.load_state_dict(load_file(folder / "model.safetensors"))
    restorer.eval()
    with torch.no_grad():
        restored = F.l1_loss(restore(restorer, broken), clean).item()
    copied = F.l1_loss(normalize(broken)[:, :1], clean).item()
    assert restored < copied
    with pytest.raises(PandaError, match="pretext"):
        PretextParams(steps=0).validate()


def test_pretext_resumes_exactly_and_a_finished_run_is_a_cache(tmp_path):
    from panda.segment.pretext import PretextParams, pretrain_restoration

    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    params = PretextParams(steps=12, batch_size=4, seed=1)
    plain = pretrain_restoration(images, 4, params).state_dict()
    pretrain_restoration(images, 4, params, tmp_path, checkpoint_every=3, stop_after=6)
    kept = sorted(p.name for p in tmp_path.glob("*/step-*"))
    assert kept == ["step-00000003", "step-00000006"]  # the last two of the interrupted run
    resumed = pretrain_restoration(images, 4, params, tmp_path, checkpoint_every=3).state_dict()
    cached = pretrain_restoration(images, 4, params, tmp_path, stop_after=0).state_dict()
    conv = "downs.0.0.weight"
    assert all(torch.equal(resumed[k], v) and torch.equal(cached[k], v) for k, v in plain.items())
    other = pretrain_restoration(images * 0.5, 4, params, tmp_path, stop_after=0).state_dict()
    assert not torch.equal(other[conv], plain[conv])  # other images: another job, not the cache
    assert len(list(tmp_path.iterdir())) == 1  # the other job trained no step, so saved nothing


def test_training_from_an_init_copies_it_and_checks_its_shape():
    normal = (torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(6, 1, 32, 32))
    synthetic = _data(10, 1)
    torch.manual_seed(7)
    init = SegUNet(base_channels=4)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    untouched = train_segmenter(normal, synthetic, PARAMS, init=init, stop_after=0).model.state_dict()
    trained = train_segmenter(normal, synthetic, PARAMS, init=init).model.state_dict()
    scratch = train_segmenter(normal, synthetic, PARAMS).model.state_dict()
    conv = "downs.0.0.weight"
    assert torch.equal(untouched[conv], before[conv])  # no steps: exactly the init
    assert all(torch.equal(v, before[k]) for k, v in init.state_dict().items())  # the init is not trained
    assert not torch.equal(trained[conv], scratch[conv])
    with pytest.raises(PandaError, match="base_channels=8"):
        train_segmenter(normal, synthetic, TrainParams(**{**PARAMS.__dict__, "base_channels": 8}), init=init)
