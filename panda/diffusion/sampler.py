"""PANDA's phased, mask-aligned, dual-branch sampler (method.md section 3), batched.

Per step t (high to low), with b = q(z_bg, t_prev) and m = q(0, t_prev):
- anomaly-only step (t inside a window of `only_windows`, fractions of T):
  eps = G_O(U(y)); y = post(y, M * x0_hat(y, eps)); x = M y + (1 - M) b; y = M y + (1 - M) m
- anomaly-aware step: eps = G_A(U(x), M_cur); x0 = M_cur x0_hat(x, eps) + (1 - M_cur) z_bg;
  x = post(x, x0); y = M x + (1 - M) m; x = M_cur x + (1 - M_cur) b
- then M_cur = M + a (1 - M) with a shrinking linearly from 1 to 0 over the first `pma_steps` steps
  (*ours*: PMA counted in sampling steps; `pma_steps: 0` = hard mask from the start). The last step
  always uses the hard mask, so `pma_steps` = `steps` shrinks it over all the steps before it.
`post` is the diffusers scheduler's own step (DDIM or DDPM, strided to `steps`), fed with the noise
that corresponds to the modified x0, so the posterior maths stays diffusers'. One denoiser call per
step: `steps` calls per image, whatever the branch.
`guidance_scale` s (*ours*, not in the reference; 1 = off): every prediction becomes
eps_normal + s (eps - eps_normal), where eps_normal is the normal-image model (`Denoiser.normal`), as
classifier-free guidance extrapolates away from the unconditional prediction. A from-scratch CPU
denoiser makes defects too faint; with DDPM, s = 2 restores their contrast at the cost of a second
denoiser call per step (`steps` x 2 calls per image, counted openly). On Magnetic Tile it helps the
segmenter only without the large Fray/Uneven pairs (reports/benchmark/README.md, "Chosen on
validation"); the default is 1.
With `inject_background: false` (*ours*, the default, chosen on validation: reports/benchmark/README.md,
"Background injection off by default") the background enters neither x0 nor the per-step paste; the
window is generated freely and only the final result is pasted under the mask. PMA then has nothing
to shrink (the adapters see the hard mask from the first step), so `pma_steps` acts only with
injection on, the paper's sampler.
`inject_until` u (*ours*; 0 = every step, the paper's) stops the injection once t < u T: the early,
noisy steps, which set a window's colour and low frequencies, see the background; the later ones,
which draw texture, run free as without injection, and the mask turns hard from there on. Without
injection the background shows only in the final paste.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from panda.diffusion.denoiser import Denoiser
from panda.errors import PandaError


@dataclass
class SamplerConfig:
    steps: int = 20
    sampler: str = "ddim"
    pma_steps: int = 16
    only_windows: list[list[float]] = field(default_factory=lambda: [[0.7, 0.8], [0.3, 0.4]])
    inject_background: bool = False
    inject_until: float = 0.0
    guidance_scale: float = 1.0

    def validate(self) -> None:
        if self.sampler not in ("ddim", "ddpm"):
            raise PandaError(f"synth.sampler = '{self.sampler}': use 'ddim' or 'ddpm'")
        if self.steps < 1 or not 0 <= self.pma_steps <= self.steps:
            raise PandaError(
                f"synth.pma_steps = {self.pma_steps} must lie in [0, synth.steps = {self.steps}]; "
                "raise synth.steps for a longer shrink"
            )
        if not 0 <= self.inject_until <= 1:
            raise PandaError(
                f"synth.inject_until = {self.inject_until}: use a fraction of T in [0, 1] (0 = every step)"
            )
        if self.guidance_scale < 1:
            raise PandaError("synth.guidance_scale must be >= 1 (1 = no guidance)")
        for w in self.only_windows:
            if len(w) != 2 or not 0 <= w[0] <= w[1] <= 1:
                raise PandaError(
                    f"synth.only_windows entry {w}: use [low, high] fractions of T, 0 <= low <= high <= 1"
                )


def make_scheduler(scheduler_dir: Path, sampler: str, steps: int) -> DDIMScheduler | DDPMScheduler:
    """The training noise schedule saved by finetune, as a DDIM or DDPM sampler strided to `steps`."""
    cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    scheduler = cls.from_pretrained(scheduler_dir)
    scheduler.set_timesteps(steps)
    return scheduler


def pma_schedule(steps: int, pma_steps: int) -> list[float]:
    """a after each sampling step: 1 -> 0 linearly over `pma_steps` steps, then 0 (hard mask); the
    shrink ends by the step before the last, so the last step always sees the hard mask."""
    span = min(pma_steps, steps - 1)
    return [max(0.0, 1.0 - (i + 1) / span) if span > 0 else 0.0 for i in range(steps)]


def guided(
    denoiser: Denoiser, eps: torch.Tensor, x: torch.Tensor, t: torch.Tensor, scale: float
) -> torch.Tensor:
    """eps_normal + scale (eps - eps_normal): push the prediction away from what a normal image would be."""
    if scale == 1:
        return eps
    eps_normal = denoiser.normal(x, t)
    return eps_normal + scale * (eps - eps_normal)


def in_only_window(t: int, num_train_timesteps: int, windows: list[list[float]]) -> bool:
    return any(lo * num_train_timesteps <= t <= hi * num_train_timesteps for lo, hi in windows)


@torch.no_grad()
def phased_sample(
    denoiser: Denoiser,
    scheduler: DDIMScheduler | DDPMScheduler,
    background: torch.Tensor,
    mask: torch.Tensor,
    defect: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator,
    trace: list[dict] | None = None,
) -> torch.Tensor:
    """Generate defects inside `mask` (B,1,H,W in [0,1]) on `background` (B,C,H,W in [-1,1])."""
    z_bg = denoiser.encode(background)
    acp = scheduler.alphas_cumprod
    big_t = scheduler.config.num_train_timesteps
    timesteps = [int(t) for t in scheduler.timesteps]
    a_after = pma_schedule(len(timesteps), config.pma_steps)

    def abar(t: int) -> torch.Tensor:
        return acp[t] if t >= 0 else torch.tensor(1.0)

    def noise() -> torch.Tensor:  # drawn on the CPU: the same numbers on every device
        return torch.randn(z_bg.shape, generator=generator).to(z_bg.device, z_bg.dtype)

    def post(x: torch.Tensor, x0: torch.Tensor, t: int) -> torch.Tensor:
        eps_equiv = (x - abar(t).sqrt() * x0) / (1 - abar(t)).sqrt()
        return scheduler.step(eps_equiv, t, x, generator=generator).prev_sample

    def x0_hat(x: torch.Tensor, eps: torch.Tensor, t: int) -> torch.Tensor:
        return (x - (1 - abar(t)).sqrt() * eps) / abar(t).sqrt()

    scale = config.guidance_scale
    x = noise()
    y = x.clone()
    m_cur = torch.ones_like(mask) if config.pma_steps and config.inject_background else mask.clone()
    for i, t in enumerate(timesteps):
        inject = config.inject_background and t >= config.inject_until * big_t
        if not inject:
            m_cur = mask
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        b = abar(t_prev).sqrt() * z_bg + (1 - abar(t_prev)).sqrt() * noise()
        m = (1 - abar(t_prev)).sqrt() * noise()
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        only = in_only_window(t, big_t, config.only_windows)
        if only:
            eps = guided(denoiser, denoiser.only(y, t_batch, defect, mask), y, t_batch, scale)
            y = post(y, mask * x0_hat(y, eps, t), t)
            x = mask * y + (1 - mask) * b if inject else mask * y + (1 - mask) * x
            y = mask * y + (1 - mask) * m
        else:
            eps = guided(denoiser, denoiser.aware(x, t_batch, defect, m_cur), x, t_batch, scale)
            x0 = x0_hat(x, eps, t)
            if inject:
                x0 = m_cur * x0 + (1 - m_cur) * z_bg
            x = post(x, x0, t)
            y = mask * x + (1 - mask) * m
            if inject:
                x = m_cur * x + (1 - m_cur) * b
        if inject:
            m_cur = mask + a_after[i] * (1 - mask)
        if trace is not None:
            trace.append(
                {
                    "t": t,
                    "branch": "only" if only else "aware",
                    "a": a_after[i] if inject else 0.0,
                    "mask": m_cur.clone(),
                }
            )
    out = denoiser.decode(x)
    if not inject:  # injection off at the last step; a latent model's mask is at latent size: nearest cell
        mask = F.interpolate(mask, size=out.shape[-2:], mode="nearest")
        out = mask * out + (1 - mask) * background
    return out


@torch.no_grad()
def plain_inpaint(
    denoiser: Denoiser,
    scheduler: DDIMScheduler | DDPMScheduler,
    background: torch.Tensor,
    mask: torch.Tensor,
    defect: torch.Tensor,
    generator: torch.Generator,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The reference PANDA is timed against: one masked scheduler step per timestep, noised background
    pasted outside the hard mask (RePaint without resampling), same denoiser, guidance, steps and
    scheduler."""
    z_bg = denoiser.encode(background)
    acp = scheduler.alphas_cumprod
    timesteps = [int(t) for t in scheduler.timesteps]

    def noise() -> torch.Tensor:
        return torch.randn(z_bg.shape, generator=generator).to(z_bg.device, z_bg.dtype)

    x = noise()
    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        abar = acp[t_prev] if t_prev >= 0 else torch.tensor(1.0)
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        eps = guided(denoiser, denoiser.aware(x, t_batch, defect, mask), x, t_batch, guidance_scale)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
        known = abar.sqrt() * z_bg + (1 - abar).sqrt() * noise()
        x = mask * x + (1 - mask) * known
    return denoiser.decode(x)
