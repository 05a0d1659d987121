"""Drive a synthesizer over one category and write `data/synthetic/` (images, masks, manifest)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from panda.errors import PandaError
from panda.io import atomic_dir, read_image, save_png
from panda.synth.context import DefectContext, build_contexts
from panda.synth.cutpaste import cutpaste
from panda.synth.draem import draem
from panda.synth.real import real_paste

Synthesizer = Callable[[np.ndarray, DefectContext, np.random.Generator], tuple[np.ndarray, np.ndarray]]
MANIFEST = "manifest.csv"


@dataclass
class SynthParams:
    method: str
    n_per_defect: int
    seed: int = 0
    placement: str = "prior"  # prior: where this defect type occurs in gen_train; uniform: anywhere
    texture_dir: str | None = None  # draem: a folder of texture photos (e.g. DTD); null = built-in photos

    def validate(self) -> None:
        if self.method not in METHODS:
            raise PandaError(
                f"synth.method = '{self.method}' is not available; choose one of: {', '.join(METHODS)}"
            )
        if self.placement not in ("prior", "uniform"):
            raise PandaError(f"synth.placement = '{self.placement}': use 'prior' or 'uniform'")
        if self.n_per_defect < 1:
            raise PandaError("synth.n_per_defect must be >= 1")


def methods(params: SynthParams) -> dict[str, Synthesizer]:
    """Every synthesizer by its `synth.method` name."""
    return {
        "cutpaste": cutpaste,
        "draem": lambda img, ctx, rng: draem(img, ctx, rng, params.texture_dir),
        "real": real_paste,
    }


METHODS = ("cutpaste", "draem", "real")


def category_rows(manifest: pd.DataFrame, category: str) -> pd.DataFrame:
    rows = manifest[manifest["category"] == category]
    if rows.empty:
        known = ", ".join(sorted(manifest["category"].unique()))
        raise PandaError(f"data.category = '{category}' is not in the dataset; choose one of: {known}")
    return rows


def synthesize(
    manifest: pd.DataFrame, processed_dir: Path, out_dir: Path, category: str, params: SynthParams
) -> tuple[pd.DataFrame, float]:
    """Write `n_per_defect` pairs per defect type of `category`; return (manifest, seconds per image).

    Defect types are those with `gen_train` images: the generator never sees test defects.
    """
    rows = category_rows(manifest, category)
    normals = rows[(rows["split"] == "train") & (rows["defect_type"] == "good")]
    if normals.empty or not (rows["split"] == "gen_train").any():
        raise PandaError(
            f"category '{category}' needs normal train images and gen_train defects to synthesize"
        )
    first = read_image(processed_dir / normals.iloc[0]["image_path"], "RGB")
    contexts = build_contexts(rows, processed_dir, first.shape[:2], params.placement)
    method = methods(params)[params.method]
    records = []
    began = time.perf_counter()
    with atomic_dir(out_dir) as tmp:
        total = params.n_per_defect * len(contexts)
        bar = tqdm(total=total, desc=f"synthesize ({params.method})", unit="img")
        for ti, ctx in enumerate(contexts):
            defect = ctx.defect_type
            rng = np.random.default_rng([params.seed, ti])
            for i in range(params.n_per_defect):
                base = normals.iloc[int(rng.integers(len(normals)))]
                image, mask = method(read_image(processed_dir / base["image_path"], "RGB"), ctx, rng)
                stem = f"{defect}_{i:04d}"
                save_png(image, tmp / defect / f"{stem}.png")
                save_png(mask, tmp / defect / f"{stem}_mask.png")
                records.append(
                    {
                        "category": category,
                        "defect_type": defect,
                        "method": params.method,
                        "image_path": f"{defect}/{stem}.png",
                        "mask_path": f"{defect}/{stem}_mask.png",
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
