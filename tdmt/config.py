"""Recipe configuration: a flat dataclass of defaults, YAML files, then ``key=value`` command-line overrides.

``python recipes/ktm_drl.py config=recipes/configs/ktm_drl_demo.yaml suite=halfcheetah-mt5 seed=3``: the
dataclass gives the paper's defaults, ``config=`` files (applied in order) replace some, and ``key=value``
pairs replace others. Unknown keys and values of the wrong type fail before anything runs, naming the key and
the valid choices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from tdmt.device import resolve_device

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
        if isinstance(value, str) and "," in value:  # logger=csv,tensorboard
            value = [v.strip() for v in value.split(",") if v.strip()]
        elif not isinstance(value, (list, tuple)):
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
        if key not in valid and RENAMED.get(key) in valid:
            raise KeyError(f"config key {key!r} was renamed; use {RENAMED[key]}={value!r}")
        if key not in hints or key not in valid:
            raise KeyError(f"unknown config key {key!r} for {_recipe_label(cfg)}; valid keys: {sorted(valid)}")
        changes[key] = _coerce(key, value, hints[key])
    new = dataclasses.replace(cfg, **changes)
    if validate:
        _validate(new)
    return new


def _recipe_label(cfg: Any) -> str:
    name = getattr(type(cfg), "recipe_name", None)
    return name() if callable(name) else type(cfg).__name__


def _validate(cfg: Any) -> None:
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()


def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each dataclass field, read from the source of ``cls`` and its bases."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = re.match(r"^    ([a-z_][a-z0-9_]*)\s*:[^#]*#\s*(.+)$", line)
            if match:
                comments[match.group(1)] = match.group(2).strip()
    return comments


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice"
    if origin in (tuple, list):
        return "list"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def usage(cls: type) -> str:
    """The ``--help`` text of a recipe: its docstring, then every key with its type, default, valid values and
    what it does (the field's comment)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    doc = cls.__doc__ or ""
    if not doc or doc.startswith(cls.__name__ + "("):  # the dataclass's generated signature: use the module's
        doc = (sys.modules[cls.__module__].__doc__ or cls.__name__).strip().split("\n\n")[0]
    lines = [doc.strip(), "",
             "usage: key=value ... [config=FILE.yaml ...]   (TDMT_DEBUG=1 shows tracebacks)", "", "keys:"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        annotation = hints[f.name]
        if typing.get_origin(annotation) is typing.Literal:
            valid = "one of " + ", ".join(map(str, typing.get_args(annotation)))
        else:
            valid = _range_of(cls, f.name) or ""
        shown = list(default) if isinstance(default, tuple) else default
        head = f"  {f.name}={shown!r}  [{_type_name(annotation)}{'; ' + valid if valid else ''}]"
        lines.append(head + (f"  {comments[f.name]}" if f.name in comments else ""))
    renamed = ", ".join(f"{old}→{new}" for old, new in RENAMED.items())
    lines += ["", f"renamed keys (refused with a hint): {renamed}"]
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


# --- The base config every recipe extends -------------------------------------------------------------------------

# Old key names, refused with the new one (one vocabulary across recipes).
RENAMED: dict[str, str] = {
    "steps": "total_steps",
    "frames_per_task": "total_steps",
    "num_threads": "threads",
    "batch_size": "batch_size_per_task",
    "buffer_size": "buffer_size_per_task",
}

# Valid range of a key, by name: exact names first, then the longest matching suffix. A recipe adds its own in
# ``RANGES``; ``tests/test_config_validation.py`` checks that every numeric key of every recipe has one.
# Forms: "[a, b)", "(a, b]", "[a, b]", "(a, b)", ">= x", "> x", "sizes >= 1" (a tuple of sizes, may be empty),
# "non-empty sizes >= 1", "any" (no constraint, e.g. a signed offset).
KEY_RANGES: dict[str, str] = {
    "seed": ">= 0",
    "gamma": "[0, 1)",
    "tau": "(0, 1]",
    "total_steps": ">= 1",
    "threads": ">= 1",
    "eval_episodes": ">= 1",
    "batch_size_per_task": ">= 1",
    "buffer_size_per_task": ">= 1",
    "policy_delay": ">= 1",
    "t_max": ">= 1",
    "num_envs_per_task": ">= 1",
    "max_grad_norm": "> 0",
    "p_student": "[0, 1]",
    "reward_scale": "> 0",
    "rmsprop_alpha": "[0, 1)",
    "rmsprop_eps": "> 0",
    "lr": "> 0",
    "_lr": "> 0",
    "noise": ">= 0",
    "noise_clip": ">= 0",
    "_steps": ">= 0",
    "_frames": ">= 1",
    "_every": ">= 0",
    "_coeff": ">= 0",
    "hidden": "sizes >= 1",
}


def _range_of(cls: type, name: str) -> str | None:
    own: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        own.update(getattr(klass, "RANGES", {}) or {})
    if name in own:
        return own[name]
    if name in KEY_RANGES:
        return KEY_RANGES[name]
    suffixes = [s for s in KEY_RANGES if s.startswith("_") and name.endswith(s)]
    suffixes += [s for s in ("noise",) if name.endswith(s)]
    return KEY_RANGES[max(suffixes, key=len)] if suffixes else None


def _in_range(value: Any, rule: str) -> bool:
    rule = rule.strip()
    if rule == "any":
        return True
    if rule.endswith("sizes >= 1"):
        if rule.startswith("non-empty") and len(value) == 0:
            return False
        return all(isinstance(v, int) and v >= 1 for v in value)
    if rule[0] in "[(" and rule[-1] in "])":
        low, high = (float(x) for x in rule[1:-1].split(","))
        above = value >= low if rule[0] == "[" else value > low
        below = value <= high if rule[-1] == "]" else value < high
        return bool(above and below)
    op, bound = rule.split()
    return bool(value >= float(bound) if op == ">=" else value > float(bound))


def check_ranges(cfg: Any) -> None:
    """Refuse (one line) any numeric key outside its valid range (see :data:`KEY_RANGES`)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        rule = _range_of(type(cfg), f.name)
        if rule is None or isinstance(value, (bool, str)) or value is None:
            continue
        if not isinstance(value, (int, float, tuple, list)):
            continue
        if isinstance(value, (int, float)) and value != value:  # NaN
            raise ValueError(f"{f.name}=nan is not valid; valid: {rule}")
        if not _in_range(value, rule):
            shown = list(value) if isinstance(value, tuple) else value
            raise ValueError(f"{f.name}={shown!r} is out of range; valid: {rule}")


@dataclasses.dataclass
class BaseConfig:
    """What every recipe shares; a recipe's ``Config`` extends it (and may change the defaults)."""

    suite: str = "halfcheetah-mt8"  # the task suite (``tdmt.envs.list_suites()``)
    seed: int = 0  # seeds torch, the envs and the replay sampling
    run_dir: str = ""  # the run folder; empty: runs/<recipe>/<suite>/<changed keys>seed<seed>-<config hash>
    device: str = "cpu"  # networks, optimisers, replay: cpu, cuda, cuda:N (envs: CPU; GPU sweeps pass cuda)
    precision: Literal["float32", "bfloat16"] = "float32"  # bfloat16: autocast the updates on the device's type
    compile: bool = False  # torch.compile the update (speed only: a test checks it against eager)
    cudagraphs: bool = False  # capture the update as a CUDA graph (device=cuda only; checked against eager)
    threads: int = 1  # torch CPU threads (1 is fastest on a shared 2-core box)
    logger: tuple[str, ...] = ("csv",)  # csv always; add tensorboard, wandb, mlflow (TorchRL loggers)
    eval_every: int = 5000  # env steps per task between evaluations (0: only at the end)
    eval_episodes: int = 10  # episodes per task at each evaluation
    log_every: int = 1000  # env steps per task between metrics rows
    checkpoint_every: int = 50_000  # env steps per task between checkpoints (0: only when stopped)
    progress: bool = True  # a progress bar (a line every 30 s when written to a log file)

    # Keys that may change when a run resumes and do not name the run (where it runs, how it reports).
    FREE_KEYS: ClassVar[tuple[str, ...]] = ("run_dir", "device", "threads", "logger", "log_every",
                                            "checkpoint_every", "progress", "compile", "cudagraphs",
                                            "replay_device")
    # Step budgets: may grow on resume (train further), never shrink; they do not name the run either.
    BUDGET_KEYS: ClassVar[tuple[str, ...]] = ("total_steps",)
    # Device types the recipe can use.
    DEVICES: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    RANGES: ClassVar[dict[str, str]] = {}

    def validate(self) -> None:
        """Ranges of every numeric key, the suite, the device and the loggers; recipes extend it."""
        from tdmt.envs import get_suite
        from tdmt.logger import check_loggers

        check_ranges(self)
        get_suite(self.suite)
        kind = resolve_device(self.device).type
        if kind not in self.DEVICES:
            raise ValueError(f"device={self.device!r} is not supported by this recipe; valid: {list(self.DEVICES)}")
        if self.cudagraphs and kind != "cuda":
            raise ValueError(f"cudagraphs=true with device={self.device!r} is not valid; valid: device=cuda, or "
                             "cudagraphs=false")
        check_loggers(self.logger)

    # -- run identity -----------------------------------------------------------------------------------------

    @classmethod
    def recipe_name(cls) -> str:
        from tdmt.algos import RECIPES

        names = [name for name, module in RECIPES.items() if module == cls.__module__]
        return names[0] if names else cls.__module__.rsplit(".", 1)[-1]

    def identity(self) -> dict[str, Any]:
        """The keys that name the run: everything but :attr:`FREE_KEYS` and :attr:`BUDGET_KEYS`."""
        skip = set(self.FREE_KEYS) | set(self.BUDGET_KEYS)
        return {k: v for k, v in to_dict(self).items() if k not in skip}

    def config_hash(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def resolved_run_dir(self) -> str:
        """``run_dir``, or ``runs/<recipe>/<suite>/<changed keys>seed<seed>-<hash>``: two configurations that
        train differently never share a default folder (the hash covers every key that names the run)."""
        if self.run_dir:
            return self.run_dir
        default = type(self)().identity()
        own = set(vars(type(self)).get("__annotations__", {}))  # the recipe's own switches (ablations) first
        changed = [f"{k}={_short(v)}" for k, v in sorted(self.identity().items(), key=lambda kv: kv[0] not in own)
                   if k not in ("suite", "seed") and v != default.get(k) and not _is_path(v)]
        label = ",".join(changed)
        label = (label[:60] + "…") if len(label) > 61 else label
        label = re.sub(r"[^A-Za-z0-9=,.+\-_…]", "", label)
        name = f"{label}-seed{self.seed}-{self.config_hash()}" if label else f"seed{self.seed}-{self.config_hash()}"
        return str(Path("runs") / self.recipe_name() / self.suite / name)


def _is_path(value: Any) -> bool:
    """A folder or file a run reads (teachers, a model): it names the run through the hash, not the label."""
    return isinstance(value, str) and ("/" in value or value.endswith((".pt", ".yaml")))


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value) or "none"
    return str(value)


# Keys a budget factor shrinks (``tdmt sweep … scale=0.01``): step budgets and cadences, evaluation episodes and
# replay sizes, so that a smoke run of a whole pipeline does every kind of work at a tiny size.
_SCALED = re.compile(r"(^|_)steps$|_frames$|_every$|^learning_starts$|_episodes$|^buffer_size_per_task$")


def scale_budgets(cfg: T, factor: float) -> T:
    """A copy of ``cfg`` with every budget-like integer key times ``factor`` (at least 1 where it was >= 1;
    0 stays 0: "never"/"none"). Cadences (``*_every``) are kept at half the largest scaled budget or more, so a
    smoke run evaluates and checkpoints a couple of times, not at every one of its few steps."""
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not _SCALED.search(f.name) or isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            continue
        changes[f.name] = max(1, math.ceil(value * factor) if f.name.endswith("_episodes") else int(value * factor))
    budget = max([v for k, v in changes.items() if k.endswith("_steps") or k.endswith("_frames")], default=0)
    for key in [k for k in changes if k.endswith("_every")]:
        changes[key] = max(changes[key], math.ceil(budget / 2))
    return apply_overrides(cfg, changes)
