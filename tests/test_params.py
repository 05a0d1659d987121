"""One source of truth: params.yaml holds exactly the dataclasses' fields, at their defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from panda.compute import ComputeParams
from panda.data.preprocess import PreprocessParams
from panda.diffusion.params import FinetuneParams
from panda.errors import PandaError
from panda.evaluate import EvalParams
from panda.params import SECTIONS, load_params
from panda.segment.train import TrainParams
from panda.synth.params import SynthParams
from stages.common import DataParams, MlflowParams

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {
    "mlflow": MlflowParams,
    "compute": ComputeParams,
    "data": DataParams,
    "preprocess": PreprocessParams,
    "finetune": FinetuneParams,
    "synth": SynthParams,
    "train": TrainParams,
    "evaluate": EvalParams,
}


def defaults(cls: type) -> dict:
    return dataclasses.asdict(cls())


@pytest.mark.parametrize("name", SECTIONS)
def test_params_yaml_equals_the_dataclass_defaults(name):
    written = yaml.safe_load((ROOT / "params.yaml").read_text())[name]
    expected = defaults(CLASSES[name])
    assert sorted(set(expected) - set(written)) == [], f"params.yaml misses {name} keys"
    assert sorted(set(written) - set(expected)) == [], f"params.yaml has {name} keys no dataclass reads"
    differ = {k: (written[k], v) for k, v in expected.items() if written[k] != v}
    assert not differ, f"params.yaml and the {name} dataclass disagree (yaml, code): {differ}"


def test_every_section_has_a_dataclass():
    assert set(CLASSES) == set(SECTIONS) == set(yaml.safe_load((ROOT / "params.yaml").read_text()))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trian:\n  steps: 3\n", "unknown section 'trian'; did you mean 'train'?"),
        ("train:\n  steps: 3\ntrain:\n  steps: 4\n", "'train' is given twice (line 3); keep one of them"),
        ("train:\n  steps: 3\n  steps: 4\n", "'steps' is given twice"),
    ],
)
def test_misspelled_and_duplicate_sections_are_refused(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PandaError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_params(path)


def test_a_binary_params_file_is_named(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(PandaError, match="not a text"):
        load_params(path)
