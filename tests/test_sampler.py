"""The phased dual-branch sampler pinned with a stub denoiser (no training needed)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from panda.diffusion.sampler import SamplerConfig, in_only_window, phased_sample, plain_inpaint, pma_schedule
from panda.errors import PandaError


class StubDenoiser:
    """Predicts a fixed pseudo-random noise; records every call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.sin(x * 3 + t.view(-1, 1, 1, 1).float() / 100)

    def aware(self, x, t, defect, mask):
        self.calls.append({"branch": "aware", "t": int(t[0]), "n": len(x), "mask": mask.clone()})
        return self._eps(x, t)

    def only(self, y, t, defect, mask):
        self.calls.append({"branch": "only", "t": int(t[0]), "n": len(y), "mask": mask.clone()})
        return self._eps(y, t)

    def encode(self, images):
        return images

    def decode(self, z):
        return z


def _scheduler(kind: str, steps: int):
    cls = DDIMScheduler if kind == "ddim" else DDPMScheduler
    s = cls(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="linear")
    s.set_timesteps(steps)
    return s


def _inputs(n: int = 3, size: int = 16):
    g = torch.Generator().manual_seed(0)
    background = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, 4:10, 5:12] = 1
    return background, mask, torch.ones(n, dtype=torch.long)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
@pytest.mark.parametrize(("pma_steps", "inject"), [(0, True), (16, True), (20, True), (16, False)])
def test_outside_mask_equals_background(kind, pma_steps, inject):
    background, mask, defect = _inputs()
    cfg = SamplerConfig(steps=20, sampler=kind, pma_steps=pma_steps, inject_background=inject)
    out = phased_sample(
        StubDenoiser(), _scheduler(kind, 20), background, mask, defect, cfg, torch.Generator().manual_seed(1)
    )
    outside = mask.expand_as(out) == 0
    assert torch.allclose(out[outside], background[outside], atol=1e-5)
    assert not torch.allclose(out[~outside], background[~outside], atol=1e-2)


def test_pma_mask_follows_schedule_step_by_step():
    background, mask, defect = _inputs()
    cfg = SamplerConfig(steps=20, pma_steps=16, only_windows=[], inject_background=True)
    stub, trace = StubDenoiser(), []
    phased_sample(
        stub, _scheduler("ddim", 20), background, mask, defect, cfg, torch.Generator().manual_seed(1), trace
    )
    a = pma_schedule(20, 16)
    assert a[0] == pytest.approx(15 / 16) and a[15] == 0 and a[-1] == 0
    assert torch.equal(stub.calls[0]["mask"], torch.ones_like(mask))  # first step: the whole window is free
    for i, step in enumerate(trace):
        expected = mask + a[i] * (1 - mask)
        assert torch.allclose(step["mask"], expected)
        if i + 1 < len(stub.calls):
            assert torch.allclose(stub.calls[i + 1]["mask"], expected)  # next step conditions on it


def test_hard_mask_without_pma():
    background, mask, defect = _inputs()
    stub = StubDenoiser()
    cfg = SamplerConfig(steps=10, pma_steps=0, only_windows=[])
    phased_sample(
        stub, _scheduler("ddim", 10), background, mask, defect, cfg, torch.Generator().manual_seed(1)
    )
    assert all(torch.equal(c["mask"], mask) for c in stub.calls)


@pytest.mark.parametrize(
    ("windows", "expected"), [([[0.7, 0.8], [0.3, 0.4]], [800, 750, 700, 400, 350, 300]), ([], [])]
)
def test_only_branch_steps_are_exactly_the_windows(windows, expected):
    background, mask, defect = _inputs()
    stub = StubDenoiser()
    cfg = SamplerConfig(steps=20, pma_steps=16, only_windows=windows)
    sched = _scheduler("ddim", 20)
    phased_sample(stub, sched, background, mask, defect, cfg, torch.Generator().manual_seed(1))
    only = [c["t"] for c in stub.calls if c["branch"] == "only"]
    assert only == expected
    assert only == [int(t) for t in sched.timesteps if in_only_window(int(t), 1000, windows)]
    assert all(torch.equal(c["mask"], mask) for c in stub.calls if c["branch"] == "only")


@pytest.mark.parametrize("steps", [5, 20])
def test_one_denoiser_call_per_step_per_image(steps):
    background, mask, defect = _inputs(n=4)
    stub = StubDenoiser()
    cfg = SamplerConfig(steps=steps, pma_steps=steps - 1)
    phased_sample(
        stub, _scheduler("ddim", steps), background, mask, defect, cfg, torch.Generator().manual_seed(1)
    )
    assert len(stub.calls) == steps and all(c["n"] == 4 for c in stub.calls)


def test_without_background_injection_pma_changes_nothing():
    background, mask, defect = _inputs()
    outs, stubs = [], []
    for pma_steps in (0, 16):
        stubs.append(StubDenoiser())
        cfg = SamplerConfig(steps=20, pma_steps=pma_steps, inject_background=False)
        sched, gen = _scheduler("ddim", 20), torch.Generator().manual_seed(1)
        outs.append(phased_sample(stubs[-1], sched, background, mask, defect, cfg, gen))
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(c["mask"], mask) for c in stubs[1].calls)  # the hard mask from the first step


def test_without_background_injection_only_the_final_paste_aligns():
    background, mask, defect = _inputs()
    cfg = SamplerConfig(steps=10, pma_steps=0, inject_background=False)
    out = phased_sample(
        StubDenoiser(),
        _scheduler("ddim", 10),
        background,
        mask,
        defect,
        cfg,
        torch.Generator().manual_seed(1),
    )
    outside = mask.expand_as(out) == 0
    assert torch.equal(out[outside], background[outside])


class CouplingStub(StubDenoiser):
    """The stub plus each image's mean: what the window holds outside the mask reaches inside it."""

    def _eps(self, x, t):
        return super()._eps(x, t) + x.mean(dim=(1, 2, 3), keepdim=True)


def test_injection_until_a_fraction_of_t_then_free_with_the_hard_mask():
    """inject_until 0.5: the steps at t >= 500 follow PMA with the background injected, the rest see
    the hard mask; the output lies between the two end points (1 = injection off) and keeps the
    background outside the mask."""
    background, mask, defect = _inputs()
    outs, stubs = {}, {}
    for name, inject, until in (
        ("paper", True, 0.0),
        ("early", True, 0.5),
        ("never", True, 1.0),
        ("off", False, 0.0),
    ):
        stubs[name] = CouplingStub()
        cfg = SamplerConfig(
            steps=20, pma_steps=16, only_windows=[], inject_background=inject, inject_until=until
        )
        sched, gen = _scheduler("ddim", 20), torch.Generator().manual_seed(1)
        outs[name] = phased_sample(stubs[name], sched, background, mask, defect, cfg, gen)
    early = stubs["early"].calls
    assert torch.equal(early[0]["mask"], torch.ones_like(mask))
    assert all(not torch.equal(c["mask"], mask) for c in early if c["t"] >= 550)
    assert all(torch.equal(c["mask"], mask) for c in early if c["t"] < 500)
    assert torch.equal(outs["never"], outs["off"])
    assert not torch.allclose(outs["early"], outs["paper"], atol=1e-3)
    assert not torch.allclose(outs["early"], outs["off"], atol=1e-3)
    outside = mask.expand_as(outs["early"]) == 0
    assert torch.equal(outs["early"][outside], background[outside])


@pytest.mark.parametrize("until", [-0.1, 1.5])
def test_inject_until_outside_zero_one_is_refused(until):
    with pytest.raises(PandaError, match="synth.inject_until"):
        SamplerConfig(inject_until=until).validate()


def test_plain_inpaint_reference_keeps_the_background_and_calls_once_per_step():
    background, mask, defect = _inputs()
    stub = StubDenoiser()
    out = plain_inpaint(
        stub, _scheduler("ddim", 12), background, mask, defect, torch.Generator().manual_seed(0)
    )
    outside = mask.expand_as(out) == 0
    assert torch.allclose(out[outside], background[outside], atol=1e-5)
    assert len(stub.calls) == 12 and all(c["n"] == len(background) for c in stub.calls)


class ScaledStub(StubDenoiser):
    """The stub's predictions times `scale`, and a normal-image prediction of zero."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def _eps(self, x, t):
        return self.scale * super()._eps(x, t)

    def normal(self, x, t):
        self.calls.append({"branch": "normal", "t": int(t[0]), "n": len(x), "mask": None})
        return torch.zeros_like(x)


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_guidance_extrapolates_from_the_normal_prediction_with_one_extra_call_per_step(kind):
    """eps_normal + s (eps - eps_normal) with eps_normal = 0 is s * eps: the same samples as a stub
    that predicts s * eps without guidance; scale 1 never asks for the normal prediction."""
    background, mask, defect = _inputs()
    guided, plain, off = ScaledStub(), ScaledStub(scale=2.5), ScaledStub()
    outs = [
        phased_sample(
            stub,
            _scheduler(kind, 10),
            background,
            mask,
            defect,
            SamplerConfig(steps=10, sampler=kind, pma_steps=8, guidance_scale=s),
            torch.Generator().manual_seed(3),
        )
        for stub, s in ((guided, 2.5), (plain, 1.0), (off, 1.0))
    ]
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    assert not torch.allclose(outs[0], outs[2], atol=1e-3)
    assert [c["branch"] for c in guided.calls].count("normal") == 10 and len(guided.calls) == 20
    assert all(c["branch"] != "normal" for c in plain.calls + off.calls)


def test_guidance_below_one_is_refused():
    with pytest.raises(PandaError, match="synth.guidance_scale"):
        SamplerConfig(guidance_scale=0.5).validate()
