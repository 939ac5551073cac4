"""Recipe configuration: a flat dataclass of defaults, YAML files, then ``key=value`` command-line overrides.

``python recipes/ktm_drl.py config=recipes/configs/ktm_drl_demo.yaml suite=halfcheetah-mt5 seed=3``: the
dataclass gives the paper's defaults, ``config=`` files (applied in order) replace some, and ``key=value``
pairs replace others. Unknown keys and values of the wrong type fail before anything runs, naming the key and
the valid choices.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check (and gently convert) ``value`` against a dataclass field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(name, value, opt)
            except (TypeError, ValueError) as e:
                errors.append(str(e))
        raise TypeError(f"{name}={value!r} does not match {annotation}: {'; '.join(errors)}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not a valid choice; valid: {list(choices)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        items = [_coerce(name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            raise TypeError(f"{name}={value!r} should be of type float") from None
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, annotation) or (annotation is int and isinstance(value, bool)):
        raise TypeError(f"{name}={value!r} should be of type {annotation.__name__}")
    return value


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text) if text != "" else ""


def apply_overrides(cfg: T, values: dict[str, Any], validate: bool = True) -> T:
    """A copy of the dataclass ``cfg`` with ``values`` replaced, each checked against its field's type.

    With ``validate``, the dataclass's optional ``validate()`` method checks the result.
    """
    hints = typing.get_type_hints(type(cfg))
    valid = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in values.items():
        if key not in hints or key not in valid:
            raise KeyError(f"unknown config key {key!r} for {type(cfg).__name__}; valid keys: {sorted(valid)}")
        changes[key] = _coerce(key, value, hints[key])
    new = dataclasses.replace(cfg, **changes)
    if validate:
        _validate(new)
    return new


def _validate(cfg: Any) -> None:
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def usage(cls: type) -> str:
    """The ``--help`` text of a recipe: its docstring and every key with its default."""
    lines = [(cls.__doc__ or cls.__name__).strip(), "", "usage: key=value ... [config=FILE.yaml ...]", "", "keys:"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        lines.append(f"  {f.name}={default!r}")
    return "\n".join(lines)


def parse_args(cls: type[T], argv: Sequence[str]) -> T:
    """Build ``cls()`` then apply ``config=FILE`` files and ``key=value`` pairs from ``argv`` in order.

    ``-h``/``--help`` prints :func:`usage` and exits.
    """
    if any(arg in ("-h", "--help") for arg in argv):
        print(usage(cls))
        raise SystemExit(0)
    cfg = cls()
    for arg in argv:
        if "=" not in arg:
            raise ValueError(f"arguments are key=value pairs, got {arg!r}")
        key, text = arg.split("=", 1)
        if key == "config":
            cfg = apply_overrides(cfg, load_yaml(text), validate=False)
        else:
            cfg = apply_overrides(cfg, {key: _parse_value(text)}, validate=False)
    _validate(cfg)  # once, on the final config: a check may relate several keys
    return cfg


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of key: value")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass (tuples as lists, ready for YAML)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_yaml(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config next to a run's results (atomically)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)
