"""`panda download`: put the selected dataset under data/raw in its own layout."""

from __future__ import annotations

from pathlib import Path

import click

from panda.data.download import fetch_dataset, rooted_source
from panda.tracking import project_root, stage_run
from stages.common import RAW_DIR, params_option, read_sections, tags, user_errors


@click.command("download")
@params_option
@click.option("--dataset", help="demo | mvtec | btad | mtd | custom (overrides data.dataset).")
@click.option("--source", help="Mirror URL, local archive or local folder (overrides data.source).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=RAW_DIR, show_default=True)
@user_errors
def download(params_path: Path, dataset: str | None, source: str | None, out_dir: Path) -> None:
    """Download (or generate, for demo) the dataset, verify it and extract it safely."""
    params, data, tracking = read_sections(params_path, dataset=dataset, source=source)
    if source is None:  # from params.yaml: relative to the repo root (--source: to where you are)
        data.source = rooted_source(data.source, project_root())
    cache = Path(data.cache_dir).expanduser() if data.cache_dir else None
    with stage_run(
        "download", tracking.experiment, {"data": vars(data)}, tags(data, False), all_params=params
    ) as run:
        result = fetch_dataset(data.dataset, out_dir, source=data.source, cache_dir=cache, seed=data.seed)
        verb = "already present, nothing to do" if result.skipped else "ready"
        click.echo(f"{data.dataset}: {verb} at {out_dir} (from {result.origin})")
        run.log_metrics({"n_files": sum(1 for p in out_dir.rglob("*") if p.is_file())})
        run.set_tags({"origin": result.origin})
