"""One training loop per method. Each module ``tdmt.algos.<name>`` exposes ``Config`` (a dataclass with the
paper's defaults and a ``run_dir`` field) and ``run(cfg) -> dict`` (trains, resumes from ``run_dir`` if it holds
checkpoints, writes results, returns the summary). Recipes and the sweep launcher find them by name here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from tdmt.errors import cli_errors

RECIPES: dict[str, str] = {
    "train_teachers": "tdmt.algos.teachers",
    "ktm_drl": "tdmt.algos.ktm_drl",
    "td3_mt": "tdmt.algos.td3_mt",
    "sac_mt": "tdmt.algos.sac_mt",
    "ctpg": "tdmt.algos.ctpg",
    "a2c_multitask": "tdmt.algos.a2c_multitask",
    "distill_kl": "tdmt.algos.distill_kl",
    "finetune": "tdmt.algos.finetune",
}


def get_recipe(name: str) -> ModuleType:
    """The module of recipe ``name`` (with ``Config`` and ``run``): a registry name, or a dotted module path
    (``"pkg.module"``, e.g. a recipe of your own or ``tests.toy_recipe``)."""
    if name not in RECIPES and "." not in name:
        raise ValueError(f"unknown recipe {name!r}; valid: {sorted(RECIPES)} or a dotted module path")
    path = RECIPES.get(name, name)
    try:
        module = importlib.import_module(path)
    except ImportError as e:
        raise ValueError(f"recipe {name!r}: module {path!r} cannot be imported ({e})") from e
    missing = [attr for attr in ("Config", "run") if not hasattr(module, attr)]
    if missing:
        raise ValueError(f"recipe {name!r}: module {path!r} has no {missing} (a recipe exposes Config and run)")
    return module


def recipe_main(name: str, argv: Sequence[str] | None = None) -> None:
    """A recipe script's body: parse ``key=value`` arguments, then train. User errors print one line and exit 2;
    a stop (Ctrl-C, SIGTERM) prints the step it stopped at and exits 128 + the signal (see ``tdmt.errors``)."""
    with cli_errors(name):
        module = get_recipe(name)
        from tdmt.config import parse_args

        module.run(parse_args(module.Config, sys.argv[1:] if argv is None else argv))
