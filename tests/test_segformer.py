"""`train.model: segformer | resnet-unet`: they train, save, load, evaluate; pretrained weights load."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from panda.errors import PandaError
from panda.segment.encoder_unet import EncoderUNet
from panda.segment.segformer import SegFormer
from panda.segment.train import TrainParams, load_model_file, save_model, train_segmenter
from tests.test_pipeline import run_stage

SMALL = {
    "depths": [1, 1, 1, 1],
    "hidden_sizes": [8, 16, 32, 32],
    "num_attention_heads": [1, 1, 2, 2],
    "decoder_hidden_size": 16,
}


def _data(
    n: int = 6, size: int = 32
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=gen)
    y = torch.zeros(n, 1, size, size)
    y[:, :, 8:16, 10:20] = 1
    return (x, torch.zeros_like(y)), (x.clamp(max=0.5) + y * 0.5, y)


@pytest.mark.parametrize(
    ("name", "cls", "size"), [("segformer", SegFormer, 3.7e6), ("resnet-unet", EncoderUNet, 11e6)]
)
def test_model_trains_saves_and_loads(tmp_path, name, cls, size):
    params = TrainParams(model=name, steps=3, batch_size=4, checkpoint_every=3)
    result = train_segmenter(*_data(), params)
    assert isinstance(result.model, cls) and result.n_parameters > size  # B0; ResNet-18
    x = torch.rand(2, 1, 32, 32)
    out = result.model(x)
    assert out.shape == (2, 1, 32, 32)  # full resolution, one logit per pixel
    save_model(result.model, params, tmp_path / "model.pt", image_size=32)
    loaded, info = load_model_file(tmp_path / "model.pt")
    assert info["model"] == name and info["in_channels"] == 1
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model.eval()(x))


def test_pretrained_weights_load_into_the_encoder_with_a_new_head(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(1)
    saved = SegformerForSemanticSegmentation(SegformerConfig(**SMALL, num_labels=150))  # an ADE20k-like head
    saved.save_pretrained(tmp_path / "mit")
    model = SegFormer(pretrained=str(tmp_path / "mit"))
    encoder = model.net.segformer.state_dict()
    assert all(torch.equal(v, encoder[k]) for k, v in saved.segformer.state_dict().items())
    assert model.net.decode_head.classifier.out_channels == 1
    with pytest.raises(PandaError, match="train.pretrained = './nowhere': no such folder"):
        SegFormer(pretrained="./nowhere")


def test_pretrained_resnet_weights_load_into_the_encoder(tmp_path):
    from transformers import ResNetConfig, ResNetForImageClassification

    from panda.segment.encoder_unet import RESNET18

    torch.manual_seed(2)
    saved = ResNetForImageClassification(ResNetConfig(**{**RESNET18, "hidden_sizes": [8, 16, 32, 64]}))
    saved.save_pretrained(tmp_path / "resnet")  # an ImageNet classifier's layout, as on the hub
    model = EncoderUNet(pretrained=str(tmp_path / "resnet"))
    encoder = model.encoder.state_dict()
    assert encoder and all(torch.equal(v, saved.resnet.state_dict()[k]) for k, v in encoder.items())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "segnet"}, "train.model = 'segnet'"),
        ({"model": "segformer", "pretext_steps": 10}, "train.pretext_steps pretrains the U-Net"),
        ({"pretrained": "nvidia/mit-b0"}, "train.pretrained is for segformer / resnet-unet"),
    ],
)
def test_bad_model_settings_name_the_key(changes, message):
    with pytest.raises(PandaError, match=message):
        TrainParams(**changes).validate()


@pytest.mark.slow
def test_segformer_through_train_evaluate_and_predict(workdir, tiny_params, tmp_path):
    tiny_params["synth"]["method"] = "cutpaste"
    tiny_params["train"]["model"] = "segformer"
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "finetune", "synthesize", "train", "evaluate"):
        run_stage(stage)
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    assert 0 <= metrics["pixel_ap"] <= 1
    images = sorted((workdir / "data/processed").rglob("*.png"))[:2]
    (tmp_path / "in").mkdir()
    for image in images:
        (tmp_path / "in" / image.name).write_bytes(image.read_bytes())
    run_stage("predict", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"))
    assert (tmp_path / "out" / "scores.csv").is_file()
