"""Geometry that keeps defects: `preprocess.geometry: pad` keeps the aspect ratio, scores only each
image's own pixels, and maps predictions back onto the original image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image
from torch import nn

from panda.data.preprocess import PreprocessParams, load_manifest, preprocess
from panda.errors import PandaError
from panda.metrics.segmentation import compute_metrics
from stages.cli import cli
from tests.conftest import write_image, write_mask


def make_wide_tree(root, size=(80, 40), box=(60, 10, 70, 20)):
    """An MVTec-layout category of 2:1 images; every defect a 10 x 10 square near the right edge."""
    for i in range(4):
        write_image(root / "widget" / "train" / "good" / f"{i:03d}.png", size=size)
        write_image(root / "widget" / "test" / "good" / f"{i:03d}.png", size=size)
    for i in range(6):
        write_image(root / "widget" / "test" / "dent" / f"{i:03d}.png", size=size)
        write_mask(root / "widget" / "ground_truth" / "dent" / f"{i:03d}_mask.png", size=size, box=box)
    return root


def test_pad_keeps_the_aspect_ratio_and_mirrors_image_and_mask(tmp_path):
    make_wide_tree(tmp_path / "raw")
    pad = preprocess("mvtec", tmp_path / "raw", tmp_path / "pad", PreprocessParams(16, "pad"))
    assert (pad["valid_height"] == 8).all() and (pad["valid_width"] == 16).all()
    dent = pad[pad["defect_type"] == "dent"].iloc[0]
    mask = np.asarray(Image.open(tmp_path / "pad" / dent["mask_path"])) > 0
    image = np.asarray(Image.open(tmp_path / "pad" / dent["image_path"]))
    assert mask.shape == image.shape[:2] == (16, 16)
    own = np.zeros((8, 16), bool)
    own[2:4, 12:14] = True  # the 10 x 10 box at (60, 10) in an 80 x 40 image, scaled by 1/5
    np.testing.assert_array_equal(mask[:8], own)
    np.testing.assert_array_equal(mask[8:], own[::-1])  # the fill mirrors image and label alike
    np.testing.assert_array_equal(image[8:], image[:8][::-1])
    assert dent["mask_area"] == pytest.approx(4 / (8 * 16))  # of the image's own pixels

    squash = preprocess("mvtec", tmp_path / "raw", tmp_path / "squash", PreprocessParams(16))
    assert (squash["valid_height"] == 16).all() and (squash["valid_width"] == 16).all()
    first = squash.loc[squash["mask_path"] != "", "mask_path"].iloc[0]
    mask = np.asarray(Image.open(tmp_path / "squash" / first))
    assert (mask > 0).sum() == 4 * 2  # stretched: twice as tall as it is wide
    with pytest.raises(PandaError, match="preprocess.geometry = 'letterbox'"):
        PreprocessParams(16, "letterbox").validate()


def test_the_mirrored_fill_is_never_scored():
    """Perfect on each image's own pixels, wrong everywhere in the fill: perfect scores."""
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, 1:3, 1:3] = 1
    masks[1, 0:2, 4:6] = 1
    masks[1, 6:8, 4:6] = 1  # the mirrored copy of image 1's defect, in the fill
    valid = np.zeros(masks.shape, bool)
    valid[:, :4, :] = True  # each image's own box: its top half
    maps = masks.astype(np.float32) * 0.9
    maps[:, 4:, :] = 1 - maps[:, 4:, :]  # the fill: false alarms, the mirrored defect missed
    scored = compute_metrics(maps, masks, valid=valid)
    for key in ("pixel_auroc", "pixel_ap", "aupro", "image_auroc", "iou", "miou"):
        assert scored[key] == pytest.approx(1.0), key
    unmasked = compute_metrics(maps, masks)
    assert unmasked["pixel_ap"] < 0.5 and unmasked["image_auroc"] < 1


class Brightness(nn.Module):
    """Logits from each pixel's own brightness: the map is the image, wherever it went."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8 * x.mean(dim=1, keepdim=True)


def test_predict_maps_a_padded_image_back_from_its_own_box(tmp_path):
    from panda.predict import predict_folder

    wide = np.zeros((20, 40, 3), np.uint8)
    wide[10:] = 255  # dark top half, bright bottom half
    (tmp_path / "in").mkdir()
    Image.fromarray(wide).save(tmp_path / "in" / "wide.png")
    predict_folder(Brightness(), tmp_path / "in", tmp_path / "out", 16, threshold=0.5, geometry="pad")
    mask = np.asarray(Image.open(tmp_path / "out" / "wide_mask.png")) > 0
    assert mask.shape == (20, 40)
    # the padded square holds the image in rows 0-7 and its mirror below; a map taken from the whole
    # square would mark the middle half of the original instead of its bottom half
    assert not mask[:9].any() and mask[11:].all()


def test_pipeline_trains_scores_and_predicts_at_the_padded_geometry(workdir, tiny_params, tmp_path):
    make_wide_tree(tmp_path / "raw")
    tiny_params["data"] |= {"dataset": "mvtec", "source": str(tmp_path / "raw"), "category": "widget"}
    tiny_params["preprocess"] |= {"image_size": 16, "geometry": "pad"}
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in (["download"], ["preprocess"], ["synthesize", "--method", "real"], ["train"], ["evaluate"]):
        result = CliRunner().invoke(cli, stage, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert (load_manifest(workdir / "data/processed")["valid_height"] == 8).all()
    state = torch.load(workdir / "data/models/segmenter/model.pt", weights_only=True)
    assert state["geometry"] == "pad"  # predict fits new images the way the model was trained
    figure = Image.open(workdir / "reports/figures/evaluate_samples.png")
    assert figure.size[1] == 12 + 4 * (8 + 2) + 2  # 2 dents, 2 normals: only their own 8 x 16 boxes
    pairs = Image.open(workdir / "reports/figures/synthetic_samples.png")
    assert pairs.size[1] == 12 + (8 + 2) + 2  # one defect type; real and pasted pairs in their boxes
    write_image(tmp_path / "new" / "a.png", size=(80, 40))
    out = tmp_path / "out"
    predict = ["predict", "--input-dir", str(tmp_path / "new"), "--output-dir", str(out)]
    result = CliRunner().invoke(cli, predict)
    assert result.exit_code == 0, result.output
    assert Image.open(out / "a_map.png").size == (80, 40)


def test_padded_synthesis_moves_defects_by_relative_position_and_pads_pairs_like_preprocess(tmp_path):
    """Tall defective tiles, wide normal ones: a defect on a tall tile's right edge is pasted on the
    right edge of the wide tile's own box, and the pair is mirror-padded as preprocess pads images."""
    from panda.synth.params import SynthParams
    from panda.synth.run import synthesize

    raw = make_wide_tree(tmp_path / "raw")
    for i in range(6):  # defects now on 40 x 80 tiles, along the right edge
        write_image(raw / "widget" / "test" / "dent" / f"{i:03d}.png", size=(40, 80))
        write_mask(
            raw / "widget" / "ground_truth" / "dent" / f"{i:03d}_mask.png",
            size=(40, 80),
            box=(30, 20, 40, 60),
        )
    manifest = preprocess("mvtec", raw, tmp_path / "processed", PreprocessParams(16, "pad"))
    assert set(manifest.loc[manifest["defect_type"] == "dent", "valid_width"]) == {8}
    for method in ("real", "cutpaste"):
        params = SynthParams(method=method, n_per_defect=4, placement="prior")
        frame, _ = synthesize(manifest, tmp_path / "processed", tmp_path / method, "widget", params)
        for rel in frame["mask_path"]:
            mask = np.asarray(Image.open(tmp_path / method / rel)) > 0
            np.testing.assert_array_equal(mask[8:], mask[:8][::-1])  # padded as preprocess pads
            if method == "real":
                own = mask[:8]
                assert own.any() and not own[:, :12].any()  # on the right edge of the 8 x 16 box
