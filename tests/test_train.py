"""Segmenter training: exact resume, EMA, augmentation, pretext, and labels from the synthesis's change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from panda.errors import PandaError
from panda.segment.data import IGNORE, ignore_unchanged, load_synthetic_pairs
from panda.segment.train import TrainParams, seg_loss, train_segmenter
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


def test_pretext_beats_copying_its_input_is_seeded_and_resets_the_head(tmp_path):
    import torch.nn.functional as F

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


def test_unchanged_mask_pixels_are_ignored_changed_ones_and_the_outside_kept():
    background = torch.zeros(1, 3, 16, 16)
    x = background.clone()
    x[..., 4:8, 4:8] = 0.5  # the synthesis changed only this block of the 2..12 mask
    y = torch.zeros(1, 1, 16, 16)
    y[..., 2:12, 2:12] = 1
    x[..., 14, 14] = 0.5  # a change outside the mask stays a normal pixel
    out = ignore_unchanged(x, y, background, min_change=8)
    assert (out[..., 4:8, 4:8] == 1).all()
    assert (out[..., 9:12, 2:12] == IGNORE).all() and (out[..., 2:12, 9:12] == IGNORE).all()
    assert (out[y == 0] == 0).all()
    assert torch.equal(ignore_unchanged(x, y, background, min_change=0.0), y)


def test_the_loss_does_not_see_ignored_pixels_and_is_unchanged_without_them():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, generator=g, requires_grad=True)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.7).float()
    plain = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits)
    plain = plain + 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    assert seg_loss(logits, target).item() == pytest.approx(plain.item(), rel=1e-6)
    target[:, :, :4] = IGNORE
    seg_loss(logits, target).backward()
    assert (logits.grad[:, :, :4] == 0).all() and (logits.grad[:, :, 4:] != 0).any()


def test_synthetic_pairs_take_their_labels_from_the_change_to_their_background(tmp_path):
    def save(rel: str, array: np.ndarray) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(tmp_path / rel)

    bg = np.full((16, 16), 100, np.uint8)
    img, mask = bg.copy(), np.zeros((16, 16), np.uint8)
    img[2:6, 2:6], mask[2:12, 2:12] = 30, 255
    save("normal/bg.png", bg), save("syn/a.png", img), save("syn/a_mask.png", mask)
    frame = pd.DataFrame(
        {"image_path": ["syn/a.png"], "mask_path": ["syn/a_mask.png"], "background": ["normal/bg.png"]}
    )
    _, plain = load_synthetic_pairs(tmp_path, frame, tmp_path)
    _, refined = load_synthetic_pairs(tmp_path, frame, tmp_path, min_change=8)
    assert plain.sum() == 100 and (refined[0, 0, 2:6, 2:6] == 1).all()
    assert (refined[0, 0, 10:12, 10:12] == IGNORE).all()


def test_label_min_change_outside_gray_levels_is_refused_with_its_key():
    with pytest.raises(PandaError, match="train.label_min_change"):
        TrainParams(steps=1, label_min_change=-1).validate()


def test_edge_crops_touch_an_image_edge_only_for_the_samples_asked_and_are_seeded():
    from panda.segment.train import _crops

    coords = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 1, 64, 64)
    x, y = coords.repeat(40, 3, 1, 1), torch.zeros(40, 1, 64, 64)

    def touches_edge(crop: torch.Tensor) -> bool:
        top, left = divmod(int(crop[0, 0, 0]), 64)
        return top in (0, 48) or left in (0, 48)

    def run(at_edge: list[float] | None) -> torch.Tensor:
        return _crops(x, y, 16, 0.5, torch.Generator().manual_seed(3), at_edge)[0]

    edged = run([1.0] * 20 + [0.0] * 20)
    assert all(touches_edge(c) for c in edged[:20])
    assert sum(touches_edge(c) for c in edged[20:]) < 10  # uniform: ~9% touch an edge
    assert torch.equal(edged, run([1.0] * 20 + [0.0] * 20))
    assert torch.equal(run(None), run([0.0] * 40))  # off draws nothing: old runs reproduce


def test_normal_edge_fraction_outside_0_1_is_refused_with_its_key():
    with pytest.raises(PandaError, match="train.normal_edge_fraction"):
        TrainParams(steps=1, normal_edge_fraction=1.5).validate()
