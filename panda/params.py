"""Load `params.yaml` sections into typed dataclasses, naming the bad key when something is off."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from panda.errors import PandaError

T = TypeVar("T")


# every section a params file may hold (one per stage, plus what several stages share)
SECTIONS = ("mlflow", "compute", "data", "preprocess", "finetune", "synth", "train", "evaluate")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (YAML would keep the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            problem = f"'{key}' is given twice (line {key_node.start_mark.line + 1})"
            raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_params(path: str | Path) -> dict[str, Any]:
    """Read the whole params file; a missing, malformed or misspelled file is a user error."""
    path = Path(path)
    if not path.is_file():
        raise PandaError(f"params file not found: {path} (pass --params PATH or run from the repo root)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError:
        raise PandaError(f"{path}: not a text (UTF-8) file; point --params at a YAML file") from None
    except yaml.constructor.ConstructorError as exc:
        raise PandaError(f"{path}: {exc.problem}; keep one of them") from None
    except yaml.YAMLError as exc:
        raise PandaError(f"{path}: not valid YAML ({exc.__class__.__name__}); fix the syntax") from None
    if not isinstance(data, dict):
        raise PandaError(f"{path}: expected a mapping of sections at the top level")
    for name in data:
        if name not in SECTIONS:
            near = difflib.get_close_matches(str(name), SECTIONS, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"valid sections: {', '.join(SECTIONS)}"
            raise PandaError(f"{path}: unknown section '{name}'; {hint}")
    return data


def _check_type(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def section(
    params: dict[str, Any], name: str, cls: type[T], origin: str = "params.yaml", **overrides: Any
) -> T:
    """Build dataclass `cls` from `params[name]`, applying non-None CLI overrides.

    Unknown keys, missing keys and wrong types raise a PandaError that names `name.key`.
    """
    raw = params.get(name)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise PandaError(f"{origin}: section '{name}' must be a mapping")
    values = dict(raw)
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        near = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f"did you mean '{name}.{near[0]}'?" if near else f"valid keys are: {', '.join(sorted(fields))}"
        raise PandaError(f"{origin}: unknown key '{name}.{unknown[0]}'; {hint}")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        if not _check_type(value, hints[key]):
            raise PandaError(
                f"{origin}: '{name}.{key}' = {value!r} has the wrong type; expected {hints[key]}"
            )
        if hints[key] is float and isinstance(value, int):
            values[key] = float(value)
    missing = [
        f.name
        for f in fields.values()
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PandaError(f"{origin}: missing key '{name}.{missing[0]}'")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj
