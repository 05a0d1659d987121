"""`panda finetune`: phase A (denoiser on normal windows) then phase B (defect embedding + adapters)."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.preprocess import category_rows, load_manifest, normal_train_rows
from panda.diffusion.denoiser import PixelDenoiser
from panda.diffusion.phase_b import defect_windows, train_phase_b
from panda.diffusion.pixel import FinetuneParams, as_model_channels, train_phase_a
from panda.diffusion.window_modes import describe, type_window_modes
from panda.io import atomic_dir, read_image, write_json
from panda.params import section
from panda.segment.data import load_pairs
from panda.synth.run import SynthParams, method_counts
from panda.tracking import project_root, stage_run
from stages.common import (
    CHECKPOINT_DIR,
    DIFFUSION_DIR,
    PROCESSED_DIR,
    REPORTS_DIR,
    DataParams,
    params_option,
    read_sections,
    tags,
    user_errors,
)


def _skip(method: str, out_dir: Path, data: DataParams, experiment: str) -> None:
    """Baseline synthesizers need no denoiser: write a marker instead of spending minutes training one.

    DVC reruns this stage when `synth.method` changes back to panda, or panda joins as
    `synth.mix_method` (the keys `method_counts` reads are among the stage's params).
    """
    note = f"synth.method = {method} does not use the diffusion model, so none was trained.\n"
    with atomic_dir(out_dir) as tmp:
        (tmp / "NOT_TRAINED.txt").write_text(note)
    write_json({"trained": 0}, REPORTS_DIR / "finetune_metrics.json")
    with stage_run("finetune", experiment, {"data": vars(data), "synth": {"method": method}}, tags(data)):
        import mlflow

        mlflow.log_metric("trained", 0)
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
    if "panda" not in [m for m, _ in method_counts(synth)]:
        _skip(synth.method, out_dir, data, tracking.experiment)
        return
    rows = category_rows(load_manifest(PROCESSED_DIR), data.category)
    images, _ = load_pairs(PROCESSED_DIR, normal_train_rows(rows))
    gen = rows[rows["split"] == "gen_train"].sort_values("image_path")
    defect_types = sorted(gen["defect_type"].unique())
    with stage_run("finetune", tracking.experiment, {"data": vars(data), "finetune": vars(ft)}, tags(data)):
        import mlflow

        def log(step: int, metrics: dict[str, float]) -> None:
            if step % 10 == 0:
                mlflow.log_metrics(metrics, step=step)

        # phase A is cached at the main repo root, keyed by its own params: shared by DVC experiments
        cache = project_root() / CHECKPOINT_DIR / "finetune" / "phase_a"
        images = as_model_channels(images * 2 - 1)
        phase_a = train_phase_a(images, ft, len(defect_types) + 1, cache, on_step=log)
        examples = [
            (
                read_image(PROCESSED_DIR / r["image_path"], "RGB"),
                read_image(PROCESSED_DIR / r["mask_path"], "L") >= 128,
                defect_types.index(r["defect_type"]) + 1,
            )
            for _, r in gen.iterrows()
        ]
        modes = type_window_modes(
            ((mask, defect_types[i - 1]) for _, mask, i in examples), ft.window, ft.window_mode, ft.min_width
        )
        click.echo(describe(modes))
        mlflow.set_tags({f"window_mode.{t}": m for t, m in modes.items()})
        model = PixelDenoiser(phase_a.unet, defect_types, ft.mga_channels, modes)
        windows = defect_windows(examples, ft.window, {model.defect_id(t): m for t, m in modes.items()})
        phase_b = train_phase_b(
            model,
            phase_a.scheduler,
            windows,
            ft.phase_b_steps,
            ft.batch_size,
            ft.phase_b_lr,
            ft.pma_tau,
            ft.unfreeze_base,
            ft.seed,
            on_step=log,
            checkpoint=CHECKPOINT_DIR / "finetune" / "phase_b" / data.category / "ckpt.pt",
            checkpoint_every=ft.checkpoint_every,
            ema_decay=ft.ema_decay,
        )
        with atomic_dir(out_dir) as tmp:
            model.save(tmp)  # weights only: the output stays byte-identical across reruns
            phase_a.scheduler.save_pretrained(tmp / "scheduler")
        summary = {
            "phase_a_steps": phase_a.steps_done,
            "phase_a_resumed_from": phase_a.resumed_from,
            "phase_a_loss": phase_a.final_loss,
            "phase_a_seconds": round(phase_a.seconds, 2),
            "phase_b_resumed_from": phase_b.resumed_from,
            "phase_b_loss": phase_b.final_loss,
            "phase_b_seconds": round(phase_b.seconds, 2),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "n_defect_windows": len(windows.images),
            "model_channels": int(images.shape[1]),
            "trained": 1,
        }
        write_json(summary, REPORTS_DIR / "finetune_metrics.json")
        mlflow.log_metrics(summary)
    click.echo(
        f"denoiser: {summary['n_parameters'] / 1e6:.2f}M params; phase A {phase_a.steps_done} steps "
        f"(resumed at {phase_a.resumed_from}) in {phase_a.seconds:.1f}s, loss {phase_a.final_loss:.4f}; "
        f"phase B {ft.phase_b_steps} steps (resumed at {phase_b.resumed_from}) on {len(windows.images)} "
        f"defect windows in {phase_b.seconds:.1f}s, loss {phase_b.final_loss:.4f} -> {out_dir}"
    )
