"""One loader for every config of the project: typed dataclasses that validate themselves.

Restore jobs (`pipeline.execution.config.RestoreConfig`) and training jobs (`pipeline.training.config`)
load the same way: dataclass defaults ← layers (e.g. a preset, as dotted keys) ← a YAML file
← `a.b=value` overrides ← CLI flags. Unknown keys and wrongly typed values are refused with
the dotted path; then every section's own `validate()` runs (innermost first, the root
last, for cross-field rules). Nothing is silently ignored: an option either acts or fails
here, before any model or data is touched.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Iterable

import fsspec
import yaml


def coerce(value, hint, path: str):
    """Check (and gently convert) a YAML value against a field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, path)
            except ValueError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ValueError(
            f"config {path}: expected {' | '.join(getattr(a, '__name__', str(a)) for a in args)}, got {value!r}")
    if hint is Any:
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)   # YAML reads "1e-4" as a string
        except ValueError:
            pass
    if hint is str and isinstance(value, str):
        return value
    if origin is list and isinstance(value, (list, tuple)):
        return [coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return dict(value)
    raise ValueError(f"config {path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def build(cls, data: dict, path: str = ""):
    """A dataclass from a mapping: unknown keys refused, every value type-checked, nested
    sections built and validated."""
    if not isinstance(data, dict):
        raise ValueError(f"config {path or 'root'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config {path or 'root'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}".lstrip(".")
        hint = hints[name]
        kwargs[name] = build(hint, value, where) if dataclasses.is_dataclass(hint) else coerce(value, hint, where)
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def parse_override(text: str) -> tuple[str, Any]:
    """`solver.params.step_size=2.0` → ('solver.params.step_size', 2.0); values parse as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    return dotted.strip(), yaml.safe_load(raw)


def set_dotted(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if k not in node:
            node[k] = {}  # unknown sections are refused by `build`, with the known ones listed
        if not isinstance(node[k], dict):
            raise ValueError(f"config override {dotted}: {k!r} is not a section")
        node = node[k]
    node[keys[-1]] = value


def flatten(d: dict, whole: tuple[str, ...] = (), prefix: str = "") -> dict:
    """{'a.b': value}: the dotted view of a config dict (mappings named in `whole` stay values)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(flatten(v, whole, key + ".") if isinstance(v, dict) and k not in whole else {key: v})
    return out


def merge(base: dict, update: dict, whole: tuple[str, ...] = ()) -> None:
    """Deep-merge `update` into `base`; mappings named in `whole` (free-form dicts such as a
    solver's params) are merged one level, not recursed into."""
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in whole:
            merge(base[k], v, whole)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v


def load(cls, path: str | None = None, overrides: Iterable[str] = (), layers: Iterable[dict] = (),
         flags: dict[str, Any] | None = None, whole: tuple[str, ...] = ()):
    """Defaults ← layers ({dotted: value}) ← YAML file ← overrides ← flags (None = unset) → validated `cls`."""
    data = dataclasses.asdict(cls())
    for layer in layers:
        for dotted, value in layer.items():
            set_dotted(data, dotted, value)
    if path:
        with fsspec.open(path, "r") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top level")
        merge(data, loaded, whole)
    for text in overrides:
        dotted, value = parse_override(text)
        node = {}
        set_dotted(node, dotted, value)
        merge(data, node, whole)
    for dotted, value in (flags or {}).items():
        if value is not None:
            set_dotted(data, dotted, value)
    return build(cls, data)


def save(cfg, url: str) -> None:
    """The resolved config as YAML (what a rerun with `--config` reproduces)."""
    with fsspec.open(url, "w") as fh:
        yaml.safe_dump(dataclasses.asdict(cfg), fh, sort_keys=False)
