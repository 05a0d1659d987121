"""CI regression check: the regression configuration must stay above the committed metric floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import STAGES, run_stage

SPECS = sorted(Path(__file__).parent.glob("regression*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_metrics_stay_above_committed_floor(workdir, tiny_params, spec_path):
    spec = yaml.safe_load(spec_path.read_text())
    for section, values in spec["overrides"].items():
        tiny_params.setdefault(section, {}).update(values)
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params))
    for stage in STAGES:
        run_stage(stage)
    metrics = json.loads((workdir / "reports/metrics.json").read_text())
    measured = {k: round(metrics[k], 3) for k in spec["floor"]}
    print(f"\nregression metrics (copy into tests/regression.yaml `floor` to raise it): {measured}")
    low = {k: (v, spec["floor"][k]) for k, v in measured.items() if v < spec["floor"][k] - spec["tolerance"]}
    assert not low, f"metrics below floor - {spec['tolerance']}: {low}"
    synth = json.loads((workdir / "reports/synth_metrics.json").read_text())
    ceiling = spec.get("ceiling", {})
    shown = {k: round(synth[k], 1) for k in ceiling or ["contrast_gap"] if k in synth}
    print(f"synthesis (copy into `ceiling`): {shown}")
    high = {k: (synth[k], c) for k, c in ceiling.items() if synth[k] > c * (1 + spec["tolerance"])}
    assert not high, f"synthesis metrics above ceiling + {spec['tolerance']:.0%}: {high}"
