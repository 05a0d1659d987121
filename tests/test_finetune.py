"""Diffusion fine-tuning: phase-A cache reuse, PMA training mask, defect windows, adapter identity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from panda.diffusion.denoiser import PixelDenoiser
from panda.diffusion.mga import MaskGuidanceAdapter
from panda.diffusion.params import FinetuneParams
from panda.diffusion.phase_b import MAX_TILES, crop_box, defect_windows, native_tiles, pma_mask, train_phase_b
from panda.diffusion.pixel import (
    as_model_channels,
    build_scheduler,
    build_unet,
    train_phase_a,
)
from panda.diffusion.sampler import SamplerConfig, phased_sample
from panda.diffusion.window_modes import stroke_width, type_window_modes, width_in_window

PARAMS = FinetuneParams(
    steps=3,
    window=16,
    block_channels=[8, 16],
    batch_size=2,
    train_timesteps=50,
    checkpoint_every=2,
    phase_b_steps=1,
    mga_channels=[8],
)


def test_phase_a_is_reused_when_only_phase_b_params_change(tmp_path):
    images = torch.rand(4, 3, 24, 24) * 2 - 1
    first = train_phase_a(images, PARAMS, num_classes=3, checkpoint_root=tmp_path)
    assert first.resumed_from == 0 and first.steps_done == 3
    changed_b = dataclasses.replace(PARAMS, phase_b_steps=50, mga_channels=[4, 4], pma_tau=0.3)
    again = train_phase_a(images, changed_b, num_classes=3, checkpoint_root=tmp_path)
    assert again.resumed_from == 3 and again.final_loss == first.final_loss  # reported, not NaN
    for a, b in zip(first.unet.parameters(), again.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    assert train_phase_a(images, dataclasses.replace(PARAMS, lr=0.01), 3, tmp_path).resumed_from == 0


def test_pma_training_mask_is_hard_below_tau_and_open_at_t_max():
    mask = torch.zeros(3, 1, 4, 4)
    mask[:, :, 1:3, 1:3] = 1
    m = pma_mask(mask, torch.tensor([0, 200, 999]), 1000, 0.2)
    assert torch.equal(m[0], mask[0]) and torch.equal(m[1], mask[1])
    assert m[2].min() > 0.99


def test_defect_window_follows_defect_size():
    mask = np.zeros((100, 100), bool)
    mask[10:60, 20:30] = True  # 50 px tall: window grows to 1.25 x 50
    top, left, side = crop_box(mask, 32)
    assert side == 63 and top <= 10 and top + side >= 60 and left <= 20 and left + side >= 30
    small = np.zeros((100, 100), bool)
    small[98:100, 0:2] = True  # in a corner: the window stays inside the image
    top, left, side = crop_box(small, 32)
    assert side == 32 and top == 68 and left == 0
    windows = defect_windows([(np.zeros((100, 100, 3), np.uint8), mask, 2)], 32)
    assert (
        windows.images.shape == (1, 3, 32, 32)
        and windows.masks.sum() > 0
        and windows.defect_ids.tolist() == [2]
    )


def test_fresh_adapter_passes_the_prediction_through():
    adapter = MaskGuidanceAdapter(3, [8, 8])
    eps = torch.randn(2, 3, 8, 8)
    assert torch.equal(adapter(eps, torch.ones(2, 1, 8, 8)), eps)


def _phase_b_job(tmp_path, stop_after=None):
    torch.manual_seed(0)
    unet = build_unet(PARAMS, 3, num_classes=3)
    model = PixelDenoiser(unet, ["crack", "hole"], [8])
    mask = np.zeros((24, 24), bool)
    mask[5:12, 6:10] = True
    rng = np.random.default_rng(0)
    examples = [(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), mask, 1 + i % 2) for i in range(4)]
    result = train_phase_b(
        model,
        build_scheduler(PARAMS),
        defect_windows(examples, 16),
        steps=4,
        batch_size=2,
        lr=1e-2,
        tau=0.2,
        seed=0,
        checkpoint_dir=tmp_path / "ckpt",
        checkpoint_every=1,
        stop_after=stop_after,
        ema_decay=0.9,
    )
    return model, result


def test_phase_b_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path):
    whole, _ = _phase_b_job(tmp_path / "whole")
    _, first = _phase_b_job(tmp_path / "split", stop_after=2)
    resumed, second = _phase_b_job(tmp_path / "split")
    assert (first.steps_done, second.resumed_from, second.steps_done) == (2, 2, 4)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, finished = _phase_b_job(tmp_path / "split")  # nothing left to train: the last loss is kept
    assert finished.resumed_from == 4 and finished.final_loss == second.final_loss


def test_gray_datasets_get_a_one_channel_denoiser_that_still_returns_rgb():
    gray = torch.rand(2, 1, 16, 16).expand(-1, 3, -1, -1) * 2 - 1
    assert as_model_channels(gray).shape[1] == 1
    assert as_model_channels(torch.rand(2, 3, 16, 16)).shape[1] == 3
    model = PixelDenoiser(build_unet(PARAMS, 1, num_classes=2), ["crack"], [8]).eval()
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:9, 4:9] = 1
    scheduler = build_scheduler(PARAMS)
    scheduler = DDIMScheduler.from_config(scheduler.config)
    scheduler.set_timesteps(4)
    out = phased_sample(
        model,
        scheduler,
        gray,
        mask,
        torch.ones(2, dtype=torch.long),
        SamplerConfig(steps=4, pma_steps=2),
        torch.Generator().manual_seed(0),
    )
    assert out.shape == gray.shape
    assert torch.allclose(out[mask.expand_as(out) == 0], gray[mask.expand_as(out) == 0], atol=1e-5)
    assert torch.equal(out[:, 0], out[:, 2])


def test_native_tiles_cover_a_long_defect_at_full_resolution():
    mask = np.zeros((128, 128), bool)
    mask[20:21, 10:110] = True  # a 1 px crack, 100 px long: resize mode would shrink it 4x
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    windows = defect_windows([(image, mask, 1)], 32, mode="native")
    assert windows.images.shape == (MAX_TILES, 3, 32, 32)
    assert windows.masks.sum(dim=(1, 2, 3)).tolist() == [32] * MAX_TILES  # the crack, 1 px wide, unbroken
    tiles = native_tiles(mask, 32)
    y, x = tiles[0]
    assert torch.equal(
        windows.images[0], torch.from_numpy(image[y : y + 32, x : x + 32]).permute(2, 0, 1) / 127.5 - 1
    )
    small = np.zeros((128, 128), bool)
    small[50:55, 60:64] = True  # fits: one window, the same one resize mode uses, unresized
    assert native_tiles(small, 32) == [crop_box(small, 32)[:2]]


def _saved_model(tmp_path, window_mode="resize", defect_types=("crack",)):
    torch.manual_seed(0)
    model = PixelDenoiser(
        build_unet(PARAMS, 3, num_classes=len(defect_types) + 1), list(defect_types), [8], window_mode
    )
    model.save(tmp_path)
    build_scheduler(PARAMS).save_pretrained(tmp_path / "scheduler")
    return tmp_path


def test_native_windows_sample_each_mask_at_its_own_side(tmp_path, monkeypatch):
    from panda.synth import diffusion as synth_panda

    sides = []
    real = synth_panda.phased_sample

    def spy(model, scheduler, background, *args):
        sides.append(tuple(background.shape))
        return real(model, scheduler, background, *args)

    monkeypatch.setattr(synth_panda, "phased_sample", spy)
    synth = synth_panda.DiffusionSynthesizer(  # auto: the denoiser was fine-tuned on native windows
        _saved_model(tmp_path, "native"), SamplerConfig(steps=2, pma_steps=1), 0
    )
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((64, 64), bool) for _ in range(3)]
    masks[0][10:12, 5:45] = True  # 40 px long: 1.25 x 40 = 50 -> 64 (multiple of 16, fits the image)
    masks[1][30:34, 30:34] = True  # small: the denoiser's own 16 px window
    masks[2][40:42, 8:40] = True  # 32 px long: 40 -> 48
    assert [synth_panda.native_side(m, 16) for m in masks] == [64, 16, 48]
    assert synth_panda.native_side(masks[2], 16, step=32) == 64  # a deeper UNet needs coarser sides
    out = synth.batch(images, masks, "crack")
    assert sorted(sides) == [(1, 3, 16, 16), (1, 3, 48, 48), (1, 3, 64, 64)]  # grouped by side, no resize
    for image, mask, edited in zip(images, masks, out, strict=True):
        assert np.array_equal(edited[~mask], image[~mask]) and (edited[mask] != image[mask]).any()


def test_residual_enlarge_keeps_the_full_resolution_texture_under_the_change():
    from panda.synth.diffusion import enlarge_residual

    rng = np.random.default_rng(0)
    crop = rng.integers(40, 200, (64, 64, 3), dtype=np.uint8)
    shrunk = rng.integers(40, 200, (16, 16, 3), dtype=np.uint8)
    assert np.array_equal(enlarge_residual(crop, shrunk, shrunk), crop)  # nothing drawn: the texture itself
    darker = enlarge_residual(crop, shrunk, shrunk - 30)
    assert np.array_equal(darker.astype(int), crop.astype(int) - 30)  # a flat change moves every pixel alike


def test_resized_windows_enlarge_the_sample_or_only_its_change(tmp_path):
    from panda.synth.diffusion import DiffusionSynthesizer
    from panda.synth.quality import defect_detail

    model_dir = _saved_model(tmp_path, "resize")
    image = np.random.default_rng(0).integers(40, 200, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[8:56, 8:56] = True  # its 60 px window is sampled at the denoiser's 16 px
    config = SamplerConfig(steps=2, pma_steps=1)
    bicubic = DiffusionSynthesizer(model_dir, config, 0).batch([image], [mask], "crack")[0]
    residual = DiffusionSynthesizer(model_dir, config, 0, enlarge="residual")
    residual = residual.batch([image], [mask], "crack")[0]
    for edited in (bicubic, residual):
        assert np.array_equal(edited[~mask], image[~mask])
    assert defect_detail(bicubic, mask) < 0.5 * defect_detail(image, mask)  # enlarged 4x: smooth
    assert defect_detail(residual, mask) > 0.8 * defect_detail(image, mask)  # the texture stays


def test_window_mode_follows_the_denoiser_unless_forced(tmp_path):
    import json

    from panda.synth.diffusion import DiffusionSynthesizer

    config = SamplerConfig(steps=2, pma_steps=1)
    model_dir = _saved_model(tmp_path, {"crack": "native", "hole": "resize"}, ("crack", "hole"))
    assert DiffusionSynthesizer(model_dir, config, 0).window_modes == {"crack": "native", "hole": "resize"}
    forced = DiffusionSynthesizer(model_dir, config, 0, "resize").window_modes
    assert forced == {"crack": "resize", "hole": "resize"}
    meta = json.loads((model_dir / "panda.json").read_text())
    del meta["window_modes"]
    meta["window_mode"] = "native"  # saved before per-type modes: one mode for every type
    (model_dir / "panda.json").write_text(json.dumps(meta))
    assert DiffusionSynthesizer(model_dir, config, 0).window_modes == {"crack": "native", "hole": "native"}
    del meta["window_mode"]  # a denoiser saved before window modes existed was fine-tuned on resized windows
    (model_dir / "panda.json").write_text(json.dumps(meta))
    assert DiffusionSynthesizer(model_dir, config, 0).window_modes == {"crack": "resize", "hole": "resize"}


def test_auto_window_mode_keeps_only_thin_types_native():
    crack = np.zeros((128, 128), bool)
    crack[20:21, 10:110] = True  # 1 px wide, 100 px long: its window would be shrunk about 4x
    hole = np.zeros((128, 128), bool)
    hole[50:58, 60:68] = True  # fits the window: never shrunk
    band = np.zeros((128, 128), bool)
    band[40:60, 0:128] = True  # 20 px wide band, shrunk 4x: still 5 px
    assert stroke_width(crack) == pytest.approx(1.0, abs=0.1)
    assert width_in_window(crack, 32) < 0.3 and width_in_window(hole, 32) == stroke_width(hole)
    masks = [(crack, "crack"), (crack, "crack"), (hole, "hole"), (band, "band"), (0 * hole, "empty")]
    all_resized = {"crack": "resize", "hole": "resize", "band": "resize"}
    assert type_window_modes(masks, 32, "auto", 1.0) == all_resized | {"crack": "native"}
    assert type_window_modes(masks, 32, "auto", 0.0) == all_resized
    assert set(type_window_modes(masks, 32, "native", 1.0).values()) == {"native"}


def test_defect_windows_follow_each_types_mode():
    crack = np.zeros((128, 128), bool)
    crack[20:21, 10:110] = True
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    windows = defect_windows([(image, crack, 1), (image, crack, 2)], 32, {1: "native", 2: "resize"})
    assert windows.defect_ids.tolist() == [1] * MAX_TILES + [2]  # tiles for type 1, one shrunk window for 2
    assert windows.masks[:MAX_TILES].sum(dim=(1, 2, 3)).tolist() == [32] * MAX_TILES


def test_guidance_costs_one_normal_call_per_step_and_none_at_scale_one(tmp_path, monkeypatch):
    from panda.synth.diffusion import DiffusionSynthesizer

    calls = {"normal": 0}
    real_normal = PixelDenoiser.normal

    def counting(self, *args, **kwargs):
        calls["normal"] += 1
        return real_normal(self, *args, **kwargs)

    monkeypatch.setattr(PixelDenoiser, "normal", counting)
    model_dir = _saved_model(tmp_path, "resize", ("crack", "hole"))
    image = np.full((32, 32, 3), 128, np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    plain = DiffusionSynthesizer(model_dir, SamplerConfig(steps=3, pma_steps=1), 0)
    plain.batch([image], [mask], "hole")
    assert calls["normal"] == 0  # scale 1: one denoiser call per step, no normal reference
    guided = DiffusionSynthesizer(model_dir, SamplerConfig(steps=3, pma_steps=1, guidance_scale=2.0), 0)
    guided.batch([image], [mask], "crack")
    assert calls["normal"] == 3  # scale 2: the normal reference once per step


def test_match_contrast_gives_each_defect_its_real_examples_contrast(tmp_path):
    from panda.synth.context import DefectContext, placement_prior
    from panda.synth.params import SynthParams
    from panda.synth.quality import defect_contrast
    from panda.synth.run import batch_synthesizer

    examples = []
    for value in (30, 200):  # one dark and one bright real example on a mid-gray product
        image = np.full((64, 64, 3), 120, np.uint8)
        mask = np.zeros((64, 64), bool)
        mask[20:30, 24:36] = True
        image[mask] = value
        examples.append((image, mask))
    real = sorted(defect_contrast(i, m) for i, m in examples)
    ctx = DefectContext("crack", placement_prior([m for _, m in examples], (64, 64)), examples)
    model_dir = _saved_model(tmp_path)
    normals = [np.random.default_rng(s).integers(100, 140, (64, 64, 3), dtype=np.uint8) for s in range(6)]

    def run(match: bool) -> list:
        params = SynthParams(n_per_defect=6, steps=2, pma_steps=1, match_contrast=match)
        return batch_synthesizer("panda", params, model_dir)(normals, ctx, np.random.default_rng(0))

    plain, matched = run(False), run(True)
    for normal, (a, mask), (b, same_mask) in zip(normals, plain, matched, strict=True):
        inside = mask > 0
        assert np.array_equal(mask, same_mask) and np.array_equal(b[~inside], normal[~inside])
        assert np.array_equal(a[~inside], b[~inside])  # only labelled pixels move
        assert min(abs(defect_contrast(b, inside) - c) for c in real) < 1.0
    got = {round(defect_contrast(b, m > 0)) for b, m in matched}
    assert len(got) == 2  # both real contrasts occur: the spread is kept, not averaged away


def test_match_chroma_gives_each_defect_its_real_examples_saturation_and_leaves_gray_data_alone(tmp_path):
    from panda.synth.context import DefectContext, placement_prior
    from panda.synth.params import SynthParams
    from panda.synth.quality import defect_chroma, defect_contrast
    from panda.synth.run import batch_synthesizer

    mask = np.zeros((64, 64), bool)
    mask[20:30, 24:36] = True
    examples = []
    for red in (4, 60):  # a nearly gray and a strongly red real defect on a gray product
        image = np.full((64, 64, 3), 120, np.uint8)
        image[mask] = (90 + red, 90, 90)
        examples.append((image, mask))
    real = sorted(defect_chroma(i, m) for i, m in examples)
    contrasts = [defect_contrast(i, m) for i, m in examples]
    ctx = DefectContext("crack", placement_prior([m for _, m in examples], (64, 64)), examples)
    model_dir = _saved_model(tmp_path)
    normals = [np.random.default_rng(s).integers(100, 140, (64, 64, 3), dtype=np.uint8) for s in range(6)]

    def run(chroma: bool, images: list, context: DefectContext) -> list:
        params = SynthParams(n_per_defect=6, steps=2, pma_steps=1, match_chroma=chroma)
        return batch_synthesizer("panda", params, model_dir)(images, context, np.random.default_rng(0))

    for (image, m), (plain, _) in zip(run(True, normals, ctx), run(False, normals, ctx), strict=True):
        inside = m > 0
        assert np.array_equal(image[~inside], plain[~inside])  # only labelled pixels move
        assert min(abs(defect_chroma(image, inside) - c) for c in real) < 1.0
        assert min(abs(defect_contrast(image, inside) - c) for c in contrasts) < 1.0  # contrast still matched
    gray_examples = [(np.repeat(i.mean(-1, keepdims=True), 3, -1).astype(np.uint8), m) for i, m in examples]
    gray_ctx = DefectContext("crack", ctx.placement, gray_examples)
    gray_normals = [np.repeat(n[..., :1], 3, -1) for n in normals]
    matched, plain = run(True, gray_normals, gray_ctx), run(False, gray_normals, gray_ctx)
    for (a, _), (b, _) in zip(matched, plain, strict=True):
        assert np.array_equal(a, b)  # no colour in the real defects: nothing to match
