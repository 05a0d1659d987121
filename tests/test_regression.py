"""CI regression check: the regression configuration must stay above the committed metric floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import STAGES, run_stage

SPEC = Path(__file__).with_name("regression.yaml")


@pytest.mark.slow
def test_metrics_stay_above_committed_floor(workdir, tiny_params):
    spec = yaml.safe_load(SPEC.read_text())
    for section, values in spec["overrides"].items():
        tiny_params[section].update(values)
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in STAGES:
        run_stage(stage)
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    measured = {k: round(metrics[k], 3) for k in spec["floor"]}
    print(f"\nregression metrics (copy into tests/regression.yaml `floor` to raise it): {measured}")
    low = {k: (v, spec["floor"][k]) for k, v in measured.items() if v < spec["floor"][k] - spec["tolerance"]}
    assert not low, f"metrics below floor - {spec['tolerance']}: {low}"
