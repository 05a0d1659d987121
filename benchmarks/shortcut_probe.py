"""Does a segmenter trained on panda's pairs fire where the generator merely redrew normal texture?

If it does, it has learnt the sampler's traces (a seam, smoothed texture) instead of the defects, and
the cure is negatives redrawn by the same sampler without a defect. The probe asks the question
directly. For each finished panda run it draws target masks of each type on normal training images
(as `synthesize` does) and samples them three ways with that run's denoiser and sampler:
- guidance scale 0: the phase-A (normal) model alone, so the mask is redrawn as normal texture;
- scale 1 (the fine-tuned defect model without guidance);
- the run's own scale.
It then reads the run's segmenter inside the masks, next to the untouched images:
    python benchmarks/shortcut_probe.py --repo . --out reports/benchmark/mtd-shortcut \\
        bench-mtd-panda-auto-rpt-s0
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np
import torch
import yaml
from pixel_errors import markdown_table
from rescore import fetch, open_experiment

from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.evaluate import predict_maps
from panda.io import read_image, write_json
from panda.params import section
from panda.segment.train import load_model
from panda.synth.context import build_contexts
from panda.synth.masks import augment_mask
from panda.synth.panda import PandaSynthesizer
from panda.synth.run import SynthParams


def mask_scores(
    model: torch.nn.Module,
    images: list[np.ndarray],
    clean: list[np.ndarray],
    masks: list[np.ndarray],
    threshold: float,
) -> dict[str, float]:
    """The segmenter inside the masks (mean probability, share above `threshold`), its false alarms
    outside them per image, and how far the images moved from `clean` inside the masks (gray levels)."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    prob = predict_maps(model, x, tta=True)
    inside = np.stack(masks)
    change = (np.stack(images).astype(float) - np.stack(clean)).mean(-1)
    return {
        "p_in_mask": float(prob[inside].mean()),
        "hit_share": float((prob[inside] >= threshold).mean()),
        "fp_px_per_image": float((prob[~inside] >= threshold).sum() / len(images)),
        "change_in_mask": float(change[inside].mean()),
    }


def probe_run(
    repo: Path, name: str, tmp: Path, n: int, threshold: float, processed: dict[str, Path]
) -> list[dict]:
    """Probe one run; `processed` holds the preprocessed data already copied (shared across runs)."""
    fs = open_experiment(repo, name)
    work = tmp / name
    root = fetch(
        fs,
        name,
        {"data/models/diffusion": work / "diffusion", "data/models/segmenter/model.pt": work / "seg.pt"},
        tmp,
        processed,
    )
    params = yaml.safe_load(fs.read_text("params.yaml"))
    synth = section(params, "synth", SynthParams, f"{name}/params.yaml")
    rows = category_rows(load_manifest(root), params["data"]["category"])
    normals = normal_train_rows(rows)
    shape = read_image(root / normals.iloc[0]["image_path"], "L").shape
    model = load_model(work / "seg.pt")
    rng = np.random.default_rng(synth.seed)
    results = []
    for ctx in build_contexts(rows, root, shape, synth.placement):
        if synth.defect_types and ctx.defect_type not in synth.defect_types:
            continue
        pool = [m for _, m in ctx.examples]
        picks = rng.integers(len(normals), size=n)
        clean = [read_image(root / normals.iloc[int(i)]["image_path"], "RGB") for i in picks]
        masks = [
            augment_mask(pool[int(rng.integers(len(pool)))], rng, symmetries=ctx.symmetries) for _ in clean
        ]
        per_type = synth.type_guidance if isinstance(synth.type_guidance, dict) else {}
        own = per_type.get(ctx.defect_type, synth.guidance_scale)
        variants = {"untouched": clean}
        for scale in sorted({0.0, 1.0, float(own)}):
            # a fresh synthesizer per scale restarts the run's noise seed: the variants differ only in scale
            sampler = PandaSynthesizer(
                work / "diffusion",
                synth.sampler_config(),
                synth.seed,
                synth.window_mode,
                {ctx.defect_type: scale},
            )
            variants[f"scale {scale:g}"] = sampler.batch(clean, masks, ctx.defect_type)
        for variant, images in variants.items():
            row = {"defect_type": ctx.defect_type, "images": variant}
            row.update(mask_scores(model, images, clean, masks, threshold))
            results.append(row)
            click.echo(f"{name} {ctx.defect_type} {variant}: {row}")
    return results


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--repo", type=click.Path(path_type=Path), default=".", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Writes OUT.md and OUT.json.")
@click.option("--n", default=16, show_default=True, help="Masks per defect type.")
@click.option("--threshold", default=0.5, show_default=True)
def main(names: tuple[str, ...], repo: Path, out: Path, n: int, threshold: float) -> None:
    """Score each run's segmenter on masks redrawn as normal texture (scale 0) and as defects."""
    report, lines = {}, [f"# Does the segmenter fire on redrawn normal texture? ({n} masks per type)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        processed: dict[str, Path] = {}
        for name in names:
            report[name] = probe_run(repo, name, Path(tmp), n, threshold, processed)
            lines += [f"## {name}", "", markdown_table(report[name]), ""]
    write_json({"n": n, "threshold": threshold, "runs": report}, out.with_suffix(".json"))
    out.with_suffix(".md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
