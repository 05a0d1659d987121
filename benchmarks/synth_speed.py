"""Synthesis speed: PANDA's sampler vs a plain inpainting loop, same model, guidance, steps and batch.

Run after `dvc repro` (it uses data/models/diffusion and the preprocessed gen_train masks):
    python benchmarks/synth_speed.py            # writes reports/benchmark/speed.md and .json
Also measures end-to-end synthesis (crop, resize, sample, paste back) in images per second.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
import torch

from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.diffusion.speed import time_samplers
from panda.io import read_image, write_json
from panda.params import load_params, section
from panda.synth.diffusion import DiffusionSynthesizer
from panda.synth.masks import augment_mask
from panda.synth.params import SynthParams


@click.command()
@click.option("--params", "params_path", default="params.yaml", show_default=True)
@click.option("--model-dir", default="data/models/diffusion", show_default=True)
@click.option("--processed-dir", default="data/processed", show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--out", "out_stem", default="reports/benchmark/speed", show_default=True)
def main(params_path: str, model_dir: str, processed_dir: str, repeats: int, out_stem: str) -> None:
    params = load_params(Path(params_path))
    synth = section(params, "synth", SynthParams, params_path)
    category = params["data"]["category"]
    rows = category_rows(load_manifest(Path(processed_dir)), category)
    gen = rows[rows["split"] == "gen_train"].sort_values("image_path")
    normal = normal_train_rows(rows)
    defect_type = sorted(gen["defect_type"].unique())[0]
    rng = np.random.default_rng(0)
    real_masks = [read_image(Path(processed_dir) / p, "L") >= 128 for p in gen["mask_path"]]
    masks = [
        augment_mask(real_masks[int(rng.integers(len(real_masks)))], rng) for _ in range(synth.batch_size)
    ]
    images = [read_image(Path(processed_dir) / p, "RGB") for p in normal["image_path"][: synth.batch_size]]

    synthesizer = DiffusionSynthesizer(Path(model_dir), synth.sampler_config(), seed=0)
    synthesizer.batch(images, masks, defect_type)  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        synthesizer.batch(images, masks, defect_type)
    end_to_end = len(images) * repeats / (time.perf_counter() - began)

    background, target, defect = synthesizer.prepare(images, masks, defect_type)
    batch = (background, target, defect)
    results = time_samplers(synthesizer.model, synthesizer.scheduler, batch, synth.sampler_config(), repeats)
    panda, plain = results
    ratio = panda.seconds_per_batch / plain.seconds_per_batch
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "sampler": synth.sampler,
        "steps": synth.steps,
        "guidance_scale": synth.guidance_scale,
        "batch_size": synth.batch_size,
        "end_to_end_images_per_second": round(end_to_end, 2),
        "panda_vs_plain_ratio": round(ratio, 3),
        "samplers": [asdict(r) for r in results],
    }
    write_json(report, f"{out_stem}.json")
    lines = [
        f"# Synthesis speed ({category}, {report['machine']})",
        "",
        f"{synth.sampler.upper()} {synth.steps} steps, guidance scale {synth.guidance_scale:g} (both "
        f"samplers), batch {synth.batch_size}, window {panda.window} px, median of {repeats} runs.",
        "",
        "| sampler | s / batch | images / s | denoiser calls / image |",
        "|---|---|---|---|",
        *(
            f"| {r.sampler} | {r.seconds_per_batch:.3f} | {r.images_per_second:.1f} | "
            f"{r.denoiser_calls_per_image:g} |"
            for r in results
        ),
        "",
        f"PANDA / plain {synth.sampler.upper()} inpainting time ratio: **{ratio:.3f}** (target <= 1.2).",
        f"End to end (crop, resize, sample, paste back): {end_to_end:.1f} images / s.",
    ]
    Path(f"{out_stem}.md").write_text("\n".join(lines) + "\n")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
