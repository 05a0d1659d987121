"""`panda finetune`: phase A (denoiser on normal windows) then phase B (defect embedding + adapters)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import load_manifest
from panda.diffusion.finetune import finetune_category, skip_finetune
from panda.diffusion.params import FinetuneParams
from panda.io import write_json
from panda.params import section
from panda.synth.params import SynthParams, method_counts
from panda.tracking import project_root, stage_run
from stages.common import (
    CHECKPOINT_DIR,
    DIFFUSION_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    params_option,
    read_compute,
    read_sections,
    relaunched,
    tags,
    user_errors,
)


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
    """Fine-tune the denoiser on the gen_train defects (finetune.backend: pixel trains it first on the
    normal images; latent starts from the pretrained checkpoint finetune.pretrained)."""
    params, data, tracking = read_sections(params_path, category=category)
    ft = section(
        params, "finetune", FinetuneParams, str(params_path), steps=steps, phase_b_steps=phase_b_steps
    )
    synth = section(params, "synth", SynthParams, str(params_path))
    compute = read_compute(params, params_path)
    trains = "panda" in [m for m, _ in method_counts(synth)]
    if trains and relaunched(compute):
        return
    logged = {"data": vars(data), "finetune": vars(ft), "synth": vars(synth), "compute": vars(compute)}
    with stage_run("finetune", tracking.experiment, logged, tags(data), all_params=params) as run:
        if not trains:
            click.echo(f"finetune skipped: {skip_finetune(out_dir, synth.method)}")
            write_json({"trained": 0}, REPORTS_DIR / "finetune_metrics.json")
            run.log_metrics({"trained": 0})
            return
        result = finetune_category(
            load_manifest(PROCESSED_DIR),
            PROCESSED_DIR,
            data.category,
            ft,
            compute,
            # phase A is cached at the main repo root, keyed by its own params: shared by DVC experiments
            cache_dir=project_root() / CHECKPOINT_DIR / "finetune" / "phase_a",
            checkpoint_dir=CHECKPOINT_DIR / "finetune" / ("latent" if ft.backend == "latent" else "phase_b"),
            on_step=run.log_step if run else None,
        )
        if run is None:  # not the main process: it only trained
            return
        result.save(out_dir)
        summary = result.summary()
        write_json(summary, REPORTS_DIR / "finetune_metrics.json")
        run.set_tags({f"window_mode.{t}": m for t, m in result.window_modes.items()})
        run.log_metrics(summary)
    click.echo(result.report(out_dir))
