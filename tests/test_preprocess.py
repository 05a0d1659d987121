"""Preprocess: splits, grouping, validation errors, and (when present) the real Magnetic Tile data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from panda.data.layouts import mtd_groups, scan
from panda.data.preprocess import PreprocessParams, preprocess, split_summary
from panda.errors import PandaError
from tests.conftest import MTD_SHARED, have_mtd, make_mtd_tree, make_mvtec_tree, write_image, write_mask

PARAMS = PreprocessParams(image_size=16)


def test_mvtec_splits_first_third_sorted(tmp_path):
    make_mvtec_tree(tmp_path / "raw", n_defect=6)
    manifest = preprocess("mvtec", tmp_path / "raw", tmp_path / "out", PARAMS)
    dent = manifest[manifest["defect_type"] == "dent"].sort_values("image_path")
    assert list(dent.loc[dent["split"] == "gen_train", "image_path"].str[-7:]) == ["000.png", "001.png"]
    assert (dent["split"] != "train").all()
    good = manifest[manifest["defect_type"] == "good"]
    assert sorted(good["split"].unique()) == ["test", "train"]
    for rel in manifest["image_path"]:
        assert Image.open(tmp_path / "out" / rel).size == (16, 16)
    mask = np.asarray(Image.open(tmp_path / "out" / dent["mask_path"].iloc[0]))
    assert set(np.unique(mask)) <= {0, 255} and mask.any()
    assert (dent["mask_area"] > 0).all()


def test_mtd_grouping_keeps_tiles_together(tmp_path):
    groups = mtd_groups(["exp1_num_3191", "exp2_num_3211", "exp3_num_3223", "exp4_num_8000", "exp1_num_8010"])
    assert groups["exp1_num_3191"] == groups["exp2_num_3211"] == groups["exp3_num_3223"]
    assert groups["exp4_num_8000"] != groups["exp3_num_3223"]
    assert groups["exp1_num_8010"] != groups["exp4_num_8000"]  # exposure index went back down
    make_mtd_tree(tmp_path / "raw")
    manifest = preprocess(
        "mtd", tmp_path / "raw/Magnetic-tile-defect-datasets.-master", tmp_path / "out", PARAMS
    )
    crack = manifest[manifest["defect_type"] == "crack"]
    # one third of 6 is 2, but the first tile has 3 exposures: the whole tile goes to gen_train
    assert (crack["split"] == "gen_train").sum() == 3
    assert manifest.groupby("group")["split"].nunique().max() == 1


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "widget/test/dent/001.png").write_bytes(b"not a png"), "unreadable image"),
        (lambda r: (r / "widget/test/dent/001.png").unlink(), "mask without image"),
        (lambda r: (r / "widget/ground_truth/dent/001_mask.png").unlink(), "image without mask"),
        (lambda r: write_mask(r / "widget/ground_truth/dent/001_mask.png", size=(30, 40)), "size mismatch"),
        (lambda r: [p.unlink() for p in (r / "widget/train/good").iterdir()], "empty category"),
    ],
)
def test_validation_errors_name_the_file(tmp_path, breakage, message):
    root = make_mvtec_tree(tmp_path / "raw")
    breakage(root)
    with pytest.raises(PandaError, match=message):
        preprocess("mvtec", root, tmp_path / "out", PARAMS)
    assert not (tmp_path / "out").exists(), "nothing half-written may be left"


def test_nonbinary_mask_is_binarised_with_warning(tmp_path):
    root = make_mvtec_tree(tmp_path / "raw")
    soft = np.zeros((40, 40), np.uint8)
    soft[10:20, 10:20] = 200
    soft[20:22, 10:20] = 60
    Image.fromarray(soft).save(root / "widget/ground_truth/dent/000_mask.png")
    with pytest.warns(UserWarning, match="not binary"):
        manifest = preprocess("mvtec", root, tmp_path / "out", PreprocessParams(image_size=40))
    row = manifest[manifest["image_path"].str.endswith("dent/000.png")].iloc[0]
    mask = np.asarray(Image.open(tmp_path / "out" / row["mask_path"]))
    assert set(np.unique(mask)) == {0, 255} and (mask > 0).sum() == 100


def test_custom_layout(tmp_path):
    root = tmp_path / "custom"
    for i in range(3):
        write_image(root / "train" / f"n{i}.png")
        write_image(root / "test" / "good" / f"t{i}.png")
    for i in range(3):
        write_image(root / "test" / f"d{i}.png")
        write_mask(root / "masks" / f"d{i}.png")
    records = scan("custom", root)
    assert set(records.loc[records["mask"] != "", "defect_type"]) == {"defect"}
    assert (records["is_normal"]).sum() == 6
    write_image(root / "test" / "forgot.png")  # defective, but its mask is missing: never a normal
    with pytest.raises(PandaError, match="forgot.png has no mask"):
        scan("custom", root)


@pytest.mark.skipif(not have_mtd(), reason="../shared/data/magnetic-tile not present")
def test_real_magnetic_tile_counts_and_grouping(tmp_path):
    manifest = preprocess("mtd", MTD_SHARED, tmp_path / "out", PreprocessParams(image_size=32))
    summary = split_summary(manifest).set_index("defect_type")
    assert summary.loc["good", "total"] == 952
    assert summary.loc["uneven", "total"] == 99  # 4 labelled-defective images have empty masks
    assert summary.drop("good")["total"].sum() == 388
    assert manifest.groupby("group")["split"].nunique().max() == 1
    for defect, row in summary.drop("good").iterrows():
        assert abs(row["gen_train"] - row["total"] / 3) <= 6, defect


def test_val_fraction_holds_out_the_last_gen_train_defects_of_each_type(tmp_path):
    """Held-out validation defects: taken from gen_train (the test split stays as it was), whole
    groups, at least one group left to gen_train; the validation split then scores them, not gen_train."""
    from panda.evaluate import with_validation_split

    make_mvtec_tree(tmp_path / "raw", n_defect=9)
    base = preprocess("mvtec", tmp_path / "raw", tmp_path / "base", PARAMS)
    held = preprocess(
        "mvtec", tmp_path / "raw", tmp_path / "held", PreprocessParams(image_size=16, val_fraction=0.34)
    )
    dent = held[held["defect_type"] == "dent"]
    dent = dent.iloc[dent["image_path"].str[-7:].argsort()]
    assert dent["split"].str[:1].tolist() == [
        "g",
        "g",
        "v",
        "t",
        "t",
        "t",
        "t",
        "t",
        "t",
    ]  # 000-002 were gen_train

    def test_paths(manifest):
        return set(manifest.loc[manifest["split"] == "test", "image_path"])

    assert test_paths(held) == test_paths(base)
    assert (tmp_path / "held" / dent["image_path"].iloc[2]).is_file() and "/val/" in dent["image_path"].iloc[
        2
    ]
    val = with_validation_split(held, "widget")
    assert sorted(val.loc[val["split"] == "val", "defect_type"].unique()) == ["dent", "good"]
    assert (val.loc[val["defect_type"] != "good", "split"] == "val").sum() == (held["split"] == "val").sum()
    single = preprocess(
        "mvtec", tmp_path / "raw", tmp_path / "one", PreprocessParams(image_size=16, val_fraction=0.9)
    )
    assert ((single["split"] == "gen_train") & (single["defect_type"] == "dent")).sum() == 1
    with pytest.raises(PandaError, match="preprocess.val_fraction"):
        PreprocessParams(val_fraction=1.0).validate()
