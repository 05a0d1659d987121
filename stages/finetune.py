"""`panda finetune`: phase A (denoiser on normal windows) then phase B (defect embedding + adapters)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.diffusion.finetune import finetune_category
from panda.diffusion.pixel import FinetuneParams
from panda.diffusion.window_modes import describe
from panda.io import atomic_dir, write_json
from panda.params import section
from panda.synth.params import SynthParams, method_counts
from panda.tracking import project_root, stage_run
from stages.common import (
    CHECKPOINT_DIR,
    DIFFUSION_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    DataParams,
    params_option,
    read_compute,
    read_sections,
    relaunched,
    tags,
    user_errors,
)


def _skip(method: str, out_dir: Path, data: DataParams, experiment: str, params: dict) -> None:
    """Baseline synthesizers need no denoiser: write a marker instead of spending minutes training one.

    DVC reruns this stage when `synth.method` changes back to panda, or panda joins as
    `synth.mix_method` (the keys `method_counts` reads are among the stage's params).
    """
    note = f"synth.method = {method} does not use the diffusion model, so none was trained.\n"
    with atomic_dir(out_dir, "diffusion") as tmp:
        (tmp / "NOT_TRAINED.txt").write_text(note)
    write_json({"trained": 0}, REPORTS_DIR / "finetune_metrics.json")
    with stage_run(
        "finetune",
        experiment,
        {"data": vars(data), "synth": {"method": method}},
        tags(data),
        all_params=params,
    ) as run:
        run.log_metrics({"trained": 0})
    click.echo(f"finetune skipped: {note.strip()}")


@click.command("finetune")
@params_option
@click.option("--steps", type=int, help="Overrides finetune.steps (phase A).")
@click.option("--phase-b-steps", type=int, help="Overrides finetune.phase_b_steps.")
@click.option("--category", help="Overrides data.category.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=DIFFUSION_DIR, show_default=True)
@user_errors
def finetune(
    params_path: Path, steps: int | None, phase_b_steps: int | None, category: str | None, out_dir: Path
) -> None:
    """Train the window-local denoiser on normal images, then fine-tune it on the gen_train defects."""
    params, data, tracking = read_sections(params_path, category=category)
    ft = section(
        params, "finetune", FinetuneParams, str(params_path), steps=steps, phase_b_steps=phase_b_steps
    )
    synth = section(params, "synth", SynthParams, str(params_path))
    compute = read_compute(params, params_path)
    if "panda" not in [m for m, _ in method_counts(synth)]:
        _skip(synth.method, out_dir, data, tracking.experiment, params)
        return
    if relaunched(compute):
        return
    manifest = load_manifest(PROCESSED_DIR)
    logged = {"data": vars(data), "finetune": vars(ft), "compute": vars(compute)}
    with stage_run("finetune", tracking.experiment, logged, tags(data), all_params=params) as run:
        result = finetune_category(
            manifest,
            PROCESSED_DIR,
            data.category,
            ft,
            compute,
            # phase A is cached at the main repo root, keyed by its own params: shared by DVC experiments
            cache_dir=project_root() / CHECKPOINT_DIR / "finetune" / "phase_a",
            checkpoint_dir=CHECKPOINT_DIR / "finetune" / "phase_b",
            on_step=run.log_step if run else None,
        )
        if run is None:  # not the main process: it only trained
            return
        with atomic_dir(out_dir, "diffusion") as tmp:
            result.model.cpu().save(tmp)  # weights only: the output stays byte-identical across reruns
            result.phase_a.scheduler.save_pretrained(tmp / "scheduler")
        summary = result.summary()
        write_json(summary, REPORTS_DIR / "finetune_metrics.json")
        run.set_tags({f"window_mode.{t}": m for t, m in result.window_modes.items()})
        run.log_metrics(summary)
    a, b = result.phase_a, result.phase_b
    click.echo(describe(result.window_modes))
    click.echo(
        f"denoiser: {summary['n_parameters'] / 1e6:.2f}M params; phase A {a.steps_done} steps "
        f"(resumed at {a.resumed_from}) in {a.seconds:.1f}s, loss {a.final_loss:.4f}; "
        f"phase B {ft.phase_b_steps} steps (resumed at {b.resumed_from}) on {result.n_defect_windows} "
        f"defect windows in {b.seconds:.1f}s, loss {b.final_loss:.4f} -> {out_dir}"
    )
