"""Baseline synthesizers: masks match the changed pixels, placement follows the prior, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panda.synth.context import DefectContext, build_contexts, placement_prior
from panda.synth.cutpaste import cutpaste
from panda.synth.draem import draem, perlin_mask
from panda.synth.masks import augment_mask
from panda.synth.perlin import perlin_2d
from panda.synth.real import dihedral, real_paste

SIZE = 64


def _context(edge: bool = False) -> DefectContext:
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(3):
        img = rng.integers(80, 120, (SIZE, SIZE, 3), dtype=np.uint8)
        mask = np.zeros((SIZE, SIZE), bool)
        if edge:
            mask[20:40, 0:4] = True
        else:
            mask[28:36, 28:36] = True
        img[mask] = 20
        examples.append((img, mask))
    return DefectContext("dent", placement_prior([m for _, m in examples], (SIZE, SIZE)), examples)


def _normal(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 200, (SIZE, SIZE, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", [cutpaste, draem])
def test_pixels_outside_mask_are_untouched(method):
    ctx = _context()
    for seed in range(6):
        image = _normal(seed)
        out, mask = method(image, ctx, np.random.default_rng(seed))
        assert out.shape == image.shape and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert np.array_equal(out[mask == 0], image[mask == 0])


@pytest.mark.parametrize("method", [cutpaste, draem, real_paste])
def test_same_seed_same_sample(method):
    ctx = _context()
    a = method(_normal(), ctx, np.random.default_rng(5))
    b = method(_normal(), ctx, np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_edge_defects_are_placed_on_edges():
    ctx = _context(edge=True)
    for method in (cutpaste, draem, real_paste):
        for seed in range(8):
            _, mask = method(_normal(seed), ctx, np.random.default_rng(seed))
            ys, xs = np.nonzero(mask)
            border = np.minimum.reduce([xs, ys, SIZE - 1 - xs, SIZE - 1 - ys])
            assert border.min() <= 10, (method.__name__, seed)


def test_real_paste_label_is_a_transformed_real_mask():
    ctx = _context(edge=True)
    transformed = [dihedral(m, k) for _, m in ctx.examples for k in range(8)]
    for seed in range(6):
        out, mask = real_paste(_normal(seed), ctx, np.random.default_rng(seed))
        assert any(np.array_equal(mask > 0, t) for t in transformed)
        assert out[mask > 0].mean() < 60  # the dark real defect came along


def test_prior_placement_keeps_orientation_of_bands():
    """A horizontal band (Magnetic Tile Uneven) must never come out vertical under the placement prior."""
    band = np.zeros((SIZE, SIZE), bool)
    band[SIZE - 6 :, 4 : SIZE - 4] = True
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    ctx = DefectContext("uneven", placement_prior([band], (SIZE, SIZE)), [(img, band)])
    assert ctx.symmetries == (0, 2, 4, 6)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        for mask in (
            real_paste(_normal(seed), ctx, rng)[1] > 0,
            augment_mask(band, rng, symmetries=ctx.symmetries),
        ):
            ys, xs = np.nonzero(mask)
            assert np.ptp(xs) > 3 * np.ptp(ys), seed


def _write_gen_train(root) -> pd.DataFrame:
    img, mask = _context().examples[0]
    Image.fromarray(img).save(root / "d.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / "d_mask.png")
    return pd.DataFrame(
        [{"split": "gen_train", "defect_type": "dent", "image_path": "d.png", "mask_path": "d_mask.png"}]
    )


def test_uniform_placement_allows_all_eight_symmetries(tmp_path):
    rows = _write_gen_train(tmp_path)
    for placement, expected in (("uniform", tuple(range(8))), ("prior", (0, 2, 4, 6))):
        (ctx,) = build_contexts(rows, tmp_path, (SIZE, SIZE), placement)
        assert ctx.symmetries == expected


def test_perlin_noise_and_mask():
    rng = np.random.default_rng(0)
    noise = perlin_2d((50, 70), (4, 8), rng)
    assert noise.shape == (50, 70) and -1.5 < noise.min() < 0 < noise.max() < 1.5
    assert perlin_mask((64, 64), rng).dtype == bool


def test_defect_contrast_measures_dark_and_bright_defects():
    from panda.synth.quality import defect_contrast, gap_report

    image = np.full((SIZE, SIZE, 3), 150, np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[20:30, 20:30] = True
    image[mask] = 100
    assert defect_contrast(image, mask) == pytest.approx(-50)
    assert defect_contrast(255 - image, mask) == pytest.approx(50)
    assert defect_contrast(image, np.ones((SIZE, SIZE), bool)) is None  # no surroundings to compare
    report = gap_report("contrast", {"dent": -40.0, "scratch": -10.0}, {"dent": -10.0, "scratch": -10.0})
    assert report["contrast_dent"] == -10 and report["real_contrast_dent"] == -40
    assert report["contrast_gap"] == pytest.approx(15)


def test_defect_detail_tells_a_blurred_defect_from_a_textured_one():
    from scipy import ndimage

    from panda.synth.quality import defect_detail

    rng = np.random.default_rng(0)
    textured = rng.integers(60, 200, (SIZE, SIZE, 3)).astype(np.uint8)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:40, 16:40] = True
    blurred = textured.copy()
    blurred[mask] = ndimage.uniform_filter(textured.astype(float), size=(5, 5, 1))[mask].astype(np.uint8)
    assert defect_detail(np.full_like(textured, 120), mask) == 0  # flat: no detail at all
    assert defect_detail(blurred, mask) < 0.5 * defect_detail(textured, mask)
    assert defect_detail(textured, np.zeros_like(mask)) is None


def test_defect_chroma_flags_coloured_speckle_and_stays_silent_on_gray_images(tmp_path):
    import pandas as pd
    from PIL import Image

    from panda.synth.quality import compare_to_real, defect_chroma

    rng = np.random.default_rng(0)
    mask = np.zeros((SIZE, SIZE), bool)
    mask[16:40, 16:40] = True
    gray = np.repeat(rng.integers(60, 200, (SIZE, SIZE, 1)), 3, axis=-1).astype(np.uint8)
    speckle = gray.copy()
    speckle[mask] = rng.integers(0, 256, (int(mask.sum()), 3))
    tinted = gray.copy()
    tinted[..., 0] += 10  # a colour photo of a gray defect
    assert defect_chroma(speckle, mask) > 50
    assert defect_chroma(tinted, mask) == pytest.approx(10)
    assert defect_chroma(gray, mask) is None
    assert defect_chroma(speckle, np.zeros_like(mask)) is None

    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "mask.png")
    for name, image in (("gray", gray), ("speckle", speckle), ("tinted", tinted)):
        Image.fromarray(image).save(tmp_path / f"{name}.png")

    def rows(name: str) -> pd.DataFrame:
        return pd.DataFrame([{"image_path": f"{name}.png", "mask_path": "mask.png", "defect_type": "dent"}])

    colour = compare_to_real(rows("tinted"), tmp_path, rows("speckle"), tmp_path)
    assert colour["real_chroma_dent"] == pytest.approx(10) and colour["chroma_gap"] > 40
    gray_report = compare_to_real(rows("gray"), tmp_path, rows("gray"), tmp_path)
    assert "contrast_gap" in gray_report and not any("chroma" in k for k in gray_report)


def test_mix_makes_its_share_of_each_types_pairs(workdir):
    from click.testing import CliRunner

    from panda.data.preprocess import load_manifest
    from panda.errors import PandaError
    from panda.synth.params import SynthParams
    from panda.synth.run import synthesize
    from stages.cli import cli

    for stage in ("download", "preprocess"):
        assert CliRunner().invoke(cli, [stage]).exit_code == 0
    processed = workdir / "data/processed"
    params = SynthParams(method="cutpaste", n_per_defect=6, mix_method="real", mix_fraction=0.5)
    frame, _ = synthesize(load_manifest(processed), processed, workdir / "syn", "brick", params)
    counts = frame.groupby(["defect_type", "method"]).size().to_dict()
    assert counts == {(t, m): 3 for t in ("crack", "hole") for m in ("cutpaste", "real")}
    assert frame["image_path"].is_unique and (frame["mask_area"] > 0).all()
    plain, _ = synthesize(
        load_manifest(processed),
        processed,
        workdir / "plain",
        "brick",
        SynthParams(method="cutpaste", n_per_defect=6),
    )
    assert set(plain["method"]) == {"cutpaste"} and len(plain) == 12
    only = SynthParams(method="cutpaste", n_per_defect=6, defect_types=["hole"])
    hole, _ = synthesize(load_manifest(processed), processed, workdir / "hole", "brick", only)
    assert set(hole["defect_type"]) == {"hole"} and len(hole) == 6
    same = hole["image_path"].iloc[0]  # a type's samples do not depend on which other types are made
    assert (workdir / "hole" / same).read_bytes() == (workdir / "plain" / same).read_bytes()
    with pytest.raises(PandaError, match="synth.defect_types: scratch has no gen_train"):
        synthesize(
            load_manifest(processed),
            processed,
            workdir / "x",
            "brick",
            SynthParams(method="cutpaste", n_per_defect=6, defect_types=["scratch"]),
        )
    with pytest.raises(PandaError, match="synth.mix_method"):
        SynthParams(method="cutpaste", n_per_defect=6, mix_fraction=0.5).validate()


def test_window_modes_are_checked_by_key():
    from panda.diffusion.params import FinetuneParams
    from panda.errors import PandaError
    from panda.synth.params import SynthParams

    with pytest.raises(PandaError, match="synth.window_mode = 'crop'"):
        SynthParams(method="panda", n_per_defect=6, window_mode="crop").validate()
    with pytest.raises(PandaError, match="finetune.window_mode = 'tiles'"):
        FinetuneParams(steps=1, window_mode="tiles").validate()
