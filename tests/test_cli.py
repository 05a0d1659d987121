"""The CLI: help for every stage, one-line user errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from stages.cli import COMMANDS, cli

STAGES = ["download", "preprocess", "finetune", "synthesize", "train", "evaluate"]


def test_help_lists_stages_in_order():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    positions = [result.output.index(f"  {s}") for s in STAGES]
    assert positions == sorted(positions) and list(COMMANDS)[: len(STAGES)] == STAGES
    assert "predict" in result.output and "benchmark" in result.output


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help(stage):
    result = CliRunner().invoke(cli, [stage, "--help"])
    assert result.exit_code == 0 and "--params" in result.output


def _run(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1]),
            "PATH": "/usr/bin:/bin",
            "TQDM_DISABLE": "1",
        },
    )


def test_user_errors_are_one_line(workdir, tiny_params):
    tiny_params["preprocess"]["image_szie"] = 64
    (workdir / "bad.yaml").write_text(yaml.safe_dump(tiny_params))
    cases = [
        (["preprocess", "--params", "bad.yaml"], "preprocess.image_szie"),
        (["download", "--params", "missing.yaml"], "params file not found: missing.yaml"),
        (["download", "--dataset", "imagenet"], "unknown data.dataset 'imagenet'"),
        (["download", "--dataset", "mtd", "--source", "/nonexistent/dir"], "--source /nonexistent/dir"),
        (["train"], "manifest not found"),
    ]
    for args, message in cases:
        proc = _run(args, workdir)
        assert proc.returncode == 1, (args, proc.stderr)
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len([line for line in proc.stderr.splitlines() if line.startswith("Error")]) == 1
