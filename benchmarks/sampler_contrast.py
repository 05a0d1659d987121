"""How dark or bright the sampled defects come out, per sampler setting, in seconds and without a segmenter.

Each `gen_train` defect's window (as phase B crops it) gets a window of a random normal training
image at the same place; every sampler variant generates a defect of that type under the real mask
there. The table gives, per defect type, the mean contrast (gray levels, mask minus a 2 px ring) of
the real windows and of each variant's samples, and the mean absolute gap. Only `gen_train` and
normal training images are read, never the test split:
    python benchmarks/sampler_contrast.py --model-dir data/models/diffusion \
        --variant default: --variant "ddpm-g2:sampler=ddpm;guidance_scale=2"
Writes <out>.md and .json, and <out>.png: two windows per defect type (rows), the real defect and
each setting's sample under its mask (columns), enlarged 3x.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np
import torch

from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.diffusion.denoiser import PixelDenoiser
from panda.diffusion.phase_b import DefectWindows, defect_windows
from panda.diffusion.sampler import SamplerConfig, make_scheduler, phased_sample
from panda.figures import grid
from panda.io import read_image, write_json
from panda.synth.quality import defect_contrast
from stages.benchmark import parse_sets


def window_pairs(
    processed: Path, category: str, model: PixelDenoiser, seed: int
) -> tuple[DefectWindows, DefectWindows]:
    """(real defect windows, normal windows under the same masks and crops) for every gen_train defect."""
    rows = category_rows(load_manifest(processed), category)
    normals = normal_train_rows(rows)
    rng = np.random.default_rng(seed)
    real, normal = [], []
    for _, r in rows[rows["split"] == "gen_train"].sort_values("image_path").iterrows():
        mask = read_image(processed / r["mask_path"], "L") >= 128
        defect_id = model.defect_id(r["defect_type"])
        real.append((read_image(processed / r["image_path"], "RGB"), mask, defect_id))
        other = normals.iloc[int(rng.integers(len(normals)))]
        normal.append((read_image(processed / other["image_path"], "RGB"), mask, defect_id))
    window = int(model.unet.config.sample_size)
    return defect_windows(real, window), defect_windows(normal, window)


def contrast_per_type(images: torch.Tensor, windows: DefectWindows, names: list[str]) -> dict[str, float]:
    """Mean contrast per defect type of `images` (B,3,w,w in [-1, 1]) under the windows' masks."""
    gray = ((images.clamp(-1, 1) + 1) * 127.5).mean(dim=1).numpy()
    masks = windows.masks[:, 0].numpy().astype(bool)
    values: dict[str, list[float]] = {}
    for g, m, d in zip(gray, masks, windows.defect_ids.tolist(), strict=True):
        if (c := defect_contrast(g, m, ring=2)) is not None:
            values.setdefault(names[d - 1], []).append(c)
    return {t: round(float(np.mean(v)), 1) for t, v in sorted(values.items())}


def to_uint8(images: torch.Tensor, zoom: int = 3) -> np.ndarray:
    """(B,3,w,w) in [-1, 1] -> (B, zoom w, zoom w, 3) uint8, pixels repeated so fine detail stays visible."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return x.repeat(zoom, axis=1).repeat(zoom, axis=2)


def sample_grid(
    samples: dict[str, torch.Tensor], defect_ids: torch.Tensor, path: Path, per_type: int = 2
) -> Path:
    """Rows: the first `per_type` windows of each defect type; columns: one per setting."""
    picks = [
        i for d in defect_ids.unique().tolist() for i in (defect_ids == d).nonzero()[:per_type, 0].tolist()
    ]
    tiles = {name: to_uint8(images[picks]) for name, images in samples.items()}
    return grid([[tiles[name][r] for name in samples] for r in range(len(picks))], path, titles=list(samples))


def _variant(spec: str) -> tuple[str, SamplerConfig]:
    name, _, rest = spec.partition(":")
    return name, SamplerConfig(
        **parse_sets(tuple(s for s in rest.split(";") if s), SamplerConfig, "a sampler")
    )


@click.command()
@click.option(
    "--model-dir", type=click.Path(path_type=Path), default="data/models/diffusion", show_default=True
)
@click.option("--processed-dir", type=click.Path(path_type=Path), default="data/processed", show_default=True)
@click.option("--category", required=True)
@click.option("--variant", "variants", multiple=True, required=True, help="NAME:key=value;key=value")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", "out_stem", default="reports/benchmark/sampler-contrast", show_default=True)
def main(
    model_dir: Path, processed_dir: Path, category: str, variants: tuple[str, ...], seed: int, out_stem: str
) -> None:
    """Contrast of sampled defects vs the real gen_train ones, for each sampler variant."""
    model = PixelDenoiser.load(model_dir)
    real, normal = window_pairs(processed_dir, category, model, seed)
    names = model.defect_types
    table = {"real gen_train": contrast_per_type(real.images, real, names)}
    samples = {"real": real.images}
    seconds = {}
    for spec in variants:
        name, config = _variant(spec)
        config.validate()
        began = time.perf_counter()
        out = phased_sample(
            model,
            make_scheduler(model_dir / "scheduler", config.sampler, config.steps),
            model.encode(normal.images),
            normal.masks,
            normal.defect_ids,
            config,
            torch.Generator().manual_seed(seed),
        )
        seconds[name] = round(time.perf_counter() - began, 1)
        samples[name] = model.decode(out)
        table[name] = contrast_per_type(samples[name], normal, names)
        click.echo(f"{name}: {table[name]} ({seconds[name]} s)")
    target = table["real gen_train"]
    lines = [
        f"# Sampled defect contrast ({category}, {len(real.images)} gen_train masks, seed {seed})",
        "",
        f"Model `{model_dir}`. Gray levels, mask minus a 2 px ring, in the "
        f"{model.unet.config.sample_size} px window.",
        "",
        "| setting | " + " | ".join(names) + " | gap | s |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for name, row in table.items():
        gap = np.mean([abs(row[t] - target[t]) for t in names]) if name in seconds else 0.0
        cells = " | ".join(f"{row[t]:+.1f}" for t in names)
        lines.append(f"| {name} | {cells} | {gap:.1f} | {seconds.get(name, '-')} |")
    write_json(
        {"model_dir": str(model_dir), "variants": list(variants), "contrast": table, "seconds": seconds},
        f"{out_stem}.json",
    )
    Path(f"{out_stem}.md").write_text("\n".join(lines) + "\n")
    sample_grid(samples, real.defect_ids, Path(f"{out_stem}.png"))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
