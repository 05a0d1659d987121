"""The `panda` command: one subcommand per pipeline stage, in pipeline order.

Subcommands are imported on first use, so `panda --help` does not pay for torch, diffusers and mlflow.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click

COMMANDS = {
    "download": "stages.download:download",
    "preprocess": "stages.preprocess:preprocess_cmd",
    "finetune": "stages.finetune:finetune",
    "synthesize": "stages.synthesize:synthesize_cmd",
    "train": "stages.train:train",
    "evaluate": "stages.evaluate:evaluate_cmd",
    "predict": "stages.predict:predict",
    "benchmark": "stages.benchmark:benchmark",
}
SUMMARIES = {
    "download": "Download (or generate, for demo) the dataset, verify and extract it.",
    "preprocess": "Resize, binarise masks, split train/gen_train/test, write the manifest.",
    "finetune": "Train the window-local diffusion denoiser (resumable).",
    "synthesize": "Write synthetic defective images + masks for the category.",
    "train": "Train the defect segmenter on normal + synthetic pairs (resumable).",
    "evaluate": "Score the segmenter on the held-out test split.",
    "predict": "Apply the trained segmenter to a folder of new images (not a pipeline stage).",
    "benchmark": "Run several synthesis methods x seeds as DVC experiments; write the comparison table.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands (pipeline order)"):
            formatter.write_dl(list(SUMMARIES.items()))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="panda")
def cli() -> None:
    """panda: synthesize pixel-aligned defects with diffusion and score them on a defect segmenter.

    `dvc repro` runs every stage with params.yaml; each stage reads its own section.
    """


def stop_with_dvc() -> None:
    """Under `dvc repro` (DVC sets DVC_STAGE), end this stage when DVC dies: a killed `dvc repro`
    must not leave its stage running on, writing outputs nobody will record (Linux only)."""
    if not os.environ.get("DVC_STAGE") or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # DVC was already gone before the line above
        raise SystemExit(143)


def main() -> None:
    stop_with_dvc()
    cli()


if __name__ == "__main__":
    main()
