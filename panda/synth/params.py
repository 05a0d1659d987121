"""`synth` in params.yaml: which synthesizer makes how many pairs, and the PANDA sampler's settings.

Kept apart from the synthesizers so that stages which only need the plan (finetune: does panda make
any pairs?) do not import, and so do not depend on, the synthesis code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from panda.diffusion.sampler import SamplerConfig
from panda.errors import PandaError

METHODS = ("panda", "cutpaste", "draem", "real")
# `synth` keys that only panda reads, besides the sampler's (`SamplerConfig`): a run made without
# panda gives the same pairs whatever they are
PANDA_ONLY = ("mask_dir", "window_mode", "match_contrast", "match_chroma", "enlarge")
WINDOW_MODES = ("auto", "resize", "native")  # auto: each type as the denoiser learnt it
ENLARGE_MODES = ("bicubic", "residual")  # how a window sampled shrunk is enlarged back (diffusion.py)


@dataclass
class SynthParams(SamplerConfig):
    """`synth`: the sampler's settings (inherited from `SamplerConfig`, method.md section 3) and
    which method makes how many pairs where."""

    method: str = "panda"
    n_per_defect: int = 24
    seed: int = 0
    placement: str = "uniform"  # prior: where this defect type occurs in gen_train; uniform: anywhere
    texture_dir: str | None = None  # draem: a folder of texture photos (e.g. DTD); null = built-in photos
    batch_size: int = 16  # panda: images sampled together
    mask_dir: str | None = None  # panda: user-supplied target masks; null = augmented gen_train masks
    defect_types: list[str] = field(default_factory=list)  # synthesize only these types; [] = all
    mix_method: str | None = None  # another method that makes `mix_fraction` of each type's pairs
    mix_fraction: float = 0.0
    window_mode: str = "auto"  # panda: as the denoiser was fine-tuned (auto), or force resize / native
    match_contrast: bool = True  # panda: shift each defect to the contrast of its mask's real example
    match_chroma: bool = True  # panda, colour data: scale each defect's saturation to its mask's example's
    enlarge: str = "bicubic"  # panda, resized windows: enlarge the sample (bicubic) or only its change

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(**{f.name: getattr(self, f.name) for f in fields(SamplerConfig)})

    def validate(self) -> None:
        if self.method not in METHODS:
            raise PandaError(
                f"synth.method = '{self.method}' is not available; choose one of: {', '.join(METHODS)}"
            )
        if self.placement not in ("prior", "uniform"):
            raise PandaError(f"synth.placement = '{self.placement}': use 'prior' or 'uniform'")
        if self.mix_fraction and self.mix_method not in METHODS:
            raise PandaError(
                f"synth.mix_method = {self.mix_method!r}: with synth.mix_fraction > 0 choose one of: "
                f"{', '.join(METHODS)}"
            )
        if not 0 <= self.mix_fraction <= 1:
            raise PandaError("synth.mix_fraction must lie in [0, 1] (0 = no mix)")
        if self.window_mode not in WINDOW_MODES:
            raise PandaError(
                f"synth.window_mode = '{self.window_mode}': use one of {', '.join(WINDOW_MODES)}"
            )
        if self.enlarge not in ENLARGE_MODES:
            raise PandaError(f"synth.enlarge = '{self.enlarge}': use one of {', '.join(ENLARGE_MODES)}")
        if self.n_per_defect < 1 or self.batch_size < 1:
            raise PandaError("synth.n_per_defect and synth.batch_size must be >= 1")
        super().validate()


def method_counts(params: SynthParams) -> list[tuple[str, int]]:
    """(method, pairs per defect type): `synth.method`, then `synth.mix_method` for its share."""
    n_mix = round(params.mix_fraction * params.n_per_defect) if params.mix_method else 0
    plan = [(params.method, params.n_per_defect - n_mix), (params.mix_method or "", n_mix)]
    return [(m, n) for m, n in plan if n > 0]
