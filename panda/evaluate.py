"""Score a trained segmenter on the held-out test split: metrics overall, per defect type, curves.

Padded images (`preprocess.geometry: pad`) are scored on their own pixels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from panda.data.geometry import valid_boxes, valid_masks
from panda.data.preprocess import category_rows
from panda.errors import PandaError
from panda.figures import grid, overlay
from panda.io import write_json
from panda.metrics.segmentation import compute_metrics, curves, f1_max, scored_pixels
from panda.segment.data import load_pairs, normalize
from panda.segment.unet import SegUNet

ADAPTIVE = "adaptive"


@dataclass
class EvalParams:
    threshold: float | str = 0.5  # a number, or "adaptive" (see `choose_threshold`)
    max_fpr: float = 0.3
    tta: bool = True  # average the maps over the mirror images the segmenter was trained with
    validation: bool = True  # also score the validation split (`with_validation_split`) as val_* keys

    def validate(self) -> None:
        if isinstance(self.threshold, str) and self.threshold != ADAPTIVE:
            raise PandaError(
                f"evaluate.threshold = '{self.threshold}': use a number in [0, 1] or '{ADAPTIVE}'"
            )
        if not isinstance(self.threshold, str) and not 0 <= self.threshold <= 1:
            raise PandaError(f"evaluate.threshold = {self.threshold} must be in [0, 1] (or '{ADAPTIVE}')")


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_defect: pd.DataFrame
    curves: dict[str, list[dict[str, float]]]
    maps: np.ndarray
    masks: np.ndarray
    images: np.ndarray
    frame: pd.DataFrame
    threshold: float  # the one iou / miou / pixel_acc were measured at
    threshold_source: str


def pad_to_multiple(x: torch.Tensor, multiple: int = 16) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect")
    return x, (h, w)


# Mirror test-time augmentation (nnU-Net's default): the flips `_augment` trains with, so every view
# is one the model has learned; no transposes, which would turn oriented defects (MTD's Uneven bands).
MIRRORS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


def _mirror(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return x.flip(dims) if dims else x


@torch.no_grad()
def predict_maps(model: SegUNet, images: torch.Tensor, batch: int = 16, tta: bool = False) -> np.ndarray:
    """Anomaly maps in [0, 1] (N, H, W) for images in [0, 1] (N, 3, H, W) of any size.

    With `tta` each map is the mean over the four mirror views, which smooths out the view-to-view
    variance a segmenter trained on a few dozen defects has (4x the inference cost).
    """
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device  # images move there batch by batch
    views = MIRRORS if tta else MIRRORS[:1]
    out = []
    for i in tqdm(range(0, len(images), batch), desc="predict", unit="batch", leave=False):
        x, (h, w) = pad_to_multiple(normalize(images[i : i + batch]).to(device))
        prob = sum(_mirror(torch.sigmoid(model(_mirror(x, d)).float()), d) for d in views) / len(views)
        out.append(prob[:, 0, :h, :w].cpu().numpy())
    if not out:
        return np.zeros((0,) + tuple(images.shape[-2:]), np.float32)
    return np.concatenate(out)


def held_out_rows(manifest: pd.DataFrame, category: str, split: str = "test") -> pd.DataFrame:
    """Normals and defects of one category in `split`; the test split holds images no stage has seen."""
    rows = category_rows(manifest, category)
    return rows[rows["split"] == split].reset_index(drop=True)


def with_validation_split(manifest: pd.DataFrame, category: str) -> pd.DataFrame:
    """A copy where `category`'s validation defects and train normals form split "val".

    For choosing settings without the test split. The validation defects are the held-out `val`
    defects where preprocess made some (`preprocess.val_fraction`), else the gen_train defects: a
    segmenter trained on synthetic pairs has not seen those (only the generator has), but `real`
    trains on them, so its score there is not a validation. The train normals were seen as empty
    targets, so false alarms read low.
    """
    val = manifest.copy()
    here = val["category"] == category
    normal = val["defect_type"] == "good"
    held = here & (val["split"] == "val")
    defects = held if (held & ~normal).any() else here & (val["split"] == "gen_train")
    val.loc[defects | (here & (val["split"] == "train") & normal), "split"] = "val"
    return val


VALIDATION_KEYS = ("pixel_auroc", "pixel_ap", "image_auroc", "miou")


@dataclass
class SplitMaps:
    """One split's rows, images, masks and predicted maps: scored at any threshold without re-predicting."""

    frame: pd.DataFrame
    images: torch.Tensor
    maps: np.ndarray
    masks: np.ndarray
    valid: np.ndarray | None = None  # (N, H, W) each image's own pixels; None: all of them

    def part(self, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(maps, masks, valid) of the images `sel` picks."""
        return self.maps[sel], self.masks[sel], None if self.valid is None else self.valid[sel]


def predict_split(
    model: SegUNet, manifest: pd.DataFrame, processed_dir: Path, category: str, params: EvalParams, split: str
) -> SplitMaps:
    frame = held_out_rows(manifest, category, split)
    x, y = load_pairs(processed_dir, frame)
    maps = predict_maps(model, x, tta=params.tta)
    valid = valid_masks(frame, int(x.shape[-1]))
    return SplitMaps(frame, x, maps, y[:, 0].numpy().astype(np.uint8), valid)


def validation_maps(
    model: SegUNet, manifest: pd.DataFrame, processed_dir: Path, category: str, params: EvalParams
) -> SplitMaps | None:
    """Maps of the validation split (`with_validation_split`); None without its defects or normals."""
    val = with_validation_split(manifest, category)
    rows = held_out_rows(val, category, "val")
    if rows.empty or (rows["defect_type"] == "good").all() or (rows["defect_type"] != "good").all():
        return None
    return predict_split(model, val, processed_dir, category, params, "val")


def choose_threshold(threshold: float | str, val: SplitMaps | None) -> tuple[float, str]:
    """The binarisation threshold and where it came from.

    "adaptive" is the threshold with the best pixel F1 on the validation split, all defect types and
    normals pooled: anomalib's F1AdaptiveThreshold, fitted on validation data as anomalib does. Why: a
    segmenter trained on synthetic defects is under-confident on real ones (on Magnetic Tile the test
    F1-optimal threshold is about 0.03), so a fixed 0.5 measures calibration more than segmentation.
    For `real` the validation defects are its own training images, so its threshold is fitted on them.
    Without a validation split it falls back to 0.5 and says so. Not the default: on Magnetic Tile it
    lowered the macro mIoU of DRAEM and of every panda row (each type's IoU also pays for the false
    alarms a lower cut adds on all test normals; reports/benchmark/README.md).
    """
    if threshold != ADAPTIVE:
        return float(threshold), "fixed"
    if val is None:
        return 0.5, "0.5: no validation split (no gen_train defects or no train normals) to adapt on"
    _, best = f1_max(*scored_pixels(val.maps, val.masks, val.valid))
    return best, "adaptive: F1-optimal on the validation split"


def score(split: SplitMaps, threshold: float, max_fpr: float) -> tuple[dict[str, float], pd.DataFrame]:
    """Pooled metrics, macro averages over defect types (each scored with all normals of the split)."""
    frame = split.frame
    pooled = compute_metrics(split.maps, split.masks, threshold, max_fpr, split.valid)
    normal = (frame["defect_type"] == "good").to_numpy()
    rows = []
    for defect in sorted(frame.loc[~normal, "defect_type"].unique()):
        sel = normal | (frame["defect_type"] == defect).to_numpy()
        maps, masks, valid = split.part(sel)
        m = compute_metrics(maps, masks, threshold, max_fpr, valid)
        rows.append({"defect_type": defect, "n_images": int((frame["defect_type"] == defect).sum()), **m})
    per_defect = pd.DataFrame(rows)
    metrics = {f"pooled_{k}": v for k, v in pooled.items()}
    for key in ["pixel_auroc", "pixel_ap", "f1_max", "aupro", "image_auroc", "iou", "miou", "pixel_acc"]:
        if key in per_defect:
            metrics[key] = float(per_defect[key].mean())
    for _, row in per_defect.iterrows():
        for key in ("pixel_auroc", "pixel_ap", "image_auroc", "miou"):
            if key in row and pd.notna(row[key]):
                metrics[f"{row['defect_type']}_{key}"] = float(row[key])
    metrics["n_test_images"] = len(frame)
    metrics["n_test_defective"] = int((~normal).sum())
    return metrics, per_defect


def evaluate(
    model: SegUNet, manifest: pd.DataFrame, processed_dir: Path, category: str, params: EvalParams
) -> EvalResult:
    """Test-split metrics at `params.threshold` (or the one `choose_threshold` fits on validation),
    plus the validation split's as `val_*` keys when `params.validation` (choose settings on those)."""
    params.validate()
    wants_val = params.validation or params.threshold == ADAPTIVE
    val = validation_maps(model, manifest, processed_dir, category, params) if wants_val else None
    threshold, source = choose_threshold(params.threshold, val)
    test = predict_split(model, manifest, processed_dir, category, params, "test")
    metrics, per_defect = score(test, threshold, params.max_fpr)
    metrics["threshold"] = threshold
    if params.validation and val is not None:
        val_metrics, _ = score(val, threshold, params.max_fpr)
        metrics |= {f"val_{k}": val_metrics[k] for k in VALIDATION_KEYS if k in val_metrics}
    images = (test.images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    return EvalResult(
        metrics,
        per_defect,
        curves(test.maps, test.masks, valid=test.valid),
        test.maps,
        test.masks,
        images,
        test.frame,
        threshold,
        source,
    )


def qualitative_grid(result: EvalResult, path: Path, per_type: int = 2) -> Path:
    """image | truth | prediction | overlay, for a few test images of each defect type and normals;
    each image's own box only (what is scored)."""
    picks: list[int] = []
    for _, sub in result.frame.groupby("defect_type", sort=True):
        picks += list(sub.index[:per_type])
    boxes = valid_boxes(result.frame, result.maps.shape[-1])
    rows = []
    for i in picks:
        (h, w), image = boxes[i], result.images[i]
        pred = result.maps[i] >= result.threshold
        tiles = [image, result.masks[i] * 255, result.maps[i], overlay(image, pred)]
        rows.append([t[:h, :w] for t in tiles])
    return grid(rows, path, titles=["image", "truth", "anomaly map", "prediction"])


def write_evaluation(result: EvalResult, metrics: dict, reports_dir: Path, figure: Path) -> list[Path]:
    """metrics.json, per_defect.csv, the ROC and PR curves and the sample grid; returns their paths."""
    reports_dir = Path(reports_dir)
    write_json(metrics, reports_dir / "metrics.json")
    per_defect = reports_dir / "per_defect.csv"
    per_defect.parent.mkdir(parents=True, exist_ok=True)
    tmp = per_defect.with_name(f".{per_defect.name}.tmp")
    result.per_defect.round(6).to_csv(tmp, index=False)
    tmp.replace(per_defect)
    write_json(result.curves["roc"], reports_dir / "plots" / "roc.json")
    write_json(result.curves["pr"], reports_dir / "plots" / "pr.json")
    qualitative_grid(result, figure)
    return [
        reports_dir / "metrics.json",
        per_defect,
        reports_dir / "plots" / "roc.json",
        reports_dir / "plots" / "pr.json",
        figure,
    ]
