"""Typed configs from YAML: nested dataclasses, `--set a.b=value` overrides, validation at the edge.

Every config value has a dataclass field with a type and a default; `build_config` turns a nested dict
into those dataclasses, coercing YAML scalars to the field's type (an enum field, e.g. `DeviceChoice`,
gets its member) and refusing unknown keys by name, so a typo in a YAML file or a `--set` fails at once
with exit code 2 instead of being silently ignored.

The one validation style for configs: a typed dataclass whose `validate()` checks what types cannot
(ranges, relations between fields) as a list of (condition, message) pairs handed to `check_params`, which
raises one BadInput listing every failed check, each naming its key with the section prefix
(`gems.lr must be ...`). `build_config` calls `validate()` once, at the edge, and the library takes the
built object as it is; library entry points that also take configs from Python callers (`train_gems`,
`train_mf`, `generate_logged_data`) call it once more at their start. No config validates in
`__post_init__`, so every problem of a config is reported at once, not the first one alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml

from slatectl.errors import BadInput

T = TypeVar("T")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last_error = None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except BadInput as exc:
                last_error = exc
        raise last_error or BadInput(f"config key {where!r}: cannot use {value!r}.")
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        if isinstance(value, annotation):
            return value
        try:
            return annotation(value)
        except ValueError:
            raise BadInput(f"config key {where!r} must be one of {', '.join(str(m.value) for m in annotation)}, "
                           f"got {value!r}.") from None
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise BadInput(f"config key {where!r} must be a mapping, got {value!r}.")
        return build_config(annotation, value, prefix=where + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BadInput(f"config key {where!r} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())
                                           or (isinstance(value, str) and value.strip().lstrip("-").isdigit())):
            raise BadInput(f"config key {where!r} must be an integer, got {value!r}.")
        return _check_int_range(int(value), where)
    if annotation is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"config key {where!r} must be a number, got {value!r}.") from None
        return _check_float_range(number, where)
    if annotation is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise BadInput(f"config key {where!r} must be a string, got {value!r}.")
        return str(value)
    return value


# Every integer is stored in the registry as a signed 64-bit value; seeds also feed generators that
# refuse negatives. Learning rates must be positive and every float finite (NaN/inf would train nothing).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _last_key(where: str) -> str:
    return where.rsplit(".", 1)[-1].split("[", 1)[0]


def _check_int_range(value: int, where: str) -> int:
    key = _last_key(where)
    low = 0 if key == "seed" or key.endswith("_seed") else INT64_MIN
    if not low <= value <= INT64_MAX:
        raise BadInput(f"config key {where!r} must lie in [{low}, 2^63), got {value}.")
    return value


def _check_float_range(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise BadInput(f"config key {where!r} must be a finite number, got {value}.")
    key = _last_key(where)
    if (key == "lr" or key.endswith("_lr")) and value <= 0:
        raise BadInput(f"config key {where!r} is a learning rate and must be > 0, got {value}.")
    return value


def build_config(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Instantiate dataclass `cls` from a (nested) dict; unknown keys and wrong types raise BadInput."""
    data = data or {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInput(f"unknown config key{'s' if len(unknown) > 1 else ''} "
                       f"{', '.join(prefix + k for k in unknown)}. Known keys here: {', '.join(prefix + k for k in sorted(known))}.")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in data.items()}
    try:
        instance = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise BadInput(f"invalid config{' ' + prefix.rstrip('.') if prefix else ''}: {exc}.") from None
    check = getattr(instance, "validate", None)
    if callable(check):
        check()
    return instance


def check_params(section: str, checks: Iterable[tuple[bool, str]]) -> None:
    """Raise one BadInput listing every failed (condition, message) pair of config section `section`
    (every config's `validate()` ends here, so a config with several bad keys reports all of them)."""
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise BadInput(f"invalid {section} config: " + "; ".join(problems) + ".")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (value parsed as YAML) to a nested dict, returning a new dict."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise BadInput(f"--set expects key=value, got {item!r} (example: --set training.random_steps=100).")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise BadInput(f"--set {item!r} names no key.")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise BadInput(f"--set {item!r}: {part!r} is a value, not a section.")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return result


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of `update` into a copy of `base` (for --config FILE on top of the defaults)."""
    result = json.loads(json.dumps(base))
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BadInput(f"config file {str(path)!r} must hold a mapping at the top level.")
    return data
