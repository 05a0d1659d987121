"""The synthetic pairs' manifest (`data/synthetic/manifest.csv`): what `synthesize` writes, `train` reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from panda.errors import PandaError

MANIFEST = "manifest.csv"


def load_synthetic(synthetic_dir: Path) -> pd.DataFrame:
    path = Path(synthetic_dir) / MANIFEST
    if not path.is_file():
        raise PandaError(f"synthetic manifest not found: {path}; run `panda synthesize` first")
    return pd.read_csv(path, keep_default_na=False)
