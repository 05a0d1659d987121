"""Drive a synthesizer over one category and write `data/synthetic/` (images, masks, manifest).

Synthesizers see each background's own pixels (`panda.data.geometry`); a padded background's pair is
mirror-padded back to the square, image and mask alike, as `preprocess` pads real defective images.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from panda.compute import ComputeParams, make_accelerator
from panda.data.geometry import mirror_pad, own_box, resize_mask
from panda.data.preprocess import category_rows, normal_train_rows
from panda.engine import quiet
from panda.errors import PandaError
from panda.io import check_replaceable, read_image, replace_dir, save_png, temp_dir_beside
from panda.synth.context import DefectContext, Sample, build_contexts
from panda.synth.cutpaste import cutpaste
from panda.synth.draem import draem
from panda.synth.manifest import MANIFEST
from panda.synth.masks import augment_mask, load_mask_folder
from panda.synth.params import SynthParams, method_counts
from panda.synth.quality import defect_chroma, defect_contrast, match_chroma, match_contrast
from panda.synth.real import real_paste

BatchSynthesizer = Callable[[list[np.ndarray], DefectContext, np.random.Generator], list[Sample]]


def _per_image(fn: Callable[[np.ndarray, DefectContext, np.random.Generator], Sample]) -> BatchSynthesizer:
    return lambda images, ctx, rng: [fn(img, ctx, rng) for img in images]


def _require_denoiser(model_dir: Path | None) -> Path:
    if model_dir is None or not (Path(model_dir) / "panda.json").is_file():
        raise PandaError(
            f"no fine-tuned PANDA denoiser in {model_dir}; run `panda finetune` with synth.method: panda"
        )
    return Path(model_dir)


def _panda(
    params: SynthParams, model_dir: Path | None, device: str, mixed_precision: str
) -> BatchSynthesizer:
    import torch

    from panda.synth.diffusion import DiffusionSynthesizer

    model = _require_denoiser(model_dir)
    config = params.sampler_config()
    synth = DiffusionSynthesizer(
        model, config, params.seed, params.window_mode, device, mixed_precision, params.enlarge
    )
    user_masks: list[np.ndarray] | None = None
    real_looks: dict[str, list[tuple[float | None, float | None]]] = {}  # per type: (contrast, chroma)

    def run(images: list[np.ndarray], ctx: DefectContext, rng: np.random.Generator) -> list[Sample]:
        nonlocal user_masks
        if params.mask_dir and user_masks is None:
            user_masks = load_mask_folder(Path(params.mask_dir), ctx.placement.shape)
            if not user_masks:
                raise PandaError(f"synth.mask_dir = {params.mask_dir}: no non-empty mask images found")
        pool = user_masks or [m for _, m in ctx.examples]
        picks, masks = [], []
        for image in images:  # one draw, then its augmentation: the order the seeds were made with
            picks.append(int(rng.integers(len(pool))))
            mask = augment_mask(pool[picks[-1]], rng, symmetries=ctx.symmetries)
            masks.append(resize_mask(mask, image.shape[:2]))
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        edited = synth.batch(images, masks, ctx.defect_type, generator)
        if params.match_contrast or params.match_chroma:
            # each defect takes the look of the real example its mask came from (a random one for
            # user masks), so the set keeps the real spread of faint and strong, gray and coloured
            if ctx.defect_type not in real_looks:
                real_looks[ctx.defect_type] = [
                    (defect_contrast(img, m), defect_chroma(img, m)) for img, m in ctx.examples
                ]
            real = real_looks[ctx.defect_type]
            if user_masks:
                picks = [int(rng.integers(len(real))) for _ in images]
            edited = [
                _match_look(img, m, *real[i], params) for img, m, i in zip(edited, masks, picks, strict=True)
            ]
        return [(img, m.astype(np.uint8) * 255) for img, m in zip(edited, masks, strict=True)]

    return run


def _match_look(
    image: np.ndarray, mask: np.ndarray, contrast: float | None, chroma: float | None, params: SynthParams
) -> np.ndarray:
    """`image` with its defect's saturation, then its contrast, set to a real example's (where asked
    and measurable): scaling colour about each pixel's gray keeps the brightness the contrast sets."""
    if params.match_chroma and chroma is not None:
        image = match_chroma(image, mask, chroma)
    if params.match_contrast and contrast is not None:
        image = match_contrast(image, mask, contrast)
    return image


def batch_synthesizer(
    method: str,
    params: SynthParams,
    model_dir: Path | None = None,
    device: str = "cpu",
    mixed_precision: str = "no",
) -> BatchSynthesizer:
    """The synthesizer called `method` (set up from `params`), as a function of a batch of normal images.

    All of a batch's randomness comes from the `rng` it is called with."""
    if method == "panda":
        return _panda(params, model_dir, device, mixed_precision)
    single = {
        "cutpaste": cutpaste,
        "draem": lambda img, ctx, rng: draem(img, ctx, rng, params.texture_dir),
        "real": real_paste,
    }
    return _per_image(single[method])


@dataclass
class BatchJob:
    """One batch of pairs: its randomness derives from (seed, type, method, first index) alone."""

    type_index: int
    context: DefectContext
    method: str
    method_index: int
    first: int  # file number of the batch's first pair within its defect type
    size: int


def plan_batches(contexts: list[DefectContext], chosen: list[str], params: SynthParams) -> list[BatchJob]:
    """Every batch to make, in output order: per defect type, per method of the mix, `batch_size` each."""
    jobs = []
    for ti, ctx in enumerate(contexts):
        if ctx.defect_type not in chosen:
            continue  # seeds stay tied to the type's place among all types
        index = 0  # file numbering runs on across the methods of the mix
        for mi, (name, count) in enumerate(method_counts(params)):
            for start in range(0, count, params.batch_size):
                jobs.append(BatchJob(ti, ctx, name, mi, index, min(params.batch_size, count - start)))
                index += jobs[-1].size
    return jobs


def _run_batch(
    job: BatchJob,
    method: BatchSynthesizer,
    normals: pd.DataFrame,
    processed_dir: Path,
    tmp: Path,
    category: str,
    seed: int,
) -> list[dict]:
    rng = np.random.default_rng([seed, job.type_index, job.method_index, job.first])
    bases = [normals.iloc[int(rng.integers(len(normals)))] for _ in range(job.size)]
    squares = [read_image(processed_dir / b["image_path"], "RGB") for b in bases]
    size = squares[0].shape[0]
    boxes = [own_box(b, size) for b in bases]
    images = [sq[:h, :w] for sq, (h, w) in zip(squares, boxes, strict=True)]
    records = []
    defect = job.context.defect_type
    for i, (base, (image, mask)) in enumerate(zip(bases, method(images, job.context, rng), strict=True)):
        stem = f"{defect}_{job.first + i:04d}"
        save_png(mirror_pad(image, size), tmp / defect / f"{stem}.png")
        save_png(mirror_pad(mask, size), tmp / defect / f"{stem}_mask.png")
        records.append(
            {
                "category": category,
                "defect_type": defect,
                "method": job.method,
                "image_path": f"{defect}/{stem}.png",
                "mask_path": f"{defect}/{stem}_mask.png",
                "mask_area": round(float((mask > 0).mean()), 6),
                "background": base["image_path"],
            }
        )
    return records


def synthesize(
    manifest: pd.DataFrame,
    processed_dir: Path,
    out_dir: Path,
    category: str,
    params: SynthParams,
    model_dir: Path | None = None,
    compute: ComputeParams | None = None,
) -> tuple[pd.DataFrame, float]:
    """Write `n_per_defect` pairs per defect type of `category`; return (manifest, seconds per image).

    Defect types are those with `gen_train` images: the generator never sees test defects. Under a
    launcher the batches are dealt round-robin to the processes, each on its own device; every batch
    is computed as in one process, so N processes write exactly the files one process writes. The main
    process writes the manifest and swaps the folder in once every process has finished.
    """
    from accelerate.utils import broadcast_object_list, gather_object

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
    accelerator = make_accelerator(compute)
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process
    device, precision = str(accelerator.device), accelerator.mixed_precision
    methods = {
        m: batch_synthesizer(m, params, model_dir, device, precision) for m, _ in method_counts(params)
    }
    jobs = plan_batches(contexts, params.defect_types or known, params)
    mine = [job for b, job in enumerate(jobs) if b % world == rank]
    if main:
        check_replaceable(Path(out_dir), "synthetic")
    shared = [str(temp_dir_beside(Path(out_dir))) if main else ""]
    if world > 1:
        broadcast_object_list(shared, from_process=0)
    tmp = Path(shared[0])
    began = time.perf_counter()
    try:
        records: list[list[dict]] = []
        desc = f"synthesize ({params.method})"
        bar = tqdm(total=sum(j.size for j in mine), desc=desc, unit="img", **quiet(main))
        for job in mine:
            records.append(
                _run_batch(job, methods[job.method], normals, processed_dir, tmp, category, params.seed)
            )
            bar.update(job.size)
        bar.close()
        order = {id(job): b for b, job in enumerate(jobs)}
        numbered = [(order[id(job)], r) for job, r in zip(mine, records, strict=True)]
        if world > 1:
            numbered = gather_object(numbered)
        frame = pd.DataFrame([row for _, batch in sorted(numbered, key=lambda x: x[0]) for row in batch])
        accelerator.wait_for_everyone()
        if main:
            frame.to_csv(tmp / MANIFEST, index=False)
            replace_dir(tmp, Path(out_dir), "synthetic")
    except BaseException:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()
    return frame, (time.perf_counter() - began) / max(1, sum(j.size for j in mine))
