"""Drive a synthesizer over one category and write `data/synthetic/` (images, masks, manifest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from panda.data.preprocess import category_rows, normal_train_rows
from panda.diffusion.sampler import SamplerConfig
from panda.errors import PandaError
from panda.io import atomic_dir, read_image, save_png
from panda.synth.context import DefectContext, Sample, build_contexts
from panda.synth.cutpaste import cutpaste
from panda.synth.draem import draem
from panda.synth.masks import augment_mask, load_mask_folder
from panda.synth.real import real_paste

if TYPE_CHECKING:
    from panda.synth.calibrate import GuidanceCalibration

BatchSynthesizer = Callable[[list[np.ndarray], DefectContext, np.random.Generator], list[Sample]]
MANIFEST = "manifest.csv"
METHODS = ("panda", "cutpaste", "draem", "real")
WINDOW_MODES = ("auto", "resize", "native")  # auto: each type as the denoiser learnt it (panda.synth.panda)


@dataclass
class SynthParams:
    method: str
    n_per_defect: int
    seed: int = 0
    placement: str = "prior"  # prior: where this defect type occurs in gen_train; uniform: anywhere
    texture_dir: str | None = None  # draem: a folder of texture photos (e.g. DTD); null = built-in photos
    # panda (method.md section 3)
    steps: int = 20
    sampler: str = "ddim"
    pma_steps: int = 16
    only_windows: list[list[float]] = field(default_factory=lambda: [[0.7, 0.8], [0.3, 0.4]])
    inject_background: bool = True
    batch_size: int = 16
    mask_dir: str | None = None  # panda: user-supplied target masks; null = augmented gen_train masks
    guidance_scale: float = 1.0  # panda: eps_normal + s (eps - eps_normal); 1 = off (*ours*)
    # panda: guidance_scale per defect type; auto = measured on gen_train (panda.synth.calibrate)
    type_guidance: dict[str, float] | str = field(default_factory=dict)
    defect_types: list[str] = field(default_factory=list)  # synthesize only these types; [] = all
    mix_method: str | None = None  # another method that makes `mix_fraction` of each type's pairs
    mix_fraction: float = 0.0
    window_mode: str = "auto"  # panda: as the denoiser was fine-tuned (auto), or force resize / native

    def sampler_config(self) -> SamplerConfig:
        return SamplerConfig(
            self.steps,
            self.sampler,
            self.pma_steps,
            self.only_windows,
            self.inject_background,
            self.guidance_scale,
        )

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
        if self.n_per_defect < 1 or self.batch_size < 1:
            raise PandaError("synth.n_per_defect and synth.batch_size must be >= 1")
        self.sampler_config().validate()
        if isinstance(self.type_guidance, str):
            if self.type_guidance != "auto":
                raise PandaError(
                    f"synth.type_guidance = {self.type_guidance!r}: use auto, "
                    "or a mapping such as {break: 1.0}"
                )
            return
        for defect_type, scale in self.type_guidance.items():
            if not isinstance(scale, int | float) or scale < 1:
                raise PandaError(
                    f"synth.type_guidance.{defect_type} = {scale!r} must be a number >= 1 (1 = no guidance)"
                )


def _per_image(fn: Callable[[np.ndarray, DefectContext, np.random.Generator], Sample]) -> BatchSynthesizer:
    return lambda images, ctx, rng: [fn(img, ctx, rng) for img in images]


def _require_denoiser(model_dir: Path | None) -> Path:
    if model_dir is None or not (Path(model_dir) / "panda.json").is_file():
        raise PandaError(
            f"no fine-tuned PANDA denoiser in {model_dir}; run `panda finetune` with synth.method: panda"
        )
    return Path(model_dir)


def resolve_guidance(
    params: SynthParams, manifest: pd.DataFrame, processed_dir: Path, category: str, model_dir: Path | None
) -> tuple[SynthParams, GuidanceCalibration | None]:
    """`params` with `type_guidance: auto` measured into per-type scales, and the measurement
    (None when nothing was measured: a mapping was given, or panda makes no pairs)."""
    if params.type_guidance != "auto":
        return params, None
    if "panda" not in [m for m, _ in method_counts(params)]:
        return replace(params, type_guidance={}), None
    from panda.synth.calibrate import calibrate_guidance

    rows = category_rows(manifest, category)
    types = params.defect_types or sorted(rows.loc[rows["split"] == "gen_train", "defect_type"].unique())
    calibration = calibrate_guidance(
        _require_denoiser(model_dir),
        rows,
        processed_dir,
        params.sampler_config(),
        types,
        params.seed,
        params.window_mode,
        batch_size=params.batch_size,
    )
    return replace(params, type_guidance=calibration.scales), calibration


def _panda(params: SynthParams, model_dir: Path | None) -> BatchSynthesizer:
    from panda.synth.panda import PandaSynthesizer

    model = _require_denoiser(model_dir)
    config = params.sampler_config()
    synth = PandaSynthesizer(model, config, params.seed, params.window_mode, params.type_guidance)
    user_masks: list[np.ndarray] | None = None

    def run(images: list[np.ndarray], ctx: DefectContext, rng: np.random.Generator) -> list[Sample]:
        nonlocal user_masks
        if params.mask_dir and user_masks is None:
            user_masks = load_mask_folder(Path(params.mask_dir), images[0].shape[:2])
            if not user_masks:
                raise PandaError(f"synth.mask_dir = {params.mask_dir}: no non-empty mask images found")
        pool = user_masks or [m for _, m in ctx.examples]
        masks = [
            augment_mask(pool[int(rng.integers(len(pool)))], rng, symmetries=ctx.symmetries) for _ in images
        ]
        edited = synth.batch(images, masks, ctx.defect_type)
        return [(img, m.astype(np.uint8) * 255) for img, m in zip(edited, masks, strict=True)]

    return run


def batch_synthesizer(method: str, params: SynthParams, model_dir: Path | None = None) -> BatchSynthesizer:
    """The synthesizer called `method` (set up from `params`), as a function of a batch of normal images."""
    if method == "panda":
        return _panda(params, model_dir)
    single = {
        "cutpaste": cutpaste,
        "draem": lambda img, ctx, rng: draem(img, ctx, rng, params.texture_dir),
        "real": real_paste,
    }
    return _per_image(single[method])


def method_counts(params: SynthParams) -> list[tuple[str, int]]:
    """(method, pairs per defect type): `synth.method`, then `synth.mix_method` for its share."""
    n_mix = round(params.mix_fraction * params.n_per_defect) if params.mix_method else 0
    plan = [(params.method, params.n_per_defect - n_mix), (params.mix_method or "", n_mix)]
    return [(m, n) for m, n in plan if n > 0]


def synthesize(
    manifest: pd.DataFrame,
    processed_dir: Path,
    out_dir: Path,
    category: str,
    params: SynthParams,
    model_dir: Path | None = None,
) -> tuple[pd.DataFrame, float]:
    """Write `n_per_defect` pairs per defect type of `category`; return (manifest, seconds per image).

    Defect types are those with `gen_train` images: the generator never sees test defects.
    """
    rows = category_rows(manifest, category)
    normals = normal_train_rows(rows)
    if normals.empty or not (rows["split"] == "gen_train").any():
        raise PandaError(
            f"category '{category}' needs normal train images and gen_train defects to synthesize"
        )
    first = read_image(processed_dir / normals.iloc[0]["image_path"], "RGB")
    contexts = build_contexts(rows, processed_dir, first.shape[:2], params.placement)
    known = [c.defect_type for c in contexts]
    if unknown := sorted(set(params.defect_types) - set(known)):
        raise PandaError(
            f"synth.defect_types: {', '.join(unknown)} has no gen_train images in '{category}'; "
            f"choose from: {', '.join(known)} (or [] for all)"
        )
    chosen = params.defect_types or known
    params, _ = resolve_guidance(params, manifest, processed_dir, category, model_dir)
    plan = [(m, n, batch_synthesizer(m, params, model_dir)) for m, n in method_counts(params)]
    records = []
    began = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        bar = tqdm(total=params.n_per_defect * len(chosen), desc=f"synthesize ({params.method})", unit="img")
        for ti, ctx in enumerate(contexts):
            if ctx.defect_type not in chosen:
                continue  # seeds stay tied to the type's place among all types
            rng = np.random.default_rng([params.seed, ti])
            index = 0  # file numbering runs on across the methods of the mix
            for name, count, method in plan:
                for start in range(0, count, params.batch_size):
                    size = min(params.batch_size, count - start)
                    bases = [normals.iloc[int(rng.integers(len(normals)))] for _ in range(size)]
                    images = [read_image(processed_dir / b["image_path"], "RGB") for b in bases]
                    for base, (image, mask) in zip(bases, method(images, ctx, rng), strict=True):
                        stem = f"{ctx.defect_type}_{index:04d}"
                        index += 1
                        save_png(image, tmp / ctx.defect_type / f"{stem}.png")
                        save_png(mask, tmp / ctx.defect_type / f"{stem}_mask.png")
                        records.append(
                            {
                                "category": category,
                                "defect_type": ctx.defect_type,
                                "method": name,
                                "image_path": f"{ctx.defect_type}/{stem}.png",
                                "mask_path": f"{ctx.defect_type}/{stem}_mask.png",
                                "mask_area": round(float((mask > 0).mean()), 6),
                                "background": base["image_path"],
                            }
                        )
                        bar.update()
        bar.close()
        frame = pd.DataFrame(records)
        frame.to_csv(tmp / MANIFEST, index=False)
    return frame, (time.perf_counter() - began) / max(1, len(records))


def load_synthetic(synthetic_dir: Path) -> pd.DataFrame:
    path = Path(synthetic_dir) / MANIFEST
    if not path.is_file():
        raise PandaError(f"synthetic manifest not found: {path}; run `panda synthesize` first")
    return pd.read_csv(path, keep_default_na=False)
