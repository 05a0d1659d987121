"""Read each supported dataset layout into one table of (category, defect type, image, mask) records.

Columns: category, defect_type ('good' for normal images), is_normal, given_split ('train', 'test' or
'' where the dataset defines none), image, mask ('' for normal images), group, order. `group` keeps
images of one physical object together in any split; `order` is the sort key for "the first third".
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from panda.errors import PandaError
from panda.io import IMAGE_SUFFIXES

COLUMNS = ["category", "defect_type", "is_normal", "given_split", "image", "mask", "group", "order"]
NORMAL = "good"


def _images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (links are not followed); a name that is not UTF-8 is refused."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if p.suffix.lower() not in IMAGE_SUFFIXES or p.is_symlink() or not p.is_file():
            continue
        try:
            p.name.encode("utf-8")
        except UnicodeEncodeError:
            raise PandaError(f"file name is not valid UTF-8: {str(p)!r}; rename the file") from None
        found.append(p)
    return sorted(found)


def _natural_key(stem: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", stem))


def _row(
    category, defect, split, image: Path, mask: Path | None, group: str | None = None, order=None
) -> dict:
    return {
        "category": category,
        "defect_type": defect,
        "is_normal": defect == NORMAL,
        "given_split": split,
        "image": str(image),
        "mask": str(mask) if mask else "",
        "group": group if group is not None else image.stem,
        "order": order if order is not None else _natural_key(image.stem),
    }


def _mask_for(image: Path, mask_dir: Path, suffix: str) -> Path:
    """Find the mask with the image's stem (+suffix) and any image extension; error when absent."""
    for ext in (".png", ".bmp", ".jpg", ".tif", ".tiff"):
        candidate = mask_dir / f"{image.stem}{suffix}{ext}"
        if candidate.is_file():
            return candidate
    raise PandaError(
        f"image without mask: {image} (expected {mask_dir / (image.stem + suffix)}.png); "
        "add the mask or remove the image"
    )


def _check_orphans(mask_dir: Path, images: list[Path], suffix: str) -> None:
    stems = {f"{p.stem}{suffix}" for p in images}
    for mask in _images(mask_dir):
        if mask.stem not in stems:
            raise PandaError(f"mask without image: {mask}; add the image or remove the mask")


def _scan_mvtec_like(root: Path, normal: str, mask_suffix: str) -> list[dict]:
    rows: list[dict] = []
    for cat_dir in sorted(d for d in root.iterdir() if d.is_dir() and (d / "train").is_dir()):
        cat = cat_dir.name
        for img in _images(cat_dir / "train" / normal):
            rows.append(_row(cat, NORMAL, "train", img, None))
        test = cat_dir / "test"
        for defect_dir in sorted(d for d in test.iterdir() if d.is_dir()) if test.is_dir() else []:
            images = _images(defect_dir)
            if defect_dir.name == normal:
                rows += [_row(cat, NORMAL, "test", img, None) for img in images]
                continue
            mask_dir = cat_dir / "ground_truth" / defect_dir.name
            rows += [
                _row(cat, defect_dir.name, "test", i, _mask_for(i, mask_dir, mask_suffix)) for i in images
            ]
            _check_orphans(mask_dir, images, mask_suffix)
    return rows


MTD_NAME = re.compile(r"exp(\d+)_num_(\d+)$")
MTD_MAX_GAP = 300


def mtd_groups(stems: list[str]) -> dict[str, str]:
    """Group Magnetic Tile photos by physical tile.

    One tile is photographed at exposures exp1..exp6 with `num` values a few dozen apart. Sorted by
    `num`, a new tile starts when the exposure index does not increase or `num` jumps by more than
    MTD_MAX_GAP. The rule errs towards merging two tiles (harmless) rather than splitting one (leak).
    """
    parsed = []
    for stem in stems:
        m = MTD_NAME.search(stem)
        parsed.append((int(m.group(2)), int(m.group(1)), stem) if m else (10**12, 0, stem))
    groups: dict[str, str] = {}
    prev_num, prev_exp, current = None, None, None
    for num, exp, stem in sorted(parsed):
        if current is None or num == 10**12 or exp <= prev_exp or num - prev_num > MTD_MAX_GAP:
            current = f"tile{num}" if num != 10**12 else stem
        groups[stem] = current
        prev_num, prev_exp = num, exp
    return groups


def _scan_mtd(root: Path) -> list[dict]:
    rows: list[dict] = []
    for cls_dir in sorted(root.glob("MT_*")):
        defect = NORMAL if cls_dir.name == "MT_Free" else cls_dir.name[3:].lower()
        folder = cls_dir / "Imgs" if (cls_dir / "Imgs").is_dir() else cls_dir
        images = [p for p in _images(folder) if p.suffix.lower() in {".jpg", ".jpeg"}]
        masks = {p.stem: p for p in _images(folder) if p.suffix.lower() == ".png"}
        groups = mtd_groups([p.stem for p in images])
        for img in images:
            if img.stem not in masks:
                raise PandaError(f"image without mask: {img} (expected {img.with_suffix('.png')})")
            m = MTD_NAME.search(img.stem)
            order = (int(m.group(2)), int(m.group(1))) if m else (10**12, 0)
            mask = None if defect == NORMAL else masks[img.stem]
            rows.append(_row("magnetic_tile", defect, "", img, mask, groups[img.stem], order))
        for stem, mask in masks.items():
            if not (folder / f"{stem}.jpg").exists() and not (folder / f"{stem}.jpeg").exists():
                raise PandaError(f"mask without image: {mask}; add the image or remove the mask")
    return rows


def _scan_custom(root: Path) -> list[dict]:
    """train/ normal; test/ in subfolders per defect type (good = normal), or defective images flat in
    test/ (normals then in test/good/); masks/ flat or per defect type. Each defective image needs a mask."""
    cat = "custom"
    rows = [_row(cat, NORMAL, "train", img, None) for img in _images(root / "train")]
    if not rows:
        rows = [_row(cat, NORMAL, "train", img, None) for img in _images(root / "train" / NORMAL)]
    masks_root = root / "masks"
    subdirs = sorted(d for d in (root / "test").iterdir() if d.is_dir())
    seen: list[Path] = []
    for img in _images(root / "test"):  # flat: every image here is defective and has its mask
        mask = next((m for m in _images(masks_root) if m.stem in (img.stem, f"{img.stem}_mask")), None)
        if mask is None:
            raise PandaError(
                f"{img} has no mask in {masks_root} ({img.stem}.png or {img.stem}_mask.png): add its mask, "
                f"or move it to {root / 'test' / NORMAL} if it is a normal image"
            )
        rows.append(_row(cat, "defect", "test", img, mask))
        seen.append(img)
    for d in subdirs:
        for img in _images(d):
            if d.name == NORMAL:
                rows.append(_row(cat, NORMAL, "test", img, None))
                continue
            mask_dir = masks_root / d.name if (masks_root / d.name).is_dir() else masks_root
            try:
                mask = _mask_for(img, mask_dir, "")
            except PandaError:
                mask = _mask_for(img, mask_dir, "_mask")
            rows.append(_row(cat, d.name, "test", img, mask))
            seen.append(img)
    known = {p.stem for p in seen}
    for mask in _images(masks_root) + [m for d in subdirs for m in _images(masks_root / d.name)]:
        if mask.stem not in known and mask.stem.removesuffix("_mask") not in known:
            raise PandaError(f"mask without image: {mask}; add the image to test/ or remove the mask")
    return rows


def scan(dataset: str, root: Path) -> pd.DataFrame:
    """List every image of `dataset` found at `root` with its mask and grouping."""
    root = Path(root)
    if not root.is_dir():
        raise PandaError(f"dataset folder not found: {root}; run `panda download` first")
    if dataset in ("mvtec", "demo"):
        rows = _scan_mvtec_like(root, "good", "_mask")
    elif dataset == "btad":
        rows = _scan_mvtec_like(root, "ok", "")
    elif dataset == "mtd":
        rows = _scan_mtd(root)
    elif dataset == "custom":
        rows = _scan_custom(root)
    else:
        raise PandaError(f"unknown data.dataset '{dataset}'")
    if not rows:
        raise PandaError(f"no images found under {root} for dataset '{dataset}'; check data.dataset")
    return pd.DataFrame(rows, columns=COLUMNS)
