"""Run a trained segmenter on a folder of new images of any size: maps, masks, overlays, scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from panda.data.geometry import fit_image
from panda.errors import PandaError
from panda.evaluate import predict_maps
from panda.figures import overlay
from panda.io import IMAGE_SUFFIXES, OUTPUT_MARKER, check_replaceable, read_image, save_png
from panda.segment.ood import ood_reason
from panda.segment.unet import SegUNet


@dataclass
class PredictSummary:
    scores: pd.DataFrame
    failed: list[tuple[str, str]]


def predict_folder(
    model: SegUNet,
    input_dir: Path,
    output_dir: Path,
    image_size: int,
    threshold: float = 0.5,
    tta: bool = False,
    batch_size: int = 16,
    normal_stats: dict | None = None,
    geometry: str = "squash",
) -> PredictSummary:
    """For each image: `<stem>_map.png`, `<stem>_mask.png`, `<stem>_overlay.png`, and a row in scores.csv.

    Images are scored at the model's training resolution and `geometry` (`panda.data.geometry`),
    `batch_size` at a time on the model's device, and each map (its image's own box) is resized back
    to the original size. Unreadable files are reported and skipped. With `normal_stats` (saved with
    the model), `ood` says why an image looks unlike the training normals (empty when it does not).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise PandaError(f"--input-dir {input_dir}: no such folder")
    files = sorted(p for p in input_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise PandaError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {input_dir}")
    check_replaceable(output_dir, "predictions")
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / OUTPUT_MARKER).write_text("predictions\n")
    rows, failed = [], []
    bar = tqdm(total=len(files), desc="predict", unit="img")
    for first in range(0, len(files), batch_size):
        batch: list[tuple[Path, np.ndarray]] = []
        for path in files[first : first + batch_size]:
            try:
                batch.append((path, read_image(path, "RGB")))
            except PandaError as exc:
                failed.append((str(path), str(exc)))
        bar.update(len(files[first : first + batch_size]))
        if not batch:
            continue
        fitted = [fit_image(im, image_size, geometry) for _, im in batch]
        x = torch.from_numpy(np.stack([f[0] for f in fitted])).permute(0, 3, 1, 2).float() / 255.0
        maps = predict_maps(model, x, batch=batch_size, tta=tta)
        for (path, image), small_map, (_, (vh, vw)) in zip(batch, maps, fitted, strict=True):
            row = _write_outputs(path, image, small_map[:vh, :vw], input_dir, output_dir, threshold)
            rows.append(row | {"ood": ood_reason(image, normal_stats)})
    bar.close()
    columns = ["image", "width", "height", "score", "defective", "defect_fraction", "ood"]
    scores = pd.DataFrame(rows, columns=columns)
    tmp = output_dir / ".scores.csv.tmp"
    scores.to_csv(tmp, index=False)
    tmp.replace(output_dir / "scores.csv")
    return PredictSummary(scores, failed)


def _write_outputs(
    path: Path, image: np.ndarray, small_map: np.ndarray, input_dir: Path, output_dir: Path, threshold: float
) -> dict:
    """Map, mask and overlay at the image's own size; the image's row of scores.csv."""
    h, w = image.shape[:2]
    full_map = np.asarray(
        Image.fromarray(small_map.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR)
    )
    mask = full_map >= threshold
    stem = path.relative_to(input_dir).with_suffix("").as_posix().replace("/", "__")
    save_png((full_map.clip(0, 1) * 255).round().astype(np.uint8), output_dir / f"{stem}_map.png")
    save_png(mask.astype(np.uint8) * 255, output_dir / f"{stem}_mask.png")
    save_png(overlay(image, mask), output_dir / f"{stem}_overlay.png")
    score = float(full_map.max())
    return {
        "image": str(path.relative_to(input_dir)),
        "width": w,
        "height": h,
        "score": round(score, 6),
        "defective": score >= threshold,
        "defect_fraction": round(float(mask.mean()), 6),
    }
