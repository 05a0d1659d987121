"""What the latent backend costs: seconds per fine-tuning step and per synthesized image.

Two random-weight Stable Diffusion pipelines (`panda.diffusion.random_pipeline`): `tiny` (the tests'
model) and `sd15` (Stable Diffusion 1.5's architecture: 860M UNet, 123M CLIP text encoder, f8 KL
autoencoder; weights are random, the architecture is what costs). Both run with the backend's
defaults (256 px, latents 32x32x4, batch 8, adapters 64-256-512-256-64, synth.steps 20) on the demo
data, through the same library calls `panda finetune` and `panda synthesize` make. On a GPU
(`--device cuda --precision bf16`) it also reports peak GPU memory and images/s at 50 steps.

    python benchmarks/latent_cost.py          # CPU; writes reports/benchmark/latent-cost.md/.json
    python benchmarks/latent_cost.py --device cuda --precision bf16 --out /tmp/gpu
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from panda.compute import ComputeParams  # noqa: E402
from panda.data.preprocess import load_manifest  # noqa: E402
from panda.diffusion.latent_finetune import finetune_latent  # noqa: E402
from panda.diffusion.params import FinetuneParams  # noqa: E402
from panda.diffusion.random_pipeline import save_random_pipeline  # noqa: E402
from panda.diffusion.sampler import SamplerConfig  # noqa: E402
from panda.synth.diffusion import DiffusionSynthesizer  # noqa: E402
from tests.conftest import preprocessed_demo  # noqa: E402


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    size: str, steps: int, images: int, sample_steps: int, work: Path, processed: Path, compute
) -> dict:
    model_dir = save_random_pipeline(work / f"pipeline-{size}", "sd", size, resolution=256)
    params = FinetuneParams(
        backend="latent", pretrained=str(model_dir), latent_steps=steps, checkpoint_every=10**6
    )
    manifest = load_manifest(processed)
    one_type = manifest[manifest["defect_type"].isin(["good", "crack"])]  # one defect type: one loop
    if compute.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = finetune_latent(one_type, processed, "brick", params, compute)
    loop = result.loops["crack"]
    train_peak = peak_mib(compute.device)
    result.save(work / f"diffusion-{size}")
    synth = DiffusionSynthesizer(
        work / f"diffusion-{size}",
        SamplerConfig(steps=sample_steps, pma_steps=int(0.8 * sample_steps)),
        seed=0,
        device=compute.torch_device(),
        mixed_precision=compute.mixed_precision,
    )
    rng = np.random.default_rng(0)
    backgrounds = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(images)]
    masks = [np.zeros((64, 64), bool) for _ in range(images)]
    for m in masks:
        m[20:40, 24:36] = True
    synth.batch(backgrounds[:1], masks[:1], "crack", torch.Generator().manual_seed(1))  # warm-up
    began = time.perf_counter()
    synth.batch(backgrounds, masks, "crack", torch.Generator().manual_seed(0))
    per_image = (time.perf_counter() - began) / images
    parts = result.model.parts
    return {
        "size": size,
        "unet_params_m": round(sum(p.numel() for p in parts.unet.parameters()) / 1e6, 1),
        "frozen_params_m": round(sum(p.numel() for m in parts.modules() for p in m.parameters()) / 1e6, 1),
        "trained_params_m": round(result.trained_parameters() / 1e6, 2),
        "finetune_steps": loop.steps_done,
        "batch_size": params.latent_batch_size,
        "seconds_per_step": round(loop.seconds / loop.steps_done, 3),
        "finetune_peak_mib": round(train_peak),
        "synth_images": images,
        "synth_steps": sample_steps,
        "seconds_per_image": round(per_image, 3),
        "images_per_second": round(1 / per_image, 3),
        "peak_mib": round(peak_mib(compute.device)),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| model | UNet params | frozen / trained | fine-tune s/step (batch 8) | fine-tune peak MiB "
        "| synth s/image "
        "(steps, batch) | peak MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['unet_params_m']}M | {r['frozen_params_m']}M / {r['trained_params_m']}M | "
            f"{r['seconds_per_step']} ({r['finetune_steps']} steps) | {r['finetune_peak_mib']} | "
            f"{r['seconds_per_image']} ({r['synth_steps']}, {r['synth_images']}) | {r['peak_mib']} |"
        )
    return "\n".join(lines)


@click.command()
@click.option("--size", "sizes", multiple=True, default=("tiny", "sd15"), show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", default="no", show_default=True)
@click.option("--sample-steps", type=int, default=20, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=ROOT / "reports" / "benchmark")
def main(sizes: tuple[str, ...], device: str, precision: str, sample_steps: int, out_dir: Path) -> None:
    compute = ComputeParams(device=device, mixed_precision=precision, threads=2)
    plan = {"tiny": (20, 8), "sd15": (3, 2)} if device == "cpu" else {"tiny": (50, 16), "sd15": (50, 16)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        processed = preprocessed_demo(work, image_size=64)  # the project default
        for size in sizes:
            steps, images = plan[size]
            row = measure(size, steps, images, sample_steps, work, processed, compute)
            print(json.dumps(row), flush=True)
            rows.append(row)
    torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    name = "latent-cost" if device == "cpu" else f"latent-cost-{device}-{precision}"
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch_info, "gpu": gpu}
    (out_dir / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(
        f"# Latent backend cost ({device}, {precision}; {gpu or platform.processor() or platform.machine()}, "
        f"{torch_info})\n\n`python benchmarks/latent_cost.py"
        + (f" --device {device} --precision {precision}" if device != "cpu" else "")
        + f"`\n\n{table(rows)}\n\nRandom weights (the architecture is what costs); 256 px, latents 32x32x4, "
        "one defect type; seconds per step include the first step's start-up; synthesis timed on one "
        "batch after a warm-up batch.\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
