"""The latent backend on tiny random Stable Diffusion and CompVis LDM pipelines, loaded the way a real
checkpoint is (`finetune.pretrained` = a folder written by `save_pretrained`, or a hub id in the cache)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from panda.data.preprocess import load_manifest
from panda.diffusion import tokens
from panda.diffusion.latent import LatentDenoiser, latent_mask
from panda.diffusion.latent_finetune import finetune_latent
from panda.diffusion.params import FinetuneParams
from panda.diffusion.pretrained import load_pretrained
from panda.diffusion.random_pipeline import save_random_pipeline
from panda.diffusion.sampler import SamplerConfig
from panda.errors import PandaError
from panda.synth.diffusion import DiffusionSynthesizer
from tests.conftest import ROOT, preprocessed_demo

PARAMS = FinetuneParams(
    backend="latent", resolution=64, latent_steps=4, latent_batch_size=2, latent_mga_channels=[8, 8],
    checkpoint_every=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    return {
        "sd": save_random_pipeline(root / "sd", "sd"),
        "ldm": save_random_pipeline(root / "ldm", "ldm"),
        "ldm-vq": save_random_pipeline(root / "ldm-vq", "ldm", vq=True),
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """The demo dataset, preprocessed at 32 px (data/processed under the returned folder)."""
    return preprocessed_demo(tmp_path_factory.mktemp("demo"))


def _finetune(model: Path, demo: Path, checkpoints: Path | None = None, stop_after: int | None = None):
    params = dataclasses.replace(PARAMS, pretrained=str(model))
    manifest = load_manifest(demo)
    return finetune_latent(manifest, demo, "brick", params, checkpoint_dir=checkpoints, stop_after=stop_after)


def _frozen_state(parts) -> dict[str, torch.Tensor]:
    table = parts.text_encoder.get_input_embeddings()
    base = getattr(table, "base", table)
    state = {f"unet.{k}": v.clone() for k, v in parts.unet.state_dict().items()}
    state |= {f"vae.{k}": v.clone() for k, v in parts.vae.state_dict().items()}
    text = parts.text_encoder.state_dict().items()
    state |= {f"text.{k.replace('.base.', '.')}": v.clone() for k, v in text if "vectors" not in k}
    state["table"] = base.weight.detach().clone()
    return state


@pytest.mark.parametrize("kind", ["sd", "ldm", "ldm-vq"])
def test_only_the_tokens_and_adapters_train(models, demo, kind):
    parts = load_pretrained(str(models[kind]))
    before = _frozen_state(parts)
    fresh = load_pretrained(str(models[kind]))
    params = dataclasses.replace(PARAMS, pretrained=str(models[kind]))
    result = finetune_latent(load_manifest(demo), demo, "brick", params, parts=parts)
    after = _frozen_state(parts)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "a frozen weight changed"
    model = result.model
    assert set(model.defect_types) == {"crack", "hole"}
    for t in model.defect_types:
        start = fresh.text_encoder.get_input_embeddings().weight[tokens.word_id(fresh.tokenizer, t)]
        vectors = model.vectors(t).detach()
        assert vectors.shape == (tokens.VECTORS, start.shape[0])
        assert not torch.allclose(vectors, start.expand_as(vectors)), "the token did not train"
        assert model.types[tokens.slug(t)].aware.head.weight.abs().sum() > 0
    assert result.summary()["n_parameters"] == sum(p.numel() for p in model.parameters())
    assert all(not p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["sd", "ldm"])  # CLIP's BPE and LDM's BERT word pieces
def test_prompt_holds_the_four_placeholder_ids(models, kind):
    parts = load_pretrained(str(models[kind]))
    init = {t: torch.zeros(tokens.VECTORS, 32) for t in ("crack", "broken_large")}
    model = LatentDenoiser(parts, ["broken_large", "crack"], [8], 64, init)
    first = len(parts.tokenizer) - 2 * tokens.VECTORS
    ids = model._prompt_ids["crack"][0].tolist()
    assert ids[1 : 2 + tokens.VECTORS] == [
        tokens.word_id(parts.tokenizer, "anomaly"),
        *range(first + 4, first + 8),
    ]
    assert tokens.init_word(parts.tokenizer, "broken_large", None) == "broken"  # a word of the name
    assert tokens.init_word(parts.tokenizer, "zzyzx", None) == "defect"  # unknown: the generic word
    with pytest.raises(PandaError, match="finetune.init_word"):
        tokens.init_word(parts.tokenizer, "crack", "zzyzx")


def test_saved_tokens_load_with_load_textual_inversion(models, demo, tmp_path):
    from diffusers import StableDiffusionPipeline

    result = _finetune(models["sd"], demo)
    result.save(tmp_path / "diffusion")
    pipeline = StableDiffusionPipeline.from_pretrained(models["sd"], safety_checker=None)
    table_before = pipeline.text_encoder.get_input_embeddings().weight.detach().clone()
    pipeline.load_textual_inversion(tmp_path / "diffusion" / "textual_inversion" / "crack.safetensors")
    names = tokens.spelt(tokens.placeholder("crack"))
    ids = pipeline.tokenizer.convert_tokens_to_ids(names)
    table = pipeline.text_encoder.get_input_embeddings().weight.detach()
    assert torch.equal(table[ids], result.model.vectors("crack").detach().cpu())
    assert torch.equal(table[: len(table_before)], table_before)  # only the new rows
    assert pipeline.maybe_convert_prompt("Anomaly <panda-crack>", pipeline.tokenizer) == tokens.prompt(
        "crack"
    )
    meta = json.loads((tmp_path / "diffusion" / "panda.json").read_text())
    assert meta["backend"] == "latent" and meta["pretrained"] == str(models["sd"])
    loaded = LatentDenoiser.load(tmp_path / "diffusion")
    for name, value in result.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value.cpu()), name


def test_latent_finetune_resumes_to_the_uninterrupted_weights(models, demo, tmp_path):
    whole = _finetune(models["sd"], demo, tmp_path / "whole")
    _finetune(models["sd"], demo, tmp_path / "split", stop_after=2)
    resumed = _finetune(models["sd"], demo, tmp_path / "split")
    assert all(loop.resumed_from == 2 for loop in resumed.loops.values())
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_latent_sampler_one_unet_call_per_step_and_background_kept(models, demo, tmp_path):
    _finetune(models["ldm"], demo).save(tmp_path / "diffusion")
    config = SamplerConfig(steps=5, pma_steps=3)
    synth = DiffusionSynthesizer(tmp_path / "diffusion", config, seed=0)
    calls = []
    synth.model.parts.unet.register_forward_hook(lambda *_: calls.append(1))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    masks = [np.zeros((32, 32), bool) for _ in range(3)]
    for i, m in enumerate(masks):
        m[8 + i : 20, 10 : 14 + i] = True
    out = synth.batch(images, masks, "hole", torch.Generator().manual_seed(0))
    assert len(calls) == config.steps  # one call per step for the whole batch
    from scipy import ndimage

    for image, mask, edited in zip(images, masks, out, strict=True):
        pasted = ndimage.binary_dilation(mask, iterations=synth.margin)
        assert np.array_equal(edited[~pasted], image[~pasted])
        assert not np.array_equal(edited[mask], image[mask])
    again = synth.batch(images, masks, "hole", torch.Generator().manual_seed(0))
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))
    guided = DiffusionSynthesizer(tmp_path / "diffusion", dataclasses.replace(config, guidance_scale=3.0), 0)
    prompts = []
    guided.model.parts.text_encoder.register_forward_hook(lambda _m, args, _o: prompts.append(args[0]))
    guided.model.parts.unet.register_forward_hook(lambda *_: calls.append(1))
    calls.clear()
    guided.batch(images, masks, "hole", torch.Generator().manual_seed(0))
    assert len(calls) == 2 * config.steps  # classifier-free guidance: the empty prompt as well
    empty = tokens.token_ids(guided.model.parts.tokenizer, "")
    assert any(torch.equal(p.cpu(), empty) for p in prompts) and len(prompts) == 2  # each encoded once


def test_latent_mask_is_thresholded_and_keeps_thin_targets():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:24, 8:24] = 1
    small = latent_mask(mask, 8)
    assert small.sum() == 4 and set(small.unique().tolist()) == {0.0, 1.0}
    thin = torch.zeros(1, 1, 64, 64)
    thin[..., 30:32, :] = 1  # a 2 px line: a quarter of each latent row it crosses
    assert latent_mask(thin, 8).sum() == 0
    assert latent_mask(thin, 8, keep_thin=True).sum() == 8


def test_refuses_checkpoints_it_cannot_use(models, tmp_path):
    with pytest.raises(PandaError, match="finetune.pretrained = './missing': no such folder"):
        load_pretrained("./missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PandaError, match="is not a diffusers pipeline"):
        load_pretrained(str(tmp_path / "empty"))
    vmodel = tmp_path / "v"
    shutil.copytree(models["sd"], vmodel)
    config = json.loads((vmodel / "scheduler" / "scheduler_config.json").read_text())
    (vmodel / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({**config, "prediction_type": "v_prediction"})
    )
    with pytest.raises(PandaError, match="epsilon-prediction"):
        load_pretrained(str(vmodel))


def _hub_cache(root: Path, repo: str, model: Path) -> Path:
    """A Hugging Face hub cache holding `model` as `repo` (the layout `hf download` leaves)."""
    folder = root / "hub" / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    shutil.copytree(model, folder / "snapshots" / revision)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    return root


@pytest.mark.slow
def test_hub_id_from_the_cache_offline_and_one_line_when_missing(models, demo, tmp_path):
    """`panda finetune` with a hub id: found in the hub cache with the hub unreachable; a missing
    one gives one line naming the key and the fix."""
    home = _hub_cache(tmp_path / "hf", "panda-tests/tiny-sd", models["sd"])
    work = tmp_path / "work"
    shutil.copytree(demo.parent.parent, work, ignore=shutil.ignore_patterns("models", "checkpoints"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["finetune"] |= {
        "backend": "latent", "pretrained": "panda-tests/tiny-sd", "resolution": 64, "latent_steps": 2,
        "latent_batch_size": 2, "latent_mga_channels": [8],
    }  # fmt: skip
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there: the hub is unreachable
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": str(ROOT),
    }
    run = [sys.executable, "-m", "stages.cli", "finetune"]
    done = subprocess.run(run, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (
        json.loads((work / "data/models/diffusion/panda.json").read_text())["pretrained"]
        == "panda-tests/tiny-sd"
    )
    params["finetune"]["pretrained"] = "panda-tests/not-cached"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(run, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error")]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert len(errors) == 1 and "finetune.pretrained" in errors[0] and "--local-dir" in errors[0]


def _working_tree_copy(target: Path) -> Path:
    """The project as committed plus uncommitted edits (tracked and new, unignored files), as a new repo."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    git = ["git", "-c", "user.name=panda tests", "-c", "user.email=tests@panda.local"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot"]):
        subprocess.run(git + args, cwd=target, check=True, capture_output=True)
    return target


@pytest.mark.slow
def test_dvc_exp_run_on_the_latent_backend(models, tmp_path):
    """`dvc exp run -S finetune.backend=latent -S finetune.pretrained=<folder>`: the whole pipeline on the
    demo (CPU-sized overrides: resolution, steps and adapter widths)."""
    repo = _working_tree_copy(tmp_path / "repo")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    overrides = {
        "finetune.backend": "latent",
        "finetune.pretrained": str(models["ldm"]),
        "finetune.resolution": 64,
        "finetune.latent_steps": 20,
        "finetune.latent_mga_channels": "[16,16]",
        "synth.n_per_defect": 8,
        "train.steps": 20,
    }
    command = ["dvc", "exp", "run", "-n", "latent-tiny"] + [f"-S{k}={v}" for k, v in overrides.items()]
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    meta = json.loads((repo / "data/models/diffusion/panda.json").read_text())
    assert meta["backend"] == "latent" and meta["pretrained"] == str(models["ldm"])
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert 0 <= metrics["pixel_ap"] <= 1 and 0 <= metrics["miou"] <= 1
    assert json.loads((repo / "reports/finetune_metrics.json").read_text())["trained"] == 1
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "latent-tiny" in shown


def test_bf16_and_gradient_checkpointing_train(models, demo):
    from panda.compute import ComputeParams

    params = dataclasses.replace(PARAMS, pretrained=str(models["sd"]), gradient_checkpointing=True)
    result = finetune_latent(
        load_manifest(demo), demo, "brick", params, ComputeParams(device="cpu", mixed_precision="bf16")
    )
    assert all(np.isfinite(loop.final_loss) for loop in result.loops.values())
    assert result.model.parts.unet.is_gradient_checkpointing


@pytest.mark.slow
def test_two_cpu_processes_finetune_and_synthesize_the_same_pairs(models, workdir, tiny_params):
    """The latent backend under `accelerate launch` with 2 gloo processes, pairs as 1 process writes."""
    from tests.test_compute import _files
    from tests.test_pipeline import run_stage

    tiny_params["finetune"] |= {
        "backend": "latent", "pretrained": str(models["sd"]), "resolution": 64, "latent_steps": 4,
        "latent_batch_size": 2, "latent_mga_channels": [8],
    }  # fmt: skip
    tiny_params["compute"] = {"processes": 2, "threads": 1}
    tiny_params["synth"] |= {"batch_size": 3, "steps": 4, "pma_steps": 2}
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "finetune", "synthesize"):
        run_stage(stage)
    assert json.loads((workdir / "reports/finetune_metrics.json").read_text())["trained"] == 1
    two = _files(workdir / "data/synthetic")
    tiny_params["compute"]["processes"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    run_stage("synthesize")
    one = _files(workdir / "data/synthetic")
    assert len(one) == 2 * 2 * tiny_params["synth"]["n_per_defect"] + 2 and one == two
