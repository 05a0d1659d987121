"""dvc.yaml cannot go stale: every stage depends on every project module its command imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("panda", "stages")


def module_file(name: str) -> Path | None:
    """The project file of module `name` (a package's __init__.py), or None when it is not ours."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions (`from a import b` may name a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_closure(entry: Path) -> set[Path]:
    """The project files `entry` runs: itself, what it imports, what those import, and so on."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c imports a/__init__ and a/b/__init__ too
                if (found := module_file(".".join(parts[:i]))) is not None:
                    todo.append(found)
    return seen


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_stage_depends_on_all_the_code_it_runs(stage):
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]
    entry = ROOT / "stages" / f"{stage}.py"
    missing = sorted(str(p.relative_to(ROOT)) for p in import_closure(entry) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage '{stage}' runs code it does not depend on: {missing}"


def test_the_closure_follows_imports_inside_functions():
    closure = {p.relative_to(ROOT).as_posix() for p in import_closure(ROOT / "stages" / "synthesize.py")}
    assert "panda/diffusion/sampler.py" in closure and "panda/synth/diffusion.py" in closure
