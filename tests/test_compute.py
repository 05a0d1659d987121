"""The compute section and the training engine: clear errors, 2 CPU processes, atomic checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from panda.compute import ComputeParams, launch_command, make_accelerator
from panda.engine import LoopSpec, complete_checkpoints, step_generator, train_loop
from panda.errors import PandaError
from stages.cli import cli
from tests.test_pipeline import run_stage


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"processes": 0}, "compute.processes = 0 must be >= 1"),
        ({"device": "tpu"}, "compute.device = 'tpu': use one of auto, cpu, cuda"),
        ({"mixed_precision": "fp8"}, "compute.mixed_precision = 'fp8'"),
        ({"accelerate_config": "nowhere.yaml"}, "compute.accelerate_config = nowhere.yaml: no such file"),
    ],
)
def test_bad_compute_settings_name_the_key_and_the_fix(workdir, tiny_params, override, message):
    tiny_params["compute"] = override
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    result = CliRunner().invoke(cli, ["train"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message where no GPU exists")
def test_cuda_where_there_is_none_says_what_to_set(workdir, tiny_params):
    tiny_params["compute"] = {"device": "cuda"}
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    result = CliRunner().invoke(cli, ["evaluate"])
    assert result.exit_code == 1
    assert "compute.device = cuda but no CUDA GPU" in result.output and "auto or cpu" in result.output
    with pytest.raises(PandaError, match="fp16 needs a CUDA GPU"):
        make_accelerator(ComputeParams(device="cpu", mixed_precision="fp16"))


def test_an_unquoted_no_is_no_mixed_precision(workdir, tiny_params):
    """`dvc exp run -S` writes params.yaml back with `mixed_precision: no`, which YAML reads as false."""
    from panda.params import load_params, section

    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params) + "compute:\n  mixed_precision: no\n")
    assert section(load_params(workdir / "params.yaml"), "compute", ComputeParams).mixed_precision == "no"


def test_threads_are_shared_out_between_the_processes(monkeypatch):
    from panda.compute import threads_per_process

    assert threads_per_process(ComputeParams(threads=2)) == 2
    assert threads_per_process(ComputeParams(threads=2, processes=2)) == 1  # 2 cores, not 4 threads
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # as the launcher says, e.g. from a config file
    assert threads_per_process(ComputeParams(threads=8, processes=2)) == 2


def test_a_config_file_replaces_our_process_count(tmp_path):
    config = tmp_path / "accelerate.yaml"
    config.write_text("num_processes: 4\nnum_machines: 2\nmachine_rank: 1\nmain_process_ip: 10.0.0.1\n")
    cmd = launch_command(ComputeParams(accelerate_config=str(config)), ["stages.cli", "train"])
    assert cmd[cmd.index("--config_file") + 1] == str(config) and "--num_processes" not in cmd
    plain = launch_command(ComputeParams(processes=3), ["stages.cli", "train"])
    assert plain[plain.index("--num_processes") + 1] == "3" and plain[-3:] == ["-m", "stages.cli", "train"]


def test_accelerate_reads_the_config_file_it_is_given(tmp_path):
    """The route a multi-node user takes: `accelerate config` writes the file, the launcher reads it."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = tmp_path / "accelerate.yaml"
    config.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 16\n"
        "num_machines: 2\nmachine_rank: 1\nmain_process_ip: 10.0.0.1\nmain_process_port: 29500\n"
        "mixed_precision: bf16\n"
    )
    loaded = load_config_from_file(str(config))
    assert (loaded.num_machines, loaded.machine_rank, loaded.main_process_ip) == (2, 1, "10.0.0.1")


def _linear_job(tmp_path: Path, stop_after: int | None = None, compute: ComputeParams | None = None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    target = torch.randn(4, 1, generator=torch.Generator().manual_seed(1))

    def loss_fn(module, gen, device):
        x = torch.randn(8, 4, generator=gen)
        return ((module(x.to(device)) - x @ target.to(device)) ** 2).mean()

    spec = LoopSpec("probe", 6, 3, "job", tmp_path, checkpoint_every=1, keep_checkpoints=2, ema_decay=0.5)
    result = train_loop(model, optimizer, loss_fn, spec, compute, stop_after=stop_after)
    return model, result


def test_a_crash_while_a_checkpoint_is_written_resumes_from_the_last_complete_one(tmp_path, monkeypatch):
    import panda.engine

    whole, _ = _linear_job(tmp_path / "whole")
    real_replace = panda.engine.os.replace
    calls = {"n": 0}

    def crash_on_fourth(src, dst):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # the process dies after save_state, before the rename
        real_replace(src, dst)

    monkeypatch.setattr(panda.engine.os, "replace", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        _linear_job(tmp_path / "split")
    monkeypatch.setattr(panda.engine.os, "replace", real_replace)
    job = tmp_path / "split" / "job"
    assert [s for s, _ in complete_checkpoints(job, "job")] == [2, 3]  # step 4 never became a checkpoint
    (left,) = job.glob(".tmp-step-00000004-*")  # its half-written folder is left, hidden
    left.rename(job / ".tmp-step-00000004-999999999-dead")  # as a killed process's would be
    resumed, result = _linear_job(tmp_path / "split")
    assert result.resumed_from == 3 and not list(job.glob(".tmp-*"))  # leftover cleaned
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    state = json.loads((job / "step-00000006" / "panda_state.json").read_text())
    assert state == {"key": "job", "step": 6, "loss": result.final_loss}


@pytest.mark.parametrize(
    "compute", [ComputeParams(mixed_precision="bf16", device="cpu"), ComputeParams(gradient_accumulation=2)]
)
def test_bf16_and_accumulation_train_and_keep_their_own_checkpoints(tmp_path, compute):
    plain, _ = _linear_job(tmp_path)
    other, result = _linear_job(tmp_path, compute=compute)
    assert result.resumed_from == 0 and np.isfinite(result.final_loss)  # not the fp32 job's checkpoint
    assert not torch.equal(plain.weight, other.weight)
    (job,) = [p.name for p in tmp_path.iterdir() if p.is_dir()]  # its own key; the fp32 job was replaced
    assert job.startswith("job-p1-")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_loop_resumes_on_cuda_in_bf16(tmp_path):
    compute = ComputeParams(device="cuda", mixed_precision="bf16")
    whole, _ = _linear_job(tmp_path / "whole", compute=compute)
    _linear_job(tmp_path / "split", stop_after=3, compute=compute)
    resumed, result = _linear_job(tmp_path / "split", compute=compute)
    assert result.resumed_from == 3 and whole.weight.device.type == "cuda"
    assert torch.equal(whole.weight, resumed.weight)


def test_each_step_and_rank_draws_its_own_batch():
    draw = lambda *a: torch.rand(3, generator=step_generator(*a))  # noqa: E731
    assert torch.equal(draw(0, "train", 5), draw(0, "train", 5))
    assert not torch.equal(draw(0, "train", 5), draw(0, "train", 5, 0, 1))
    assert not torch.equal(draw(0, "train", 5), draw(0, "pretext", 5))


def _files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_two_cpu_processes_train_resume_and_synthesize_the_same_pairs(workdir, tiny_params):
    """finetune, synthesize and train under `accelerate launch` with 2 gloo processes."""
    tiny_params["compute"] = {"processes": 2, "threads": 1}
    tiny_params["synth"]["batch_size"] = 4  # two batches per defect type, dealt to both processes
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in ("download", "preprocess", "finetune", "synthesize", "train"):
        run_stage(stage)
    finetuned = json.loads((workdir / "reports/finetune_metrics.json").read_text())
    assert finetuned["phase_a_steps"] == tiny_params["finetune"]["steps"]
    trained = json.loads((workdir / "reports/train_metrics.json").read_text())
    assert trained["steps"] == tiny_params["train"]["steps"] and trained["resumed_from"] == 0
    assert list((workdir / "data/checkpoints/train/segmenter").glob("*/step-*"))
    run_stage("train")  # the finished job is found again by both processes
    assert json.loads((workdir / "reports/train_metrics.json").read_text())["resumed_from"] == 6
    two = _files(workdir / "data/synthetic")
    tiny_params["compute"]["processes"] = 1
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    run_stage("synthesize")
    one = _files(workdir / "data/synthetic")
    assert len(one) == 2 * 2 * tiny_params["synth"]["n_per_defect"] + 2 and one == two  # + manifest, marker
