"""Turn any supported dataset into one normalised layout: resized images, binary masks, a manifest.

Images become `image_size` squares, squashed or kept in shape and mirror-padded (`panda.data.geometry`);
the manifest records each image's own box (`valid_height`, `valid_width`).

Splits (per category): `train` and `test` normals (the dataset's own split, or a seeded split by
group where it has none) and, per defect type, `gen_train` = the first `gen_train_fraction` of its
defective images in sorted order, the only defects any stage may see before `evaluate`; the rest is
`test`. With `val_fraction`, the last part of each type's gen_train goes to `val` instead: defects no
stage sees before `evaluate` scores them, so settings can be chosen for `real` and `real + X` rows
too (they train on gen_train). Splits take whole groups (one physical object), stopping at the count
closest to the target.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from panda.data.geometry import GEOMETRIES, fit_image, mirror_pad
from panda.data.layouts import NORMAL, scan
from panda.errors import PandaError
from panda.io import atomic_dir, check_replaceable, read_image, read_mask, save_png

MANIFEST = "manifest.csv"
SPLITS = ["train", "gen_train", "val", "test"]


@dataclass
class PreprocessParams:
    image_size: int = 64  # side of the square images and masks every stage works on
    geometry: str = "squash"  # squash: resized to the square | pad: long side fitted, mirror-padded
    normal_test_fraction: float = 0.2
    gen_train_fraction: float = 0.334
    val_fraction: float = 0.0  # share of each type's gen_train held out as `val` (0: validate on gen_train)
    seed: int = 0

    def validate(self) -> None:
        if not 8 <= self.image_size <= 4096:
            raise PandaError(f"preprocess.image_size = {self.image_size}: use a value between 8 and 4096")
        if self.geometry not in GEOMETRIES:
            raise PandaError(f"preprocess.geometry = '{self.geometry}': use one of {', '.join(GEOMETRIES)}")
        if not 0 < self.gen_train_fraction < 1:
            raise PandaError("preprocess.gen_train_fraction must lie strictly between 0 and 1")
        if not 0 <= self.normal_test_fraction < 1:
            raise PandaError("preprocess.normal_test_fraction must lie in [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise PandaError("preprocess.val_fraction must lie in [0, 1) (0: no held-out validation defects)")


def assign_splits(records: pd.DataFrame, params: PreprocessParams) -> pd.DataFrame:
    """Add a `split` column; all images of one group always land in the same split."""
    records = records.copy()
    records["split"] = ""
    rng = np.random.default_rng(params.seed)
    for (_, defect), sub in records.groupby(["category", "defect_type"], sort=True):
        groups = sub.groupby("group")["order"].min().sort_values(kind="stable")
        if defect == NORMAL:
            given = sub["given_split"].unique()
            if set(given) <= {"train", "test"} and "" not in given:
                records.loc[sub.index, "split"] = sub["given_split"]
                continue
            names = list(groups.index)
            rng.shuffle(names)
            n_test = int(round(len(names) * params.normal_test_fraction))
            test_groups = set(names[:n_test])
            records.loc[sub.index, "split"] = np.where(sub["group"].isin(test_groups), "test", "train")
            continue
        sizes = sub.groupby("group").size()
        chosen = _leading_groups(list(groups.index), sizes, len(sub) * params.gen_train_fraction)
        held: list = []
        if params.val_fraction > 0 and len(chosen) > 1:  # gen_train keeps at least one group
            target = sizes[chosen].sum() * params.val_fraction
            held = _leading_groups(chosen[::-1], sizes, target)[: len(chosen) - 1]
        split = np.where(sub["group"].isin(chosen), "gen_train", "test")
        records.loc[sub.index, "split"] = np.where(sub["group"].isin(held), "val", split)
    return records


def _leading_groups(order: list, sizes: pd.Series, target: float) -> list:
    """The first groups of `order` (at least one) while adding the next brings the image count
    closer to `target` (rounded, at least 1)."""
    want = max(1, int(round(target)))
    taken, chosen = 0, []
    for group in order:
        if chosen and abs(taken + sizes[group] - want) > abs(taken - want):
            break
        chosen.append(group)
        taken += sizes[group]
    return chosen


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-resample then threshold at half; thin defects that would vanish keep any covered pixel."""
    small = np.asarray(Image.fromarray(mask).resize((width, height), Image.BILINEAR, reducing_gap=None))
    binary = small >= 128
    if not binary.any() and mask.any():
        binary = small > 0
    return binary.astype(np.uint8) * 255


def _process_one(row: pd.Series, out: Path, size: int, geometry: str) -> dict:
    image = read_image(row["image"], "RGB")
    rel_dir = Path(row["category"]) / row["split"] / row["defect_type"]
    stem = Path(row["image"]).stem
    square, (vh, vw) = fit_image(image, size, geometry)
    info = {
        "height": image.shape[0],
        "width": image.shape[1],
        "valid_height": vh,
        "valid_width": vw,
        "mask_path": "",
        "mask_area": 0.0,
        "image_path": str(rel_dir / f"{stem}.png"),
    }
    if row["mask"]:
        binary, _ = read_mask(row["mask"])
        if binary.shape != image.shape[:2]:
            raise PandaError(
                f"size mismatch: mask {row['mask']} is {binary.shape[1]}x{binary.shape[0]} but image "
                f"{row['image']} is {image.shape[1]}x{image.shape[0]}; fix or remove the pair"
            )
        small = _resize_mask(binary.astype(np.uint8) * 255, vh, vw)
        info["mask_area"] = float((small > 0).mean())  # of the image's own pixels
        info["mask_path"] = str(rel_dir / f"{stem}_mask.png")
        save_png(mirror_pad(small, size), out / info["mask_path"])
    save_png(square, out / info["image_path"])
    return info


def _validate(records: pd.DataFrame, root: Path) -> None:
    for category, sub in records.groupby("category"):
        if not (sub["is_normal"] & (sub["given_split"] != "test")).any():
            raise PandaError(f"empty category: '{category}' under {root} has no normal training images")
        if sub["is_normal"].all():
            raise PandaError(f"empty category: '{category}' under {root} has no defective images with masks")
    dup = records["image"].duplicated()
    if dup.any():
        raise PandaError(f"image listed twice: {records.loc[dup, 'image'].iloc[0]}")


def read_mask_rules(records: pd.DataFrame) -> pd.DataFrame:
    """`records` with each mask's reading rule (`read_mask`) and whether it marks anything."""
    records = records.copy()
    rules, empty, graded = [], [], 0
    for mask_path in tqdm(records["mask"], desc="read masks", unit="mask"):
        if not mask_path:
            rules.append("")
            empty.append(False)
            continue
        binary, rule = read_mask(mask_path)
        rules.append(rule)
        empty.append(not binary.any())
        if rule == ">=128":
            with Image.open(mask_path) as img:
                values = np.unique(np.asarray(img.convert("L")))
            graded += bool(len(np.setdiff1d(values, [0, 255])))
    records["mask_rule"], records["empty_mask"] = rules, empty
    if graded:
        warnings.warn(f"{graded} masks were not binary (graded edges); binarised at >= 128", stacklevel=3)
    return records


def preprocess(dataset: str, raw_dir: Path, out_dir: Path, params: PreprocessParams) -> pd.DataFrame:
    """Write resized images, binary masks and `manifest.csv` to `out_dir` (atomically); return it.

    Defective images whose mask marks nothing are left out before the splits are drawn, so they
    take no place in gen_train."""
    check_replaceable(out_dir, "processed")
    records = read_mask_rules(scan(dataset, raw_dir))
    empty = records["empty_mask"].to_numpy(bool)
    if empty.any():
        names = ", ".join(Path(p).name for p in records.loc[empty, "image"].head(6))
        warnings.warn(
            f"{int(empty.sum())} defective images have an empty mask and were left out: {names}", stacklevel=2
        )
    records = records[~empty]
    _validate(records, raw_dir)
    records = assign_splits(records, params)
    with atomic_dir(out_dir, "processed") as tmp:
        infos = [
            _process_one(row, tmp, params.image_size, params.geometry)
            for _, row in tqdm(records.iterrows(), total=len(records), desc="preprocess", unit="img")
        ]
        info = pd.DataFrame(infos, index=records.index)
        manifest = pd.DataFrame(
            {
                "category": records["category"],
                "defect_type": records["defect_type"],
                "split": records["split"],
                "image_path": info["image_path"],
                "mask_path": info["mask_path"],
                "mask_area": info["mask_area"].round(6),
                "group": records["group"],
                "source_path": records["image"],
                "orig_height": info["height"],
                "orig_width": info["width"],
                "valid_height": info["valid_height"],
                "valid_width": info["valid_width"],
                "mask_rule": records["mask_rule"],
            }
        )
        manifest = manifest.sort_values(["category", "split", "defect_type", "image_path"]).reset_index(
            drop=True
        )
        manifest.to_csv(tmp / MANIFEST, index=False)
    return manifest


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Counts per category and defect type (rows) and split (columns), with totals."""
    table = manifest.pivot_table(
        index=["category", "defect_type"], columns="split", values="image_path", aggfunc="count", fill_value=0
    )
    table = table.reindex(
        columns=[s for s in SPLITS if s in table.columns] + [c for c in table.columns if c not in SPLITS]
    )
    table["total"] = table.sum(axis=1)
    table = table.reset_index()
    if "mask_rule" in manifest:  # how each type's masks were read (`panda.io.read_mask`)
        rules = manifest.groupby(["category", "defect_type"])["mask_rule"].agg(
            lambda r: " ".join(sorted({v for v in r if v})) or "-"
        )
        keys = zip(table["category"], table["defect_type"], strict=True)
        table["mask_rule"] = [rules[key] for key in keys]
    return table


def category_rows(manifest: pd.DataFrame, category: str) -> pd.DataFrame:
    """The manifest rows of one category; an unknown category names the ones that exist."""
    rows = manifest[manifest["category"] == category]
    if rows.empty:
        known = ", ".join(sorted(manifest["category"].unique()))
        raise PandaError(f"data.category = '{category}' is not in the dataset; choose one of: {known}")
    return rows


def normal_train_rows(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[(rows["split"] == "train") & (rows["defect_type"] == NORMAL)]


def load_manifest(processed_dir: Path) -> pd.DataFrame:
    path = Path(processed_dir) / MANIFEST
    if not path.is_file():
        raise PandaError(f"manifest not found: {path}; run `panda preprocess` first")
    return pd.read_csv(path, keep_default_na=False)
